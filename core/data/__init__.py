"""Datasets (`load_data`) and the tensor fast-path loader (`TensorLoader`)."""

from core.data.datasets import DataSplits, ImageSet, carve_search_split, load_data, load_data_for
from core.data.loader import TRAIN_AUGMENT, Augment, TensorLoader, augment_batch

__all__ = [
    "Augment",
    "DataSplits",
    "ImageSet",
    "TRAIN_AUGMENT",
    "TensorLoader",
    "augment_batch",
    "carve_search_split",
    "load_data",
    "load_data_for",
]
