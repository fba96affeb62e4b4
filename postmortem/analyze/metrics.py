"""Per-epoch metrics from per-item records: loss, accuracy, confusion matrix, per-class loss and macro F1.
(Calibration numbers, ECE and Brier among them, are calibration.py's.)"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClassMetrics", "EpochMetrics", "epoch_metrics", "weighted_loss", "macro_f1_from_counts", "macro_f1_score"]


@dataclass(frozen=True)
class ClassMetrics:
    """One class at one epoch. loss: mean NLL of its items; loss_share: its additive part of the epoch loss."""

    support: int
    loss: float | None
    loss_share: float
    precision: float | None
    recall: float | None


@dataclass(frozen=True)
class EpochMetrics:
    """The headline numbers of one epoch (all over the counted items)."""

    n_samples: int
    loss: float
    accuracy: float
    confusion: np.ndarray            # (C, C) int64, rows true class, columns predicted
    per_class: tuple[ClassMetrics, ...]


def weighted_loss(labels: np.ndarray, nll: np.ndarray, class_weights: np.ndarray) -> float:
    """The loss: sum_i w[y_i] nll_i / sum_i w[y_i] (torch's nll_loss with weight=w over the counted items)."""
    item_weights = class_weights[labels]
    return float((item_weights * nll).sum() / item_weights.sum())


def epoch_metrics(labels: np.ndarray, pred: np.ndarray, nll: np.ndarray, class_weights: np.ndarray) -> EpochMetrics:
    """Loss = sum_i w[y_i] nll_i / sum_i w[y_i] (torch's weighted nll_loss), and everything beside it."""
    n_classes = len(class_weights)
    item_weights = class_weights[labels]
    total_weight = item_weights.sum()
    weighted_nll = item_weights * nll
    # np.bincount, not sklearn.metrics.confusion_matrix: importing scikit-learn takes ~0.7 s, more than the whole
    # analysis of a typical run; the tests check equality with confusion_matrix(labels=range(C)).
    matrix = np.bincount(labels * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    diagonal = np.diag(matrix)
    class_nll = np.bincount(labels, weights=nll, minlength=n_classes)
    class_share = np.bincount(labels, weights=weighted_nll, minlength=n_classes) / total_weight
    correct = pred == labels
    per_class = tuple(
        ClassMetrics(
            support=int(support[c]),
            loss=float(class_nll[c] / support[c]) if support[c] else None,
            loss_share=float(class_share[c]),
            precision=float(diagonal[c] / predicted[c]) if predicted[c] else None,
            recall=float(diagonal[c] / support[c]) if support[c] else None,
        )
        for c in range(n_classes)
    )
    return EpochMetrics(
        n_samples=int(len(labels)),
        loss=weighted_loss(labels, nll, class_weights),
        accuracy=float(correct.mean()),
        confusion=matrix,
        per_class=per_class,
    )


def macro_f1_from_counts(true_positives: np.ndarray, support: np.ndarray, predicted: np.ndarray,
                         counted: np.ndarray) -> np.ndarray:
    """Macro F1 over the `counted` classes: mean of 2 TP_c / (n_c + predicted_c), 0 where that is 0/0.

    Equals sklearn's f1_score(labels=counted classes, average="macro", zero_division=0); written on
    counts so that one confusion matrix, or a (resamples, C) stack of bootstrap counts, gives it directly.
    """
    denominator = support + predicted
    f1 = np.divide(2.0 * true_positives, denominator, out=np.zeros(np.shape(denominator)), where=denominator > 0)
    return f1[..., counted].mean(axis=-1)


def macro_f1_score(confusion: np.ndarray) -> float:
    """Macro F1 from a confusion matrix (rows true), over the classes that have items."""
    support = confusion.sum(axis=1)
    return float(macro_f1_from_counts(np.diag(confusion), support, confusion.sum(axis=0), support > 0))
