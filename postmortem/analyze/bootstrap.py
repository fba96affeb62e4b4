"""Paired bootstrap: many statistics of a comparison between two epochs, all on the same resamples.

Every statistic the ledger reports (loss change and its parts, the scaled and unweighted loss changes,
accuracy, macro F1, recall and confusion changes) is a function of sums over items. Summing each item
column per unit (an item, or a group such as a dialogue, whose items are not independent) once gives a
(G, M) matrix S; a resample that draws unit g m_g times has column totals m @ S. So R resamples cost one
(R, G) @ (G, M) product, both epochs are scored on each resample (the interval is for the change itself),
and every statistic and share is computed on the same resamples, which makes them comparable.
Resamples are drawn with a fixed seed: the report is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

__all__ = ["Interval", "ColumnSums", "ResampledTotals", "resample_multiplicities", "resample_totals", "N_RESAMPLES", "CONFIDENCE_LEVEL", "SEED"]

N_RESAMPLES = 200
CONFIDENCE_LEVEL = 0.95
SEED = 0
RESAMPLES_PER_CHUNK = 25      # bounds memory: a chunk holds RESAMPLES_PER_CHUNK x n_units draw counts


@dataclass(frozen=True)
class Interval:
    """A value measured on all items, with its percentile bootstrap interval [low, high]."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def above_zero(self) -> bool:
        """The whole interval is above 0: a rise beyond noise."""
        return self.low > 0

    @property
    def below_zero(self) -> bool:
        """The whole interval is below 0: a fall beyond noise."""
        return self.high < 0


class ColumnSums:
    """Builds the (units, columns) matrix of per-unit sums, with each column or block of columns named."""

    def __init__(self, units: np.ndarray, n_units: int):
        self.units, self.n_units = units, n_units
        self.layout: dict[str, int | slice] = {}
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._width = 0

    def add(self, name: str, values: np.ndarray) -> None:
        """One column: the per-unit sums of a per-item value (booleans count as 0/1)."""
        self.add_block(name, np.zeros(len(self.units), dtype=np.int64), 1, values)
        self.layout[name] = self.layout[name].start      # an index: its totals read as one value per row

    def add_block(self, name: str, codes: np.ndarray, n_codes: int, values: np.ndarray | None = None) -> None:
        """n_codes columns: column k sums `values` (default 1) over the items whose code is k; codes < 0 skip."""
        keep = codes >= 0
        values = np.ones(len(codes)) if values is None else np.asarray(values, dtype=np.float64)
        self._rows.append(self.units[keep])
        self._cols.append(self._width + codes[keep])
        self._values.append(values[keep])
        self.layout[name] = slice(self._width, self._width + n_codes)
        self._width += n_codes

    def matrix(self) -> sparse.csc_matrix:
        """The (units, columns) matrix; duplicate (unit, column) entries are summed."""
        return sparse.csc_matrix((np.concatenate(self._values), (np.concatenate(self._rows), np.concatenate(self._cols))),
                                 shape=(self.n_units, self._width))


@dataclass(frozen=True)
class ResampledTotals:
    """Column totals over all units (row 0) and over each resample (rows 1..R), by column name.

    A statistic is any function of these totals computed row-wise; `interval` turns its rows into the
    estimate (row 0) and the percentile interval of the resamples (NaN resamples, e.g. a class drawn
    with no items, are left out), widened to the estimate where it lies outside.
    """

    layout: dict[str, int | slice]  # a column's index, or a block's slice
    totals: np.ndarray            # (1 + R, M)
    n_resamples: int
    confidence_level: float
    resampled_unit: str           # "groups" when units hold several items, else "items"
    n_units: int

    def __getitem__(self, name: str) -> np.ndarray:
        """(1 + R,) for a column, (1 + R, k) for a block."""
        return self.totals[:, self.layout[name]]

    def interval(self, values: np.ndarray) -> Interval:
        """The interval of one statistic given as its (1 + R,) rows."""
        return self.intervals(np.asarray(values).reshape(-1, 1))[0]

    def intervals(self, values: np.ndarray) -> tuple[Interval, ...]:
        """One interval per column of a (1 + R, k) statistic, all columns at once: each column's finite resamples
        sorted (the others set to NaN, which sorts last) and its percentiles interpolated as np.quantile's
        default ('linear') does. A Python loop of np.quantile per column took 0.7 s of a 1,000-class report."""
        values = np.asarray(values, dtype=np.float64)
        estimates = values[0]
        resampled = values[1:].copy()
        resampled[~np.isfinite(resampled)] = np.nan
        resampled.sort(axis=0)
        n_finite = np.count_nonzero(~np.isnan(resampled), axis=0)
        tail = (1.0 - self.confidence_level) / 2.0
        low, high = (_sorted_quantile(resampled, n_finite, q) for q in (tail, 1.0 - tail))
        # A skewed statistic (a ratio, a share) can have its estimate outside the percentile interval; the
        # interval is then widened to it, never the estimate moved.
        return tuple(Interval(float(e), float("nan"), float("nan")) if n == 0 else
                     Interval(float(e), min(float(lo), float(e)), max(float(hi), float(e)))
                     for e, lo, hi, n in zip(estimates, low, high, n_finite))


def _sorted_quantile(ordered: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """Per column, the q-quantile of its first `counts` values (sorted ascending), as np.quantile's 'linear'
    method: virtual index q (n - 1) between the neighbouring values, interpolated as numpy's _lerp does (from the
    upper end when the fraction is at least 1/2), so the numbers are the same to the bit."""
    columns = np.arange(ordered.shape[1])
    position = q * (np.maximum(counts, 1) - 1)
    below = np.floor(position)
    fraction = position - below
    lower = ordered[below.astype(np.intp), columns]
    upper = ordered[np.minimum(below.astype(np.intp) + 1, np.maximum(counts, 1) - 1), columns]
    difference = upper - lower
    return np.where(fraction >= 0.5, upper - difference * (1 - fraction), lower + difference * fraction)


def resample_multiplicities(n_units: int, n_resamples: int = N_RESAMPLES, seed: int = SEED):
    """The seeded resamples, in chunks of at most RESAMPLES_PER_CHUNK: (chunk, n_units) arrays of how many times
    each unit is drawn (n_units draws with replacement per resample)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, RESAMPLES_PER_CHUNK):
        size = min(RESAMPLES_PER_CHUNK, n_resamples - start)
        draws = rng.integers(0, n_units, size=(size, n_units)) + n_units * np.arange(size)[:, None]
        yield np.bincount(draws.ravel(), minlength=size * n_units).reshape(size, n_units)


def resample_totals(groups: np.ndarray, build, n_resamples: int = N_RESAMPLES,
                    confidence_level: float = CONFIDENCE_LEVEL, seed: int = SEED) -> ResampledTotals:
    """Column totals of the per-unit sums that `build(columns: ColumnSums)` adds, on all units and on
    n_resamples seeded resamples of the units (the items' groups; each item its own group gives items)."""
    units = np.unique(groups, return_inverse=True)[1].reshape(-1)
    n_units = int(units.max()) + 1 if len(units) else 0
    columns = ColumnSums(units, n_units)
    build(columns)
    matrix = columns.matrix()
    rows = [np.asarray(matrix.sum(axis=0)).reshape(1, -1)]
    for multiplicity in resample_multiplicities(n_units, n_resamples, seed):
        rows.append(np.asarray((matrix.T @ multiplicity.T.astype(np.float64)).T))
    return ResampledTotals(columns.layout, np.concatenate(rows), n_resamples, confidence_level,
                           "groups" if n_units < len(groups) else "items", n_units)
