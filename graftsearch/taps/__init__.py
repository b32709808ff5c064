"""Stage 1, taps: the candidate layers of any network, as data, with the exact cost of each prefix.

A :class:`TapList` describes the taps of one network at one image size (channels, spatial size,
parameters and multiply-accumulates of the prefix up to the tap); a selection of taps plus a
:class:`HeadSpec` has an exact :class:`Cost` before anything is trained."""

from graftsearch._utils.lazy import lazy_exports as _lazy_exports

# Each name is imported from its module on first use (graftsearch._utils.lazy).
__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "graftsearch.taps._records": ("Cost", "Tap", "TapList"),
    "graftsearch.taps._discovery": ("discover_taps",),
    "graftsearch.taps._head": ("HeadSpec",),
})
