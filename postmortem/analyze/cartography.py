"""Per-item dynamics across epochs on the validation set (dataset cartography, Swayamdipta et al. 2020).

Correct->wrong flips between consecutive epochs are forgetting events (Toneva et al. 2019); label-error
candidates are found by candidates.label_issue_candidates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Cartography", "cartography"]


@dataclass(frozen=True)
class Cartography:
    """One row per validation item, over all epochs in training order."""

    ids: np.ndarray                          # str
    labels: np.ndarray                       # int64
    mean_true_confidence: np.ndarray         # mean over epochs of p(y_i)
    true_confidence_variability: np.ndarray  # population std over epochs of p(y_i)
    fraction_correct: np.ndarray             # share of epochs with argmax = y_i
    forgetting_events: np.ndarray            # int64: correct -> wrong flips between consecutive epochs
    final_pred: np.ndarray                   # int64: prediction at the last epoch
    final_confidence: np.ndarray             # probability of that prediction
    final_nll: np.ndarray                    # -log p(y_i) at the last epoch


def cartography(labels: np.ndarray, ids: np.ndarray, records: list) -> Cartography:
    """Per-item statistics over `records` (each with .pred, .nll, .confidence), in training order."""
    true_confidence = np.exp(-np.stack([r.nll for r in records]))         # (E, N)
    correct = np.stack([r.pred == labels for r in records])                # (E, N)
    return Cartography(
        ids=ids,
        labels=labels,
        mean_true_confidence=true_confidence.mean(axis=0),
        true_confidence_variability=true_confidence.std(axis=0),
        fraction_correct=correct.mean(axis=0),
        forgetting_events=(correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.int64),
        final_pred=records[-1].pred,
        final_confidence=records[-1].confidence,
        final_nll=records[-1].nll,
    )

