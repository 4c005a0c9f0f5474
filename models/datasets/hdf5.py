"""HDF5 files: a 2-D or compound dataset, or a group whose 1-D datasets are the columns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from models.datasets.base import DataError, Table, shown
from models.datasets.files import reading


def _datasets(f: h5py.Group) -> list[str]:
    found: list[str] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            found.append(name)

    f.visititems(visit)
    return found


def _group_columns(group: h5py.Group, label: str) -> list[str]:
    columns = [k for k, v in group.items() if isinstance(v, h5py.Dataset) and v.ndim == 1]
    lengths = {group[c].shape[0] for c in columns}
    if len(lengths) > 1:
        raise DataError(f"{label}: the 1-D datasets of group {group.name!r} differ in length "
                        f"({sorted(lengths)}); they cannot be the columns of one table")
    return columns


def _dataset_columns(ds: h5py.Dataset, label: str) -> list[str]:
    if ds.dtype.names:
        return list(ds.dtype.names)
    if ds.ndim == 2:
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
    data = np.asarray(ds[rows])
    if data.ndim == 1:
        return {"col0": data}
    return {n: data[:, int(n[3:])] for n in names}


def hdf5_table(path: Path, table: str | None, label: str) -> Table:
    """`table` names a dataset or a group. Without it: the file's only dataset, else the root
    group's 1-D datasets as columns."""
    with h5py.File(path, "r") as f:
        if table is not None:
            if table not in f:
                raise DataError(f"{label} holds no dataset or group {table!r}; datasets: "
                                f"{shown(_datasets(f)) or '(none)'}")
            key = table
        else:
            found = _datasets(f)
            key = found[0] if len(found) == 1 else "/"
        obj = f[key]
        grouped = isinstance(obj, h5py.Group)
        if grouped:
            columns = _group_columns(obj, label)
            if not columns:
                raise DataError(f"{label}: no 1-D datasets in group {obj.name!r}; set "
                                "dataset.table to one of the datasets: "
                                f"{shown(_datasets(f)) or '(none)'}")
        else:
            columns = _dataset_columns(obj, label)

    def read(names: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
        rows = slice(None, max_rows)
        with reading(label, "hdf5"), h5py.File(path, "r") as f:
            obj = f[key]
            if grouped:
                return {n: np.asarray(obj[n][rows]) for n in names}
            return _read_dataset(obj, names, rows)

    return Table(label=label, columns=columns, read=read)
