"""Label-error candidates on the validation set: confident learning (Northcutt, Jiang & Chuang 2021) on the
cross-fitted, temperature-scaled probabilities, kept only when stable over the last epochs.

Validation predictions are out-of-sample, which is what confident learning assumes. Per-class thresholds
t_j = mean scaled p_j over the items labelled j (their mean self-confidence); an item labelled i is a candidate
for class j != i when its scaled p_j >= t_j. The records keep the top class's probability, so j is the predicted
class (the largest p, as cleanlab breaks ties) and only wrong predictions are candidates. A floor keeps a weak
model (low t_j) from flagging uncertain items, and stability (wrong, with the same prediction, at each of the
last `window` epochs) keeps one-epoch flips out. Candidates alone cannot tell a wrong label from a hard item:
what they show is for the diagnosis to weigh.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ItemCandidates", "label_issue_candidates"]


@dataclass(frozen=True)
class ItemCandidates:
    """Indices of the candidates (most confident first), the per-class thresholds t_j, the epochs checked, and
    which items (right or wrong) are confident: scaled p(prediction) >= max(t_pred, floor) at the last of them."""

    indices: np.ndarray
    class_thresholds: np.ndarray          # (C,) mean scaled self-confidence; NaN for a class with no items
    epoch_indices: tuple[int, ...]        # the epochs over which the candidates were wrong and stable
    confident: np.ndarray                 # (N,) bool


def label_issue_candidates(labels: np.ndarray, records: list, to_index: int, n_classes: int, window: int,
                           min_confidence: float) -> ItemCandidates:
    """Candidates at epoch `to_index` of `records` (each with .pred, .scaled_nll, .scaled_confidence): wrong
    with the same prediction at each of the last `window` epochs up to it, and at it, scaled p(prediction) >=
    max(t_pred, min_confidence)."""
    checked = tuple(range(max(0, to_index - window + 1), to_index + 1))
    last = records[to_index]
    self_confidence = np.exp(-last.scaled_nll)
    support = np.bincount(labels, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        thresholds = np.bincount(labels, weights=self_confidence, minlength=n_classes) / support
    stable = np.ones(len(labels), bool)
    for index in checked:
        stable &= (records[index].pred == last.pred) & (last.pred != labels)
    confident = last.scaled_confidence >= np.fmax(thresholds[last.pred], min_confidence)
    chosen = np.flatnonzero(stable & confident)
    return ItemCandidates(chosen[np.argsort(-last.scaled_confidence[chosen], kind="stable")], thresholds, checked,
                          confident)
