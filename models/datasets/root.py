"""ROOT files through uproot: one TTree (or RNTuple), one scalar numeric branch per column.

Other files: ROOT lets a TBranch keep its baskets in another file (`TBranch::fFileName`).
uproot ignores that member and reads every basket at its seek position in this file (checked
in tests/models/test_upload_fuzz.py), and it follows no TTree friends, TChains or TRefs, so a
ROOT file cannot make uproot read another file. A branch that names another file is refused
all the same: ROOT itself would read that file, and such an upload is not self-contained.

Sizes: a TTree's metadata (an entry per branch) is parsed in Python, about 0.4 ms a branch,
so its uncompressed size is checked from its key before it is parsed; an RNTuple's header
and footer likewise from its anchor. uproot's RNTuple `keys()` takes time quadratic in the
number of fields (21 s for 3000), so an RNTuple's columns are listed from its header's
field records instead (linear). Row counts come from the metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot
from uproot.interpretation.jagged import AsJagged
from uproot.interpretation.numerical import AsDtype
from uproot.interpretation.strings import AsStrings

from models.datasets.base import DataError, Table, reading, shown
from models.datasets.limits import DataLimits, check_columns, one_table_usable
from models.datasets.uri import clip

# uproot >= 5.4 writes RNTuples by default, so both kinds of table are read.
_TABLE_CLASSES = ("TTree", "ROOT::RNTuple")
_ONE_NUMBER = "only branches with one number per event can be columns"
# Metadata bytes allowed per column: a TTree branch takes about 500 bytes plus 20 a basket
# (4 KiB: 175 baskets), an RNTuple field about 70 bytes plus its name.
TTREE_BYTES_PER_COLUMN = 4 * 1024
RNTUPLE_BYTES_PER_COLUMN = 1024


def _open(path: Path, *, full_metadata: bool = False) -> uproot.ReadOnlyDirectory:
    # A Path, never a string: uproot reads "name:object" and URLs out of strings. No array
    # cache: the arrays read are handed over, not kept. full_metadata reads fFileName.
    return uproot.open(Path(path), array_cache=None,
                       minimal_ttree_metadata=not full_metadata)


def _trees(f: uproot.ReadOnlyDirectory, label: str, limits: DataLimits) -> list[str]:
    classes = f.classnames(cycle=False, recursive=True)
    if len(classes) > limits.max_file_objects:
        raise DataError(f"{label} holds {len(classes)} objects; at most "
                        f"{limits.max_file_objects} are allowed (MAX_FILE_OBJECTS)")
    return list(dict.fromkeys(k for k, c in classes.items() if c in _TABLE_CLASSES))


def _tree_name(f: uproot.ReadOnlyDirectory, table: str | None, label: str,
               limits: DataLimits) -> str:
    trees = _trees(f, label, limits)
    if table is not None:
        if table.split(";")[0] not in trees:
            raise DataError(f"{label} holds no TTree {clip(table)}; trees: "
                            f"{shown(trees) or '(none)'}")
        return table
    if len(trees) != 1:
        listed = shown(trees) if trees else "(none)"
        raise DataError(f"{label} holds {len(trees)} TTrees ({listed}); set dataset.table to "
                        "the tree to use")
    return trees[0]


def _check_metadata_size(f: uproot.ReadOnlyDirectory, name: str, label: str,
                         limits: DataLimits) -> None:
    key = f.key(name)
    size = int(key.data_uncompressed_bytes)
    allowed = limits.max_columns * TTREE_BYTES_PER_COLUMN
    if key.classname() == "ROOT::RNTuple":
        anchor = f[name]
        size = int(anchor.member("fLenHeader")) + int(anchor.member("fLenFooter"))
        allowed = limits.max_columns * RNTUPLE_BYTES_PER_COLUMN
    if size > allowed:
        raise DataError(f"TTree {clip(name)} of {label} has {size} bytes of metadata; at most "
                        f"{allowed} are read (MAX_COLUMNS={limits.max_columns} branches)")


def _check_own_file(tree: Any, name: str, label: str) -> None:
    """No branch may keep its baskets in another file (ROOT's TBranch::fFileName)."""
    for branch in tree.itervalues(recursive=True):
        other = str(branch.member("fFileName", none_if_missing=True) or "")
        if other:
            raise DataError(f"branch {clip(branch.name)} of TTree {clip(name)} in {label} "
                            f"keeps its data in another file ({clip(other)}); such files are "
                            "refused: upload a self-contained ROOT file")


def _checked_tree(f: uproot.ReadOnlyDirectory, name: str, label: str,
                  limits: DataLimits) -> tuple[list[str], int]:
    """(columns, entries) of a tree, its metadata size and files checked."""
    _check_metadata_size(f, name, label, limits)
    tree = f[name]
    if isinstance(tree, uproot.TTree):
        _check_own_file(tree, name, label)
        columns = [str(k) for k in tree.keys()]
    else:  # top-level fields: their own parent (RNTuple.fields, without its quadratic cost)
        columns = [str(r.field_name) for i, r in enumerate(tree.field_records)
                   if r.parent_field_id == i]
    check_columns(columns, f"TTree {clip(name)} of {label}", limits)
    return columns, int(tree.num_entries)


def inspect_root(path: Path, label: str, limits: DataLimits) -> None:
    """The upload-time check: one of the trees (metadata size, files, columns) is usable."""
    with reading(label, "root"), _open(path, full_metadata=True) as f:
        one_table_usable([partial(_checked_tree, f, name, label, limits)
                          for name in _trees(f, label, limits)], label)


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


def root_table(path: Path, table: str | None, label: str,
               limits: DataLimits | None = None) -> Table:
    """`table` names the TTree (or RNTuple); without it the file must hold exactly one."""
    limits = limits or DataLimits()
    with _open(path, full_metadata=True) as f:
        tree_name = _tree_name(f, table, label, limits)
        columns, entries = _checked_tree(f, tree_name, label, limits)

    def read(names: Sequence[str], max_rows: int | None) -> dict[str, np.ndarray]:
        with reading(label, "root"), _open(path) as f:
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

    return Table(label=label, columns=columns, read=read, n_rows=entries)
