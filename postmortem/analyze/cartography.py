"""Per-item dynamics across epochs on the validation set (dataset cartography, Swayamdipta et al. 2020).

Persistently and confidently wrong items are label-error candidates (Pleiss et al. 2020); correct->wrong
flips between consecutive epochs are forgetting events (Toneva et al. 2019).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Cartography", "cartography", "persistent_confident_errors"]


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


def persistent_confident_errors(table: Cartography, max_fraction_correct: float, max_mean_true_confidence: float,
                                min_final_confidence: float) -> np.ndarray:
    """Indices of label-error candidates, most confident first: items right in at most `max_fraction_correct`
    of epochs, whose mean p(y) is at most `max_mean_true_confidence` (the hard-to-learn corner of the data
    map), and that are wrong at the last epoch with confidence >= `min_final_confidence`."""
    chosen = np.flatnonzero((table.fraction_correct <= max_fraction_correct)
                            & (table.mean_true_confidence <= max_mean_true_confidence)
                            & (table.final_pred != table.labels) & (table.final_confidence >= min_final_confidence))
    return chosen[np.argsort(-table.final_confidence[chosen], kind="stable")]
