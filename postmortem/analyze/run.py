"""Everything the report needs from an evaluation, computed once: per-epoch metrics and cross-epoch analyses.

What the renderer reads (all frozen dataclasses or numpy arrays):
    analysis.epochs[i]            EpochView: metrics, macro_f1_score, calibration (EpochCalibration),
                                  logits (LogitSummary), temperature, scaled_loss, calibration_loss
    analysis.epoch_columns()      the per-epoch scalars by name (epoch_table(): the same as a pandas DataFrame)
    analysis.decomposition        LossChangeDecomposition, best-loss epoch -> last epoch
    analysis.step_decompositions  the same for every consecutive pair of epochs
    analysis.class_shares         ClassShares: weight share beside frequency share per class
    analysis.flip_rates           (E-1,) share of predictions that change between consecutive epochs
    analysis.flow                 PredictionFlow, best-loss epoch -> last epoch
    analysis.cartography          Cartography: per-item dynamics over all epochs
    analysis.confident_errors     ConfidentError rows: items wrong at the last epoch, largest part of dL first
    analysis.checkpoint_choice    CheckpointChoice: the best epoch by loss, accuracy, macro F1, ECE, scaled loss
    analysis.training_setups      each epoch's TrainingSetup (load.training_setup), None where it records none
    analysis.learning_rates       LearningRateSeries: the lr per param group per epoch (its events: schedule.lr_events)
    analysis.labels, .groups, .ids, .records   the counted items and each epoch's per-item records, for the
                                  comparisons diagnose draws (ledger.attribution_ledger)
    analysis.training             TrainingAnalysis of the training subset (training.py), or None without one
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .calibration import EpochCalibration, epoch_calibration
from .cartography import Cartography, cartography
from .choice import CheckpointChoice, checkpoint_choice
from .decomposition import (ClassShares, ConfidentError, LossChangeDecomposition, class_shares, confident_errors,
                            decompose_loss_change)
from .dynamics import LogitSummary, PredictionFlow, flip_rate, logit_summary, prediction_flow
from .metrics import EpochMetrics, epoch_metrics, macro_f1_score
from .schedule import LearningRateSeries, learning_rate_series

if TYPE_CHECKING:
    import pandas as pd

    from ..load.training_setup import TrainingSetup
    from .training import TrainingAnalysis

__all__ = ["EpochView", "RunAnalysis", "analyze_run", "analyze_epochs", "confidence_histogram", "HISTOGRAM_BINS"]

HISTOGRAM_BINS = 10


@dataclass(frozen=True)
class EpochView:
    """One epoch as the later stages see it: identity, headline metrics, calibration and logit summaries."""

    checkpoint: str
    epoch: int
    metrics: EpochMetrics
    hist_correct: np.ndarray       # counts of correct predictions per confidence bin
    hist_wrong: np.ndarray         # counts of wrong predictions per confidence bin
    temperature: float             # T fitted on all items
    scaled_loss: float             # L_TS: cross-fitted loss after temperature scaling
    macro_f1_score: float
    calibration: EpochCalibration
    logits: LogitSummary

    @property
    def calibration_loss(self) -> float:
        """L - L_TS: the part of the loss that temperature scaling removes (cross-fitted, so may dip below 0)."""
        return self.metrics.loss - self.scaled_loss


@dataclass(frozen=True)
class RunAnalysis:
    """Per-epoch views in training order, the notable epochs, and the analyses across epochs."""

    classes: tuple[str, ...]
    class_weights: np.ndarray
    epochs: tuple[EpochView, ...]
    best_loss_index: int
    best_accuracy_index: int
    class_shares: ClassShares
    decomposition: LossChangeDecomposition
    step_decompositions: tuple[LossChangeDecomposition, ...]
    flip_rates: np.ndarray
    flow: PredictionFlow
    cartography: Cartography
    confident_errors: tuple[ConfidentError, ...]
    checkpoint_choice: CheckpointChoice
    labels: np.ndarray
    groups: np.ndarray
    ids: np.ndarray
    records: tuple              # EpochRecords per epoch, in training order
    training_setups: tuple[TrainingSetup | None, ...]     # per epoch; None where the checkpoint holds none
    learning_rates: LearningRateSeries
    training: TrainingAnalysis | None = None    # the training subset over the same epochs, when one is given

    @property
    def losses(self) -> np.ndarray:
        return np.array([e.metrics.loss for e in self.epochs])

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([e.metrics.accuracy for e in self.epochs])

    @property
    def loss_shares(self) -> np.ndarray:
        """(epochs, classes) additive parts of each epoch's loss."""
        return np.array([e.metrics.loss_share for e in self.epochs])

    def epoch_columns(self) -> dict[str, list | np.ndarray]:
        """Per-epoch scalars by name, one value per epoch in training order; flip_rate is from the previous epoch."""
        return _epoch_columns(self.epochs, self.flip_rates)

    def epoch_table(self) -> pd.DataFrame:
        """epoch_columns() as a pandas DataFrame, one row per epoch."""
        import pandas as pd   # only here: writing a report needs no pandas, whose import costs 0.3 s

        return pd.DataFrame(self.epoch_columns())


