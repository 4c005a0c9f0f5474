"""What a data set may cost before it is read, and which column names are acceptable.

A hostile upload costs little to send and a lot to read: a deflated array of zeros, a CSV of
a million columns, a two-megabyte column name. Every limit here is checked from headers and
metadata, before the data is decompressed or parsed. `DataLimits` travels as an argument
(models/ does not read the service's settings); `DataLimits.from_settings` maps the settings
of the same meaning (docs/security.md lists them).

Standard library only: the API imports it to check uploads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields

from models.datasets.base import DataError
from models.datasets.uri import clip

# The sampling route's own query parameters (service/routers/models.py RESERVED_QUERY): a
# condition of one of these names could never be given at sampling time.
RESERVED_CONDITION_NAMES = frozenset({"n", "seed", "format"})
# A cell starting with one of these is run as a formula by spreadsheet programs (CSV
# injection): names travel into reports, CSV samples and plots.
FORMULA_PREFIXES = ("=", "+", "-", "@")


@dataclass(frozen=True)
class DataLimits:
    """Limits on one data set; the defaults fit a worker with a few GB of memory.

    - max_cells: rows x columns read (all columns where a format can only read whole rows,
      e.g. an NPZ member). The loader's peak, measured: 12.5 bytes a cell from CSV, 16.5
      from NPY (8 of them the file's mapped pages), 25 from Parquet: 2.5-5 GB at the default.
    - max_columns: columns one table may offer (the CSV header is read only up to the
      bytes these many names can take).
    - max_column_name_length: characters of one column name.
    - max_compression_ratio: declared size / compressed size of an NPZ member (deflate
      reaches about 1000 on zeros; real data rarely 10).
    - max_file_objects: HDF5 groups and datasets, NPZ members, ROOT keys in one file.
    """

    max_cells: int = 200_000_000
    max_columns: int = 1000
    max_column_name_length: int = 64
    max_compression_ratio: float = 100.0
    max_file_objects: int = 10_000

    @classmethod
    def from_settings(cls, settings: object) -> DataLimits:
        """From any object with the settings' attribute names (gan_platform.settings.Settings)."""
        return cls(**{f.name: getattr(settings, _SETTING_OF[f.name]) for f in fields(cls)})

    @property
    def max_header_bytes(self) -> int:
        """The longest CSV header these limits allow: every name at its longest, four bytes a
        character in UTF-8, quoted with doubled quotes, plus the separators."""
        return self.max_columns * (self.max_column_name_length * 8 + 3) + 1024


_SETTING_OF = {
    "max_cells": "MAX_DATA_CELLS",
    "max_columns": "MAX_COLUMNS",
    "max_column_name_length": "MAX_COLUMN_NAME_LENGTH",
    "max_compression_ratio": "MAX_COMPRESSION_RATIO",
    "max_file_objects": "MAX_FILE_OBJECTS",
}


def column_name_problem(name: str, limits: DataLimits) -> str | None:
    """What is wrong with one column name, or None."""
    if not name:
        return "is empty"
    if len(name) > limits.max_column_name_length:
        return (f"is {len(name)} characters long; at most {limits.max_column_name_length} "
                "are allowed (MAX_COLUMN_NAME_LENGTH)")
    if not name.isprintable():
        return "holds control characters (tab, newline...)"
    if name.startswith(FORMULA_PREFIXES):
        return (f"starts with {name[0]!r}, which spreadsheets run as a formula; rename it "
                "(e.g. without the sign)")
    return None


def check_columns(names: Sequence[str], label: str, limits: DataLimits) -> None:
    """DataError for too many columns or for the first bad name (cut to a readable length)."""
    if len(names) > limits.max_columns:
        raise DataError(f"{label} has {len(names)} columns; at most {limits.max_columns} are "
                        "allowed (MAX_COLUMNS)")
    for name in names:
        problem = column_name_problem(str(name), limits)
        if problem:
            raise DataError(f"column {clip(str(name))} of {label} {problem}")


def check_condition_names(conditions: Sequence[str], label: str) -> None:
    """Conditions are query parameters when sampling: none may shadow the route's own."""
    taken = [c for c in conditions if c in RESERVED_CONDITION_NAMES]
    if taken:
        raise DataError(f"condition column {taken[0]!r} of {label} has the name of a sampling "
                        f"query parameter ({', '.join(sorted(RESERVED_CONDITION_NAMES))}); "
                        "rename the column")


def check_cells(rows: int, width: int, label: str, limits: DataLimits,
                what: str = "columns read") -> None:
    """DataError when rows x width exceeds the cell budget."""
    if rows * width > limits.max_cells:
        raise DataError(f"{label} is too large: {rows} rows x {width} {what} = "
                        f"{rows * width} cells; at most {limits.max_cells} are allowed "
                        "(MAX_DATA_CELLS); use fewer rows (dataset.max_rows) or columns")


def one_table_usable(checks: Iterable[Callable[[], object]], label: str) -> None:
    """Pass when one of the candidate tables passes its check (a job's `table` may pick
    it); else raise the first table's error. A file with no table at all is refused."""
    first: DataError | None = None
    for check in checks:
        try:
            check()
            return
        except DataError as e:
            first = first or e
    raise first or DataError(f"{label} holds no table (no dataset, array or tree)")
