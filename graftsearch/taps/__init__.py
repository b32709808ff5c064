"""Stage 1, taps: the candidate layers of any network, as data, with the exact cost of each prefix.

A :class:`TapList` describes the taps of one network at one image size (channels, spatial size,
parameters and multiply-accumulates of the prefix up to the tap); a selection of taps plus a
:class:`HeadSpec` has an exact :class:`Cost` before anything is trained."""

from graftsearch.taps._records import Cost, Tap, TapList
from graftsearch.taps._discovery import discover_taps
from graftsearch.taps._head import HeadSpec

__all__ = ['Cost', 'Tap', 'TapList', 'discover_taps', 'HeadSpec']
