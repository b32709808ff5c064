"""Stage 2, donors: load a pretrained network (torchvision, EfficientNet-Lite0, the paper's VGG16, a
checkpoint) as a :class:`Donor` with its preprocessing and taps."""

from graftsearch.donors._spec import Donor, DonorSpec
from graftsearch.donors._zoo import PaperDonor, donor_names, load_donor
from graftsearch.donors._checkpoints import save_donor_checkpoint
from graftsearch.donors._preprocessing import Normalize, Preprocessing

__all__ = ['Donor', 'DonorSpec', 'PaperDonor', 'donor_names', 'load_donor', 'save_donor_checkpoint', 'Normalize', 'Preprocessing']
