"""Everything the report needs from an evaluation, computed once: per-epoch metrics and summaries."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import EpochMetrics, epoch_metrics

__all__ = ["EpochView", "RunAnalysis", "analyze_run", "analyze_epochs", "confidence_histogram", "HISTOGRAM_BINS"]

HISTOGRAM_BINS = 10


@dataclass(frozen=True)
class EpochView:
    """One epoch as the later stages see it: identity, headline metrics and confidence histograms."""

    checkpoint: str
    epoch: int
    metrics: EpochMetrics
    hist_correct: np.ndarray       # counts of correct predictions per confidence bin
    hist_wrong: np.ndarray         # counts of wrong predictions per confidence bin
    temperature: float
    scaled_loss: float


@dataclass(frozen=True)
class RunAnalysis:
    """Per-epoch views in training order, with the indices of the notable epochs."""

    classes: tuple[str, ...]
    class_weights: np.ndarray
    epochs: tuple[EpochView, ...]
    best_loss_index: int
    best_accuracy_index: int

    @property
    def losses(self) -> np.ndarray:
        return np.array([e.metrics.loss for e in self.epochs])

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([e.metrics.accuracy for e in self.epochs])

    @property
    def loss_shares(self) -> np.ndarray:
        """(epochs, classes) additive parts of each epoch's loss."""
        return np.array([[c.loss_share for c in e.metrics.per_class] for e in self.epochs])


def confidence_histogram(confidence: np.ndarray, mask: np.ndarray, n_bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Counts of the masked items' confidences in equal-width bins over [0, 1] (last bin closed)."""
    return np.histogram(confidence[mask], bins=n_bins, range=(0.0, 1.0))[0].astype(np.int64)


def analyze_epochs(labels: np.ndarray, epochs: list, class_names: tuple[str, ...],
                   class_weights: np.ndarray) -> RunAnalysis:
    """Metrics and histograms for each evaluated epoch (records in training order)."""
    views = []
    for evaluated in epochs:
        r = evaluated.records
        correct = r.pred == labels
        views.append(EpochView(
            checkpoint=evaluated.checkpoint,
            epoch=evaluated.epoch,
            metrics=epoch_metrics(labels, r.pred, r.nll, r.confidence, r.sum_sq_prob, class_weights),
            hist_correct=confidence_histogram(r.confidence, correct),
            hist_wrong=confidence_histogram(r.confidence, ~correct),
            temperature=r.temperature,
            scaled_loss=r.scaled_loss,
        ))
    losses = np.array([v.metrics.loss for v in views])
    accuracies = np.array([v.metrics.accuracy for v in views])
    return RunAnalysis(
        classes=tuple(class_names),
        class_weights=class_weights,
        epochs=tuple(views),
        best_loss_index=int(np.argmin(losses)),
        best_accuracy_index=int(np.argmax(accuracies)),
    )


def analyze_run(evaluation, class_names: tuple[str, ...]) -> RunAnalysis:
    """All analyses of an evaluation (items, epochs in training order, class weights)."""
    return analyze_epochs(evaluation.items.labels, evaluation.epochs, class_names, evaluation.class_weights)
