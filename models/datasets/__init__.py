"""Data sets: from a DatasetSpec to validated float32 arrays (docs/internals.md).

Torch-free; the readers (pandas, pyarrow, h5py, uproot, fsspec, scikit-learn) are imported
only when a data set needs them, so the API can import this package cheaply.
"""

from models.datasets.base import MIN_ROWS, DataError, Dataset
from models.datasets.builtin import (
    BUILTINS,
    CONDITIONAL_RING_RADIUS,
    CONDITIONAL_RING_STD,
    conditional_ring_centre,
)
from models.datasets.files import FORMATS, sniff_format
from models.datasets.loader import load_dataset

__all__ = [
    "BUILTINS",
    "CONDITIONAL_RING_RADIUS",
    "CONDITIONAL_RING_STD",
    "FORMATS",
    "MIN_ROWS",
    "DataError",
    "Dataset",
    "conditional_ring_centre",
    "load_dataset",
    "sniff_format",
]
