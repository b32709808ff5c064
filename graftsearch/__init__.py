"""graftsearch: knowledge grafting with a constraint-handling genetic search.

Pick which layers of a large pretrained donor to tap, pool and graft onto a small head, found by
NSGA-II over cached features. See the README for the command line and the Python API.
"""

from ._donors import Donor, DonorSpec, PaperDonor, donor_names, load_donor, save_donor_checkpoint
from ._errors import (CacheError, CheckpointError, DataError, DonorError, ExportError,
                      FitnessError, GraftSearchError, ParameterError, SearchError, SelectionError,
                      TapError)
from ._graft import GraftedModel
from ._head import HeadSpec
from ._preprocessing import Normalize, Preprocessing
from ._progress import Progress, ProgressCallback
from ._taps import Cost, Tap, TapList, discover_taps
from ._version import __version__

__all__ = [
    "__version__",
    # donors and taps
    "Donor", "DonorSpec", "PaperDonor", "donor_names", "load_donor", "save_donor_checkpoint",
    "Tap", "TapList", "Cost", "discover_taps", "HeadSpec", "GraftedModel",
    "Preprocessing", "Normalize",
    # progress
    "Progress", "ProgressCallback",
    # errors
    "GraftSearchError", "ParameterError", "DonorError", "CheckpointError", "TapError",
    "SelectionError", "DataError", "CacheError", "FitnessError", "SearchError", "ExportError",
]
