"""ROOT files through uproot: one TTree (or RNTuple), one scalar numeric branch per column."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot
from uproot.interpretation.jagged import AsJagged
from uproot.interpretation.numerical import AsDtype
from uproot.interpretation.strings import AsStrings

from models.datasets.base import DataError, Table, shown
from models.datasets.files import reading

# uproot >= 5.4 writes RNTuples by default, so both kinds of table are read.
_TABLE_CLASSES = ("TTree", "ROOT::RNTuple")
_ONE_NUMBER = "only branches with one number per event can be columns"


def _tree_name(f: uproot.ReadOnlyDirectory, table: str | None, label: str) -> str:
    classes = f.classnames(cycle=False, recursive=True)
    trees = list(dict.fromkeys(k for k, c in classes.items() if c in _TABLE_CLASSES))
    if table is not None:
        if table.split(";")[0] not in trees:
            raise DataError(f"{label} holds no TTree {table!r}; trees: {shown(trees) or '(none)'}")
        return table
    if len(trees) != 1:
        listed = shown(trees) if trees else "(none)"
        raise DataError(f"{label} holds {len(trees)} TTrees ({listed}); set dataset.table to "
                        "the tree to use")
    return trees[0]


def _check_ttree_branch(tree: uproot.TTree, name: str, label: str) -> None:
    branch = tree[name]
    interp, typename = branch.interpretation, branch.typename
    if isinstance(interp, AsStrings):
        raise DataError(f"branch {name!r} of {label} is not numeric (it holds strings, "
                        f"{typename})")
    if isinstance(interp, AsJagged) or not isinstance(interp, AsDtype):
        raise DataError(f"branch {name!r} of {label} is jagged or an object ({typename}); "
                        f"{_ONE_NUMBER}")
    if interp.inner_shape:
        raise DataError(f"branch {name!r} of {label} holds a fixed-size array ({typename}) per "
                        f"event; {_ONE_NUMBER}")


def _rntuple_field(ntuple: Any, name: str, label: str, max_rows: int | None) -> np.ndarray:
    field = ntuple[name]
    values = field.array(entry_stop=max_rows)
    layout = values.layout
    typename = field.typename
    if layout.parameter("__array__") == "string":
        raise DataError(f"branch {name!r} of {label} is not numeric (it holds strings, "
                        f"{typename})")
    if isinstance(layout, ak.contents.RegularArray):
        raise DataError(f"branch {name!r} of {label} holds a fixed-size array ({typename}) per "
                        f"event; {_ONE_NUMBER}")
    if not isinstance(layout, ak.contents.NumpyArray) or layout.data.ndim != 1:
        raise DataError(f"branch {name!r} of {label} is jagged or an object ({typename}); "
                        f"{_ONE_NUMBER}")
    return np.asarray(ak.to_numpy(values))


def root_table(path: Path, table: str | None, label: str) -> Table:
    """`table` names the TTree (or RNTuple); without it the file must hold exactly one."""
    with uproot.open(path) as f:
        tree_name = _tree_name(f, table, label)
        columns = [str(k) for k in f[tree_name].keys()]

    def read(names: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
        with reading(label, "root"), uproot.open(path) as f:
            tree = f[tree_name]
            # Branch by branch: only these are decompressed, and names are never parsed as
            # expressions (tree.arrays would).
            if isinstance(tree, uproot.TTree):
                # Checked before reading: a jagged branch can be far bigger than the rest.
                for n in names:
                    _check_ttree_branch(tree, n, label)
                return {n: np.asarray(tree[n].array(library="np", entry_stop=max_rows))
                        for n in names}
            return {n: _rntuple_field(tree, n, label, max_rows) for n in names}

    return Table(label=label, columns=columns, read=read)
