"""Stage 2, donors: load a pretrained network (torchvision, EfficientNet-Lite0, the paper's VGG16, a
checkpoint) as a :class:`Donor` with its preprocessing and taps."""

from graftsearch._utils.lazy import lazy_exports as _lazy_exports

# Each name is imported from its module on first use (graftsearch._utils.lazy).
__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "graftsearch.donors._donor": ("Donor",),
    "graftsearch.donors._spec": ("DonorSpec",),
    "graftsearch.donors._zoo": ("PaperDonor", "donor_names", "load_donor"),
    "graftsearch.donors._checkpoints": ("save_donor_checkpoint",),
    "graftsearch.donors._preprocessing": ("Preprocessing",),
    "graftsearch.donors._normalize": ("Normalize",),
})
