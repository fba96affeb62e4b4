"""Findings: what a rule concluded, with the numbers behind it and what to try next."""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Severity", "FindingKind", "FigureAnchor", "Finding", "finding_to_json"]


class Severity(str, enum.Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class FindingKind(str, enum.Enum):
    """Every finding a rule can report; the value is the finding's id in metrics.json and the report."""

    NLL_OVERFIT_ACCURACY_HOLDS = "nll_overfit_accuracy_holds"
    """The symptom: the loss rose beyond its interval after its minimum while accuracy held or rose."""
    OVERCONFIDENCE = "overconfidence"
    """Calibration counts (scaling removes part of the rise beyond noise) and the fitted T rose above 1."""
    GENUINE_DEGRADATION = "genuine_degradation"
    """The scaled loss rose beyond its own interval, or macro F1 fell beyond its interval: real overfitting."""
    CLASS_WEIGHT_AMPLIFICATION = "class_weight_amplification"
    """The class weights add to the rise beyond noise (the unweighted loss rose less, did not rise, or fell)."""
    CLASS_COLLAPSE = "class_collapse"
    """A class's recall fell beyond its interval while accuracy held."""
    LEARNED_CONFUSION = "learned_confusion"
    """The share of a class's items predicted as another grew beyond its interval and carries the rise."""
    CLASS_UNDERREPRESENTED = "class_underrepresented"
    """A class's validation items drift to a neighbour and its training items do too, with clean training labels."""
    MEMORISED_TRAINING_LABELS = "memorised_training_labels"
    """Training-subset items placed in another class over the epochs (AUM < 0) that the model fits by the end."""
    TRAIN_VALIDATION_LEAKAGE = "train_validation_leakage"
    """Validation items duplicate training-subset items (same inputs, or the same outputs at every epoch)."""
    BATCHNORM_STATISTICS = "batchnorm_statistics"
    """Recomputing BatchNorm's running statistics on the training subset removes part of the rise."""
    VALIDATION_LABEL_ERRORS = "validation_label_errors"
    """Label-error candidates carry most of the rise while the other items' loss did not rise."""
    PERSISTENT_ERRORS = "persistent_errors"
    """Items confidently and stably wrong over the last epochs that do not explain the rise: audit them."""
    CONFIDENT_ERRORS_DOMINATE = "confident_errors_dominate"
    """Items wrong at the later epoch (correct->wrong and wrong->wrong) carry most of the loss rise."""
    CLASS_CONCENTRATION = "class_concentration"
    """One or a few classes carry most of the loss rise, far beyond their share of the items."""
    LOGIT_GROWTH = "logit_growth"
    """Median logit norm and absolute margin grew over the rise while predictions flipped less."""
    RISE_AFTER_LR_EVENT = "rise_after_lr_event"
    """The rise begins within a few checkpoints after a learning-rate drop, restart or warm-up."""
    NOISE = "noise"
    """The loss rose but its interval includes 0: not resolved with this many items."""
    LOGGED_LOSS_MISMATCH = "logged_loss_mismatch"
    """The validation loss in the training log differs from the loss recomputed from the checkpoints."""


class FigureAnchor(str, enum.Enum):
    """The report's figures and evidence tables, by the anchor a finding links to (named once, here)."""

    CURVES = "fig-curves"
    DECOMPOSITION = "fig-decomposition"
    LOSS_SHARES = "fig-loss-shares"
    CALIBRATION = "fig-calibration"
    RELIABILITY = "fig-reliability"
    CONFIDENCE = "fig-confidence"
    CONFUSION = "fig-confusion"
    FLOW = "fig-flow"
    LOGITS = "fig-logits"
    CONFIDENT_ERRORS = "fig-confident-errors"
    CHOICE = "fig-choice"
    TRAIN_LOG = "fig-train-log"
    TRAINING = "training-subset"
    TRAINING_SETUP = "fig-training-setup"


@dataclass(frozen=True)
class Finding:
    """One ranked conclusion. `evidence` maps names to numbers; `thresholds` the limits they were held to.

    `figure` is the id of the figure that shows the evidence; `item_ids` the validation items it names.
    """

    id: str
    severity: Severity
    score: float
    title: str
    summary: str
    classes: tuple[str, ...] = ()
    evidence: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    next_steps: tuple[str, ...] = ()
    figure: FigureAnchor | None = None
    item_ids: tuple[str, ...] = ()


def _number(value: float) -> float | None:
    """JSON has no NaN or inf: such values are written as null."""
    return float(value) if math.isfinite(value) else None


def finding_to_json(finding: Finding) -> dict[str, Any]:
    """The metrics.json form of a finding (schema_version 1; `item_ids` added without breaking readers)."""
    return {
        "id": finding.id,
        "severity": finding.severity.value,
        "title": finding.title,
        "summary": finding.summary,
        "classes": list(finding.classes),
        "evidence": {k: _number(v) for k, v in finding.evidence.items()},
        "thresholds": {k: _number(v) for k, v in finding.thresholds.items()},
        "next_steps": list(finding.next_steps),
        "figure": None if finding.figure is None else finding.figure.value,
        "item_ids": list(finding.item_ids),
    }
