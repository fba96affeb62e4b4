"""Paired bootstrap intervals for the change in loss, accuracy and macro F1 between two epochs.

Both epochs are scored on the same resample, so the interval is for the change itself. When the data
names groups (e.g. the utterances of one dialogue), whole groups are resampled, since items within a
group are not independent. Resamples are drawn with a fixed seed: the report is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .metrics import macro_f1_from_counts

__all__ = ["Interval", "BootstrapDeltas", "bootstrap_deltas", "N_RESAMPLES", "CONFIDENCE_LEVEL", "SEED"]

N_RESAMPLES = 200
CONFIDENCE_LEVEL = 0.95
SEED = 0
RESAMPLES_PER_CHUNK = 25      # bounds memory: a chunk holds RESAMPLES_PER_CHUNK x n_units draw counts


@dataclass(frozen=True)
class Interval:
    """A change measured on all items, with its percentile bootstrap interval [low, high]."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class BootstrapDeltas:
    """Changes from epoch `from_index` to `to_index` (later minus earlier) with bootstrap intervals."""

    from_index: int
    to_index: int
    n_resamples: int
    confidence_level: float
    resampled_unit: str            # "groups" when the data names groups shared by several items, else "items"
    n_units: int
    loss_change: Interval
    accuracy_change: Interval
    macro_f1_change: Interval


@dataclass(frozen=True)
class _UnitSums:
    """Per-unit sums from which every statistic of a resample follows by one matrix product."""

    ratio_terms: np.ndarray        # (G, 6): a nll_before, a nll_after, a, correct_before, correct_after, 1
    class_counts: sparse.csc_matrix  # (G, 5C): support, TP_before, predicted_before, TP_after, predicted_after
    n_classes: int
    counted_classes: np.ndarray    # classes with items in the full validation set


def _unit_sums(units: np.ndarray, n_units: int, labels: np.ndarray, item_weights: np.ndarray,
               before, after, n_classes: int) -> _UnitSums:
    correct_before, correct_after = before.pred == labels, after.pred == labels
    columns = (item_weights * before.nll, item_weights * after.nll, item_weights,
               correct_before, correct_after, np.ones(len(labels)))
    ratio_terms = np.stack([np.bincount(units, weights=c.astype(np.float64), minlength=n_units) for c in columns],
                           axis=1)
    kinds = [(np.ones(len(labels), bool), labels), (correct_before, labels), (np.ones(len(labels), bool), before.pred),
             (correct_after, labels), (np.ones(len(labels), bool), after.pred)]
    rows = np.concatenate([units[mask] for mask, _ in kinds])
    cols = np.concatenate([k * n_classes + cls[mask] for k, (mask, cls) in enumerate(kinds)])
    class_counts = sparse.csc_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_units, 5 * n_classes))
    support = np.bincount(labels, minlength=n_classes)
    return _UnitSums(ratio_terms, class_counts, n_classes, support > 0)


def _changes(sums: _UnitSums, multiplicity: np.ndarray) -> np.ndarray:
    """(R, 3) changes in loss, accuracy and macro F1 for R resamples given as (R, G) draw counts."""
    totals = multiplicity @ sums.ratio_terms
    counts = (sums.class_counts.T @ multiplicity.T).T.reshape(len(multiplicity), 5, sums.n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        loss_change = (totals[:, 1] - totals[:, 0]) / totals[:, 2]
        accuracy_change = (totals[:, 4] - totals[:, 3]) / totals[:, 5]
    support = counts[:, 0]
    f1_before = macro_f1_from_counts(counts[:, 1], support, counts[:, 2], sums.counted_classes)
    f1_after = macro_f1_from_counts(counts[:, 3], support, counts[:, 4], sums.counted_classes)
    return np.column_stack([loss_change, accuracy_change, f1_after - f1_before])


def bootstrap_deltas(labels: np.ndarray, groups: np.ndarray, class_weights: np.ndarray, before, after,
                     from_index: int, to_index: int, n_resamples: int = N_RESAMPLES,
                     confidence_level: float = CONFIDENCE_LEVEL, seed: int = SEED) -> BootstrapDeltas:
    """Percentile intervals for L, accuracy and macro F1 of `after` minus `before` (records with .pred, .nll).

    Loss is the class-weighted mean NLL, a ratio of resampled sums, as torch's nll_loss(weight=...).
    """
    units = np.unique(groups, return_inverse=True)[1].reshape(-1)
    n_units = int(units.max()) + 1 if len(units) else 0
    sums = _unit_sums(units, n_units, labels, class_weights[labels], before, after, len(class_weights))
    estimate = _changes(sums, np.ones((1, n_units)))[0]
    rng = np.random.default_rng(seed)
    resampled = []
    for start in range(0, n_resamples, RESAMPLES_PER_CHUNK):
        size = min(RESAMPLES_PER_CHUNK, n_resamples - start)
        draws = rng.integers(0, n_units, size=(size, n_units)) + n_units * np.arange(size)[:, None]
        multiplicity = np.bincount(draws.ravel(), minlength=size * n_units).reshape(size, n_units)
        resampled.append(_changes(sums, multiplicity.astype(np.float64)))
    tail = (1.0 - confidence_level) / 2.0
    low, high = np.nanquantile(np.concatenate(resampled), [tail, 1.0 - tail], axis=0)
    loss, accuracy, macro_f1 = (Interval(float(e), float(lo), float(hi)) for e, lo, hi in zip(estimate, low, high))
    return BootstrapDeltas(from_index, to_index, n_resamples, confidence_level,
                           "groups" if n_units < len(labels) else "items", n_units, loss, accuracy, macro_f1)
