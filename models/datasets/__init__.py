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
from models.datasets.inspect import inspect_upload
from models.datasets.limits import RESERVED_CONDITION_NAMES, DataLimits
from models.datasets.loader import load_dataset
from models.datasets.uri import DatasetURI, InvalidURI, parse_dataset_uri

__all__ = [
    "BUILTINS",
    "CONDITIONAL_RING_RADIUS",
    "CONDITIONAL_RING_STD",
    "FORMATS",
    "MIN_ROWS",
    "RESERVED_CONDITION_NAMES",
    "DataError",
    "DataLimits",
    "Dataset",
    "DatasetURI",
    "InvalidURI",
    "conditional_ring_centre",
    "inspect_upload",
    "load_dataset",
    "parse_dataset_uri",
    "sniff_format",
]
