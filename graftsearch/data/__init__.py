"""Stage 3, data: image sources (DeepWeeds, image folders, CSV listings), their splits, loaders and
the DeepWeeds download."""

from graftsearch.data._spec import DataSpec
from graftsearch.data._sources import ImageDataset, load_dataset
from graftsearch.data._loading import make_loader
from graftsearch.data._download import download_deepweeds

__all__ = ['DataSpec', 'ImageDataset', 'load_dataset', 'make_loader', 'download_deepweeds']
