"""Stage 3, data: image sources (DeepWeeds, image folders, CSV listings), their splits, loaders and
the DeepWeeds download."""

from graftsearch._utils.lazy import lazy_exports as _lazy_exports

# Each name is imported from its module on first use (graftsearch._utils.lazy).
__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "graftsearch.data._spec": ("DataSpec",),
    "graftsearch.data._sources": ("ImageDataset", "load_dataset"),
    "graftsearch.data._loading": ("make_loader",),
    "graftsearch.data._download": ("download_deepweeds",),
})