def _epoch_columns(views, flip_rates: np.ndarray) -> dict[str, list | np.ndarray]:
    return {
        "checkpoint": [v.checkpoint for v in views],
        "epoch": [v.epoch for v in views],
        "loss": [v.metrics.loss for v in views],
        "accuracy": [v.metrics.accuracy for v in views],
        "macro_f1_score": [v.macro_f1_score for v in views],
        "expected_calibration_error": [v.calibration.expected_calibration_error for v in views],
        "adaptive_calibration_error": [v.calibration.adaptive_calibration_error for v in views],
        "max_calibration_error": [v.calibration.max_calibration_error for v in views],
        "brier_loss": [v.calibration.brier_loss for v in views],
        "temperature": [v.temperature for v in views],
        "scaled_loss": [v.scaled_loss for v in views],
        "calibration_loss": [v.calibration_loss for v in views],
        "median_logit_norm": [v.logits.median_logit_norm for v in views],
        "median_margin": [v.logits.median_margin for v in views],
        "median_absolute_margin": [v.logits.median_absolute_margin for v in views],
        "flip_rate": np.concatenate([[np.nan], flip_rates]),
    }


def confidence_histogram(confidence: np.ndarray, mask: np.ndarray, n_bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Counts of the masked items' confidences in equal-width bins over [0, 1] (last bin closed)."""
    return np.histogram(confidence[mask], bins=n_bins, range=(0.0, 1.0))[0].astype(np.int64)


def _epoch_view(evaluated, labels: np.ndarray, class_weights: np.ndarray) -> EpochView:
    r = evaluated.records
    correct = r.pred == labels
    metrics = epoch_metrics(labels, r.pred, r.nll, class_weights)
    return EpochView(
        checkpoint=evaluated.checkpoint,
        epoch=evaluated.epoch,
        metrics=metrics,
        hist_correct=confidence_histogram(r.confidence, correct),
        hist_wrong=confidence_histogram(r.confidence, ~correct),
        temperature=r.temperature,
        scaled_loss=r.scaled_loss,
        macro_f1_score=macro_f1_score(metrics.confusion_counts),
        calibration=epoch_calibration(labels, r),
        logits=logit_summary(r.logit_norm, r.margin),
    )


def analyze_epochs(labels: np.ndarray, epochs: list, class_names: tuple[str, ...], class_weights: np.ndarray,
                   ids: np.ndarray | None = None, groups: np.ndarray | None = None) -> RunAnalysis:
    """All analyses of evaluated epochs (training order, each with .records, .epoch, .checkpoint, .training_setup).

    ids default to each item's index, groups to one group per item (bootstraps then resample items).
    """
    ids = np.arange(len(labels)).astype(str) if ids is None else ids
    groups = np.arange(len(labels)) if groups is None else groups
    views = tuple(_epoch_view(evaluated, labels, class_weights) for evaluated in epochs)
    records = [evaluated.records for evaluated in epochs]
    losses = np.array([v.metrics.loss for v in views])
    best, last = int(np.argmin(losses)), len(views) - 1
    flip_rates = np.array([flip_rate(records[i - 1].pred, records[i].pred) for i in range(1, len(records))])
    return RunAnalysis(
        classes=tuple(class_names),
        class_weights=class_weights,
        epochs=views,
        best_loss_index=best,
        best_accuracy_index=int(np.argmax([v.metrics.accuracy for v in views])),
        class_shares=class_shares(labels, class_weights),
        decomposition=decompose_loss_change(labels, class_weights, records[best], records[last], best, last),
        step_decompositions=tuple(decompose_loss_change(labels, class_weights, records[i - 1], records[i], i - 1, i)
                                  for i in range(1, len(records))),
        flip_rates=flip_rates,
        flow=prediction_flow(records[best].pred, records[last].pred, len(class_weights), best, last),
        cartography=cartography(labels, ids, records),
        confident_errors=confident_errors(labels, ids, class_weights, tuple(class_names), records[best], records[last]),
        checkpoint_choice=checkpoint_choice(_epoch_columns(views, flip_rates)),
        labels=labels,
        groups=groups,
        ids=ids,
        records=tuple(records),
        training_setups=tuple(evaluated.training_setup for evaluated in epochs),
        learning_rates=learning_rate_series([v.epoch for v in views], [e.training_setup for e in epochs]),
    )


def analyze_run(evaluation, class_names: tuple[str, ...]) -> RunAnalysis:
    """All analyses of an evaluation (items, epochs in training order, class weights), and of its training subset
    when it has one."""
    items = evaluation.items
    analysis = analyze_epochs(items.labels, evaluation.epochs, class_names, evaluation.class_weights,
                              ids=items.ids, groups=items.groups)
    if evaluation.train is None:
        return analysis
    from dataclasses import replace

    from .training import analyze_training

    training = analyze_training(evaluation.train, items.labels, evaluation.item_weights, items.groups,
                                analysis.records, evaluation.class_weights, items.input_hashes,
                                evaluation.train.items.input_hashes)
    return replace(analysis, training=training)
