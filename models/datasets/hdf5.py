"""HDF5 files: a 2-D or compound dataset, or a group whose 1-D datasets are the columns.

An HDF5 file can make its reader open other files: a dataset's *external storage* (raw data
in any file the worker can read, /etc/passwd say), a *virtual dataset* (data mapped from
other HDF5 files), an *external link* (an object of another file: another owner's upload),
and soft links to any of these. And a dataset may need a *filter* that HDF5 loads as a
plugin (a shared library). So before anything is read, `walk` visits every object through
hard links only (iterating a group lists names without following links; each link's type
is read with `H5Lget_info`) and refuses all of the above. Only then are objects opened by
name, and every name then leads through hard links.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from models.datasets.base import DataError, Table, reading, shown
from models.datasets.limits import DataLimits, check_columns, one_table_usable
from models.datasets.uri import clip

# The filters built into HDF5 and h5py (LZF). Any other id is a plugin: refused.
TRUSTED_FILTERS = {
    h5py.h5z.FILTER_DEFLATE: "gzip",
    h5py.h5z.FILTER_SHUFFLE: "shuffle",
    h5py.h5z.FILTER_FLETCHER32: "fletcher32",
    h5py.h5z.FILTER_SZIP: "szip",
    h5py.h5z.FILTER_NBIT: "nbit",
    h5py.h5z.FILTER_SCALEOFFSET: "scaleoffset",
    h5py.h5z.FILTER_LZF: "lzf",
}
_LINK_KINDS = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL:
               "an external link (to an object of another file)"}


@dataclass
class Contents:
    """The objects of a checked file, by path without the leading slash ("" is the root)."""

    datasets: dict[str, h5py.Dataset] = field(default_factory=dict)
    groups: dict[str, h5py.Group] = field(default_factory=dict)


def _check_dataset(ds: h5py.Dataset, path: str, label: str, limits: DataLimits) -> None:
    where = f"dataset {clip('/' + path)} of {label}"
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        raise DataError(f"{where} is a virtual dataset: its data would be read from other "
                        "files; such files are refused")
    if dcpl.get_external_count():
        raise DataError(f"{where} keeps its data in external files (HDF5 external storage), "
                        "which would be read from the worker's disk; such files are refused")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in TRUSTED_FILTERS:
            raise DataError(f"{where} needs HDF5 filter {code}, a plugin; only "
                            f"{', '.join(TRUSTED_FILTERS.values())} are read")
    kind = ds.id.get_type()
    # Counted before h5py turns the type into a numpy dtype (slow for a million fields).
    if isinstance(kind, h5py.h5t.TypeCompoundID) and kind.get_nmembers() > limits.max_columns:
        raise DataError(f"{where} has {kind.get_nmembers()} fields; at most "
                        f"{limits.max_columns} columns are allowed (MAX_COLUMNS)")


def _hard_link(group: h5py.Group, name: str, path: str, label: str) -> None:
    kind = group.id.links.get_info(name.encode()).type
    if kind != h5py.h5l.TYPE_HARD:
        what = _LINK_KINDS.get(kind, f"a user-defined link (type {kind})")
        raise DataError(f"{clip('/' + path)} in {label} is {what}; links that are not hard "
                        "links are refused (they can lead to other files)")


def walk(f: h5py.File, label: str, limits: DataLimits) -> Contents:
    """Every group and dataset of `f`, reached through hard links only; DataError for any
    other link, external or virtual storage, an untrusted filter, or too many objects."""
    contents = Contents(groups={"": f})
    seen = {h5py.h5o.get_info(f.id).addr}
    pending: list[tuple[str, h5py.Group]] = [("", f)]
    while pending:
        prefix, group = pending.pop()
        if len(seen) + len(group) > limits.max_file_objects:  # len: a count, nothing listed
            raise DataError(f"{label} holds more than {limits.max_file_objects} HDF5 objects "
                            "(MAX_FILE_OBJECTS)")
        for name in group:  # names only: iterating follows no link
            path = f"{prefix}/{name}" if prefix else name
            _hard_link(group, name, path, label)
            obj = group[name]
            addr = h5py.h5o.get_info(obj.id).addr
            if addr in seen:  # the same object under a second hard link (or a cycle)
                continue
            seen.add(addr)
            if isinstance(obj, h5py.Group):
                contents.groups[path] = obj
                pending.append((path, obj))
            elif isinstance(obj, h5py.Dataset):
                _check_dataset(obj, path, label, limits)
                contents.datasets[path] = obj
    return contents


def open_checked(path: Path) -> h5py.File:
    # sec2 explicitly: never a driver chosen from the environment (family, multi: those
    # open further files next to this one).
    return h5py.File(path, "r", driver="sec2")


def _group_columns(group: h5py.Group, label: str, contents: Contents) -> list[str]:
    prefix = group.name.strip("/")
    columns = []
    for name in group:
        ds = contents.datasets.get(f"{prefix}/{name}" if prefix else name)
        if ds is not None and ds.ndim == 1:
            columns.append(name)
    lengths = {group[c].shape[0] for c in columns}
    if len(lengths) > 1:
        raise DataError(f"{label}: the 1-D datasets of group {group.name!r} differ in length "
                        f"({sorted(lengths)}); they cannot be the columns of one table")
    return columns


def _dataset_columns(ds: h5py.Dataset, label: str, limits: DataLimits) -> list[str]:
    if ds.dtype.names:
        return list(ds.dtype.names)
    if ds.ndim == 2:
        if ds.shape[1] > limits.max_columns:  # before making a million names
            raise DataError(f"{label}: dataset {ds.name!r} has {ds.shape[1]} columns; at most "
                            f"{limits.max_columns} are allowed (MAX_COLUMNS)")
        return [f"col{i}" for i in range(ds.shape[1])]
    if ds.ndim == 1:
        return ["col0"]
    raise DataError(f"{label}: dataset {ds.name!r} has shape {ds.shape}; expected a 2-D array "
                    "[rows, columns] or a compound dataset")


def _read_dataset(ds: h5py.Dataset, names: Sequence[str], rows: slice) -> dict[str, np.ndarray]:
    if ds.dtype.names:  # read only the fields asked for
        data = np.asarray(ds.fields(list(names))[rows])
        if data.dtype.names:
            return {n: np.asarray(data[n]) for n in names}
        return {names[0]: data}
    if ds.ndim == 1:
        return {"col0": np.asarray(ds[rows])}
    # Only the columns asked for: a hyperslab selection (increasing indices, as h5py needs).
    wanted = sorted({int(n[3:]) for n in names})
    data = np.asarray(ds[rows] if len(wanted) == ds.shape[1] else ds[rows, wanted])
    at = {c: i for i, c in enumerate(wanted)}
    return {n: data[:, at[int(n[3:])]] for n in names}


def _table_key(table: str | None, contents: Contents, label: str) -> str:
    if table is not None:
        key = table.strip("/")
        if key not in contents.datasets and key not in contents.groups:
            raise DataError(f"{label} holds no dataset or group {clip(table)}; datasets: "
                            f"{shown(list(contents.datasets)) or '(none)'}")
        return key
    found = list(contents.datasets)
    return found[0] if len(found) == 1 else ""


def _dataset_table(ds: h5py.Dataset, key: str, label: str, limits: DataLimits) -> None:
    check_columns(_dataset_columns(ds, f"{label}: /{key}", limits),
                  f"dataset {clip('/' + key)} of {label}", limits)


def _group_table(group: h5py.Group, key: str, label: str, contents: Contents,
                 limits: DataLimits) -> None:
    columns = _group_columns(group, label, contents)
    if not columns:
        raise DataError(f"{label}: no 1-D datasets in group {clip('/' + key)}")
    check_columns(columns, f"group {clip('/' + key)} of {label}", limits)


def inspect_hdf5(path: Path, label: str, limits: DataLimits) -> None:
    """The upload-time check: the whole file's structure (walk), then one of its tables (a
    dataset, or a group of 1-D datasets) must be usable."""
    with reading(label, "hdf5"), open_checked(path) as f:
        contents = walk(f, label, limits)
        checks: list[Callable[[], object]] = [
            partial(_dataset_table, ds, key, label, limits)
            for key, ds in contents.datasets.items()]
        checks += [partial(_group_table, group, key, label, contents, limits)
                   for key, group in contents.groups.items()]
        one_table_usable(checks, label)


def hdf5_table(path: Path, table: str | None, label: str,
               limits: DataLimits | None = None) -> Table:
    """`table` names a dataset or a group. Without it: the file's only dataset, else the root
    group's 1-D datasets as columns."""
    limits = limits or DataLimits()
    with open_checked(path) as f:
        contents = walk(f, label, limits)
        key = _table_key(table, contents, label)
        grouped = key in contents.groups
        if grouped:
            group = contents.groups[key]
            columns = _group_columns(group, label, contents)
            if not columns:
                raise DataError(f"{label}: no 1-D datasets in group {group.name!r}; set "
                                "dataset.table to one of the datasets: "
                                f"{shown(list(contents.datasets)) or '(none)'}")
            n_rows = int(group[columns[0]].shape[0])
        else:
            ds = contents.datasets[key]
            columns = _dataset_columns(ds, label, limits)
            n_rows = int(ds.shape[0])

    def read(names: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
        rows = slice(None, max_rows)
        with reading(label, "hdf5"), open_checked(path) as f:
            walk(f, label, limits)  # the file is opened afresh: checked afresh
            obj = f[key] if key else f
            if grouped:
                return {n: np.asarray(obj[n][rows]) for n in names}
            return _read_dataset(obj, names, rows)

    return Table(label=label, columns=columns, read=read, n_rows=n_rows)
