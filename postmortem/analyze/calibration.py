"""Calibration of one epoch from per-item scalars: ECE (equal-width and equal-mass), MCE, Brier, reliability data.

Bin conventions: equal-width bins are (lo, hi] as scikit-learn's calibration_curve, with a confidence of
exactly 0 in the first bin and exactly 1 in the last (`confidence_bins`). Equal-mass bins take the
items sorted by confidence and cut them into M runs whose sizes differ by at most one; tied confidences may
fall on both sides of a cut.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


__all__ = ["ECE_BINS", "confidence_bins", "ReliabilityDiagram", "EpochCalibration", "reliability_diagram",
           "expected_calibration_error", "adaptive_calibration_error", "stable_argsort", "brier_loss", "epoch_calibration"]

ECE_BINS = 15


def confidence_bins(confidence: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Bin index of each confidence with (lo, hi] equal-width bins, as scikit-learn's calibration_curve.

    Bin m holds (m/M, (m+1)/M]; a confidence of exactly 0 goes to bin 0 and exactly 1 to bin M-1.
    """
    return np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Equal-width confidence bins: item count, mean confidence and accuracy per bin (NaN where empty)."""

    bin_edges: np.ndarray            # (M + 1,) from 0 to 1
    counts: np.ndarray               # (M,) int64
    mean_confidence: np.ndarray      # (M,)
    accuracy: np.ndarray             # (M,)

    @property
    def gaps(self) -> np.ndarray:
        """|accuracy - confidence| per bin (NaN where empty)."""
        return np.abs(self.accuracy - self.mean_confidence)

    @property
    def expected_calibration_error(self) -> float:
        """sum_m |B_m| / n * gap_m."""
        n = self.counts.sum()
        return float(np.nansum(self.counts * self.gaps) / n) if n else 0.0

    @property
    def max_calibration_error(self) -> float:
        """The largest gap over non-empty bins."""
        return float(np.nanmax(self.gaps)) if self.counts.any() else 0.0


@dataclass(frozen=True)
class EpochCalibration:
    """One epoch's calibration (all *_error and *_loss lower is better; entropies in nats)."""

    reliability: ReliabilityDiagram
    expected_calibration_error: float        # top-label ECE, 15 equal-width bins
    adaptive_calibration_error: float        # top-label ECE, 15 equal-mass bins
    max_calibration_error: float             # MCE: largest equal-width bin gap
    brier_loss: float                        # mean_i sum_k (p_ik - 1[y_i = k])^2, in [0, 2]
    mean_confidence: float
    mean_confidence_correct: float           # NaN when no prediction is correct
    mean_confidence_wrong: float             # NaN when none is wrong
    mean_entropy: float
    mean_entropy_correct: float
    mean_entropy_wrong: float


def reliability_diagram(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> ReliabilityDiagram:
    """Per-bin counts, mean confidence and accuracy over equal-width (lo, hi] bins."""
    bins = confidence_bins(confidence, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=n_bins) / counts
        accuracy = np.bincount(bins, weights=correct.astype(np.float64), minlength=n_bins) / counts
    return ReliabilityDiagram(np.linspace(0.0, 1.0, n_bins + 1), counts.astype(np.int64), mean_confidence, accuracy)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE, sum_m |B_m|/n |acc(B_m) - conf(B_m)| over equal-width bins (written here: scikit-learn has
    no ECE; tested against torchmetrics' and netcal's conventions in the README's bins)."""
    return reliability_diagram(confidence, correct, n_bins).expected_calibration_error


def stable_argsort(values: np.ndarray) -> np.ndarray:
    """np.argsort(values, kind="stable") for finite floats, 4-5x faster on 20,000 values: numpy's default
    (vectorised) sort orders the values, and equal values are then put in index order by sorting one integer key
    per item, (rank of its value) * n + index, which is unique."""
    order = np.argsort(values)
    ordered = values[order]
    tied = ordered[1:] == ordered[:-1]
    if not tied.any():
        return order
    value_rank = np.concatenate(([0], np.cumsum(~tied)))
    return np.sort(value_rank * len(values) + order) % len(values)


def adaptive_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE over equal-mass bins: min(M, n) runs of the confidence-sorted items."""
    n = len(confidence)
    if n == 0:
        return 0.0
    order = stable_argsort(confidence)
    n_runs = min(n_bins, n)
    starts = np.arange(n_runs) * n // n_runs      # strictly increasing, since n_runs <= n
    gap_sums = np.add.reduceat(correct[order].astype(np.float64) - confidence[order], starts)
    return float(np.abs(gap_sums).sum() / n)


def brier_loss(sum_sq_prob: np.ndarray, nll: np.ndarray) -> float:
    """Multi-class Brier score from per-item scalars: sum_k (p_k - 1[y = k])^2 = sum_k p_k^2 - 2 p_y + 1.

    Not sklearn.metrics.brier_score_loss: that needs the N x C probabilities, which the records do not keep.
    """
    return float(np.mean(sum_sq_prob - 2.0 * np.exp(-nll) + 1.0)) if len(nll) else 0.0


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def epoch_calibration(labels: np.ndarray, records, n_bins: int = ECE_BINS) -> EpochCalibration:
    """All calibration numbers of one epoch's records (.pred, .confidence, .nll, .entropy, .sum_sq_prob)."""
    correct = records.pred == labels
    reliability = reliability_diagram(records.confidence, correct, n_bins)
    return EpochCalibration(
        reliability=reliability,
        expected_calibration_error=reliability.expected_calibration_error,
        adaptive_calibration_error=adaptive_calibration_error(records.confidence, correct, n_bins),
        max_calibration_error=reliability.max_calibration_error,
        brier_loss=brier_loss(records.sum_sq_prob, records.nll),
        mean_confidence=_mean_or_nan(records.confidence),
        mean_confidence_correct=_mean_or_nan(records.confidence[correct]),
        mean_confidence_wrong=_mean_or_nan(records.confidence[~correct]),
        mean_entropy=_mean_or_nan(records.entropy),
        mean_entropy_correct=_mean_or_nan(records.entropy[correct]),
        mean_entropy_wrong=_mean_or_nan(records.entropy[~correct]),
    )
