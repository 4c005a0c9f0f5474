"""`load_dataset`: from a DatasetSpec's URI to a Table, by scheme, then to a Dataset."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from models.datasets.assemble import assemble
from models.datasets.base import DataError, Dataset
from models.datasets.builtin import builtin_table
from models.datasets.files import format_of, open_file, resolve_file_uri, sniff_format
from models.datasets.limits import DataLimits
from models.datasets.remote import fetch
from models.datasets.uri import REMOTE_SCHEMES, parse_dataset_uri
from models.spec import DatasetSpec


def _upload(dataset_id: str, resolver: Callable[[str], Path] | None) -> Path:
    if resolver is None:
        raise DataError(f"dataset://{dataset_id}: uploads cannot be resolved here")
    try:
        path = Path(resolver(dataset_id))
    except DataError:
        raise
    except (LookupError, OSError, ValueError) as e:
        raise DataError(f"no uploaded data set {dataset_id!r}: {e}") from e
    if not path.is_file():
        raise DataError(f"the file of uploaded data set {dataset_id!r} is missing")
    return path


def load_dataset(
    spec: DatasetSpec,
    *,
    data_roots: Sequence[Path],
    upload_resolver: Callable[[str], Path] | None = None,
    allowed_hosts: Sequence[str] | None = None,
    limits: DataLimits | None = None,
) -> Dataset:
    """Load and validate the data set `spec` describes; DataError for any problem with it.

    - builtin://NAME: see models.datasets.builtin (`conditional-ring` always has its `angle`
      condition; `digits` takes `conditions: ["digit"]` for its one-hot labels).
    - file:///abs/path: must lie under one of `data_roots` after resolving `..` and symlinks;
      format by extension (.csv, .parquet/.pq, .npy, .npz, .h5/.hdf5, .root), else by content.
    - dataset://ID (a UUID): `upload_resolver(ID)` gives the file; format by content only.
    - http(s)://, s3://: host (bucket) must be in `allowed_hosts` (None: none allowed);
      downloaded to a temporary file, then read like a local one.

    The URI is parsed by models.datasets.uri, as the API parses it. `limits` (default
    DataLimits()) bound the columns, names and cells, checked before the data is read.

    Roles: `features` None means every column that is neither a condition nor the weight.
    Weights are returned raw (sWeights may be negative). `max_rows` keeps the first rows.
    """
    limits = limits or DataLimits()
    uri = parse_dataset_uri(spec.uri)
    if uri.scheme == "builtin":
        return assemble(builtin_table(str(uri.name)), spec, limits)
    if uri.scheme == "file":
        path = resolve_file_uri(str(uri.path), data_roots)
        return assemble(open_file(path, format_of(path), spec.table, limits=limits), spec,
                        limits)
    if uri.scheme == "dataset":
        path = _upload(str(uri.upload_id), upload_resolver)
        fmt = sniff_format(path, limits, label=uri.raw)
        return assemble(open_file(path, fmt, spec.table, label=uri.raw, limits=limits), spec,
                        limits)
    if uri.scheme in REMOTE_SCHEMES:
        # Everything is read into memory before the temporary folder goes.
        with tempfile.TemporaryDirectory(prefix="gan-data-") as folder:
            path = fetch(uri, allowed_hosts, Path(folder))
            table = open_file(path, format_of(path), spec.table, label=uri.raw, limits=limits)
            return assemble(table, spec, limits)
    raise DataError(f"unsupported URI scheme {uri.scheme!r} in {uri.raw!r}")
