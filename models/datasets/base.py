"""The types every loader shares: the loaded `Dataset`, the `DataError` and the lazy `Table`.

Torch-free and free of the heavy readers (pandas, h5py, uproot...): the API imports this
package to validate uploads and list the builtin sets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# Fewer rows than this cannot fill even one typical batch, let alone fit quantiles: refuse.
MIN_ROWS = 32
# A categorical condition with more distinct values than this is refused: its one-hot block
# would dwarf the rest of the generator's input (and it is probably an id, not a category).
MAX_CATEGORIES = 1000


class DataError(ValueError):
    """Any problem with the data (where it lies, its format, its columns, its values)."""


@contextlib.contextmanager
def reading(label: str, fmt: str) -> Iterator[None]:
    """Wrap the assorted exceptions of the reading libraries into one DataError."""
    try:
        yield
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - pandas, pyarrow, h5py, uproot each raise their own
        raise DataError(f"could not read {label} as {fmt}: {type(e).__name__}: "
                        f"{str(e)[:500]}") from e


@dataclass
class Dataset:
    """A data set in physical units, ready for preprocessing.

    `conditions` is [N, 0] for an unconditional set. `weights` are raw per-event weights
    (sWeights may be negative); the trainer normalises them. `image_shape` (C, H, W) says the
    features are the flattened pixels of an image. `modes`/`mode_std`: the true mode centres
    [K, F] of a toy mixture and the per-coordinate std of each of its Gaussians.

    `categories`: for each categorical condition column, its sorted distinct values (ints or
    strings); that column of `conditions` holds the code of each row's value, 0..K-1, as a
    float, so the conditions stay a float matrix. Continuous conditions are not in it.
    """

    features: np.ndarray
    conditions: np.ndarray
    weights: np.ndarray | None
    feature_names: list[str]
    condition_names: list[str]
    image_shape: tuple[int, int, int] | None = None
    modes: np.ndarray | None = None
    mode_std: float | np.ndarray | None = None
    categories: dict[str, list] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def category_sizes(self) -> dict[int, int]:
        """{index of a categorical column in `conditions`: its number of categories}."""
        return {i: len(self.categories[name]) for i, name in enumerate(self.condition_names)
                if name in self.categories}


# read(names, max_rows) -> one 1-D array per requested name, at most max_rows long.
Reader = Callable[[Sequence[str], int | None], Mapping[str, np.ndarray]]


@dataclass
class Table:
    """The columns a source offers, read on demand so that only the columns a spec uses are
    loaded (a ROOT tree or a Parquet file may hold hundreds).

    `label` names the source in messages. `default_features` replaces "every column" when a
    spec names no features (a builtin's label columns are no features); `default_conditions`
    apply when a spec names no conditions; `aliases` expand one spec name into several columns.
    `image_shape`, `modes` and `mode_std` hold only when the features are `default_features`.

    `n_rows`: the row count from the file's metadata, when it has one (CSV has not), so the
    size is checked before reading. `reads_all_columns`: reading any column decompresses every
    column (an NPZ member), so the cell budget counts them all.
    """

    label: str
    columns: list[str]
    read: Reader
    default_features: list[str] | None = None
    default_conditions: list[str] = field(default_factory=list)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    image_shape: tuple[int, int, int] | None = None
    modes: np.ndarray | None = None
    mode_std: float | np.ndarray | None = None
    n_rows: int | None = None
    reads_all_columns: bool = False


def shown(names: Sequence[str], limit: int = 40) -> str:
    """A column list for a message; long lists are cut so the message stays readable."""
    head = ", ".join(repr(n) for n in names[:limit])
    more = len(names) - limit
    return f"{head}, ... ({more} more)" if more > 0 else head
