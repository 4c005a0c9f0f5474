"""Batch sampling: the seeding rule and the pieces of a sampling job (torch-free).

A sampling job's rows are cut into **pieces** of PIECE_ROWS rows, aligned on the job's rows:
piece p holds rows [p * PIECE_ROWS, (p + 1) * PIECE_ROWS). Piece p is drawn exactly as the
in-process sampler draws it, `serving.sampling.sample(model, rows of p, piece_seed(seed, p),
conditions of p)`, so its rows are those of `POST /v1/models/{id}/samples` with that seed and
those conditions. A chunk (the unit of work a worker claims) is a whole number of pieces, so
the result depends only on the model, the job's seed and the conditions: neither on the
chunk size, nor on which worker ran which chunk, nor on how often a chunk was re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from serving.sampling import LoadedModel, sample

# The seeding unit: part of the reproducibility contract, never to be changed.
PIECE_ROWS = 65_536
SEED_BITS = 63  # piece seeds are valid REST seeds: 0 <= seed < 2**63


class SamplingStopped(Exception):
    """`should_stop()` answered True between two pieces: the work stopped there."""


def piece_seed(seed: int, piece: int) -> int:
    """The noise seed of piece `piece` of a job seeded with `seed`: the first 64-bit word
    of numpy's SeedSequence([seed, piece]), shifted right by one bit (so it is below 2**63).
    SeedSequence hashes its entropy, so neighbouring seeds or pieces share no noise."""
    if seed < 0 or piece < 0:
        raise ValueError("seed and piece must be non-negative")
    word = np.random.SeedSequence([seed, piece]).generate_state(1, dtype=np.uint64)[0]
    return int(word) >> (64 - SEED_BITS)


def pieces(start: int, stop: int) -> Iterator[tuple[int, int, int]]:
    """(piece index, first row, end row) of each piece overlapping the rows [start, stop)."""
    row = start
    while row < stop:
        piece = row // PIECE_ROWS
        end = min((piece + 1) * PIECE_ROWS, stop)
        yield piece, row, end
        row = end


def chunk_bounds(total: int, chunk_rows: int) -> list[tuple[int, int]]:
    """The [start, stop) rows of each chunk of a job of `total` rows."""
    if chunk_rows < PIECE_ROWS or chunk_rows % PIECE_ROWS:
        raise ValueError(f"chunk_rows must be a multiple of {PIECE_ROWS}")
    return [(start, min(start + chunk_rows, total)) for start in range(0, total, chunk_rows)]


def sample_rows(model: LoadedModel, seed: int, start: int, stop: int,
                conditions: np.ndarray | None,
                should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Rows [start, stop) of a job seeded with `seed`: [stop - start, F] float32, drawn piece
    by piece. `conditions`: the graph's [stop - start, C] conditions of those rows, or None
    (unconditional). `should_stop()` is asked before each piece: SamplingStopped when True."""
    if start % PIECE_ROWS:
        raise ValueError(f"rows start at a piece boundary (a multiple of {PIECE_ROWS})")
    n = stop - start
    out = np.empty((n, len(model.feature_names)), dtype=np.float32)
    for piece, first, end in pieces(start, stop):
        if should_stop is not None and should_stop():
            raise SamplingStopped(f"stopped after {first - start} of {n} rows")
        rows = conditions[first - start:end - start] if conditions is not None else None
        out[first - start:end - start] = sample(model, end - first, piece_seed(seed, piece),
                                                rows)
    return out
