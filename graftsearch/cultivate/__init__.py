"""Stage 4, cultivation (the paper's step 1): fine-tune the donor on the train split before grafting."""

from graftsearch._utils.lazy import lazy_exports as _lazy_exports

# Each name is imported from its module on first use (graftsearch._utils.lazy).
__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "graftsearch.cultivate._settings": ("CultivateSettings",),
    "graftsearch.cultivate._cultivate": ("Cultivation", "cultivate_donor"),
})
