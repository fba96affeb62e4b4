"""The comparison every rule and the verdict read, computed once: two epochs (the lowest-loss and the last by
default, any pair on request), whether the loss rose beyond noise, the label-error candidates, and the
attribution ledger on one set of paired resamples."""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from ..analyze.candidates import ItemCandidates, label_issue_candidates
from ..analyze.ledger import AttributionLedger, attribution_ledger
from ..analyze.modes import ModeAnalysis
from ..analyze.run import RunAnalysis
from ..analyze.training import TrainingComparison, compare_training
from .config import DiagnosisConfig

__all__ = ["Status", "Comparison", "compare"]


class Status(str, enum.Enum):
    """What the loss did between the two epochs compared."""

    RISE = "rise"
    """The loss rose and its bootstrap interval excludes 0."""
    NO_RISE = "no_rise"
    """The loss did not rise (it is lowest at the later epoch, or fell)."""
    UNRESOLVED = "unresolved"
    """The loss rose, but its interval includes 0: more validation items are needed to tell."""


@dataclass(frozen=True)
class Comparison:
    """Epoch `from_index` -> `to_index` (indices into analysis.epochs), with everything measured between them."""

    from_index: int
    to_index: int
    from_epoch: int
    to_epoch: int
    loss_from: float
    loss_to: float
    status: Status
    ledger: AttributionLedger
    candidates: ItemCandidates
    training: TrainingComparison | None = None     # the training subset between the same epochs, when given
    modes: ModeAnalysis | None = None              # train mode against eval mode at these epochs, when measured

    @property
    def relative_change(self) -> float:
        return (self.loss_to - self.loss_from) / self.loss_from if self.loss_from > 0 else 0.0

    @property
    def scale_to_resolve(self) -> float | None:
        """How many times more units (items or groups) would put a rise this size beyond noise: the interval's
        lower half-width shrinks as 1/sqrt(n), so n' / n = ((estimate - low) / estimate)^2. None when nothing rose."""
        change = self.ledger.loss_change
        if not change.estimate > 0 or not math.isfinite(change.low):
            return None
        return ((change.estimate - change.low) / change.estimate) ** 2

    def resolution_text(self, n_items: int) -> str:
        """'not resolved with n = 140 items (in 28 groups); roughly 320 items (64 groups) would resolve ...'."""
        totals = self.ledger.totals
        grouped = totals.resampled_unit == "groups"
        text = f"not resolved with n = {n_items} items" + (f" (in {totals.n_units} groups)" if grouped else "")
        scale = self.scale_to_resolve
        if scale is None:
            return text
        return (text + f"; roughly {math.ceil(n_items * scale)} items"
                + (f" ({math.ceil(totals.n_units * scale)} groups)" if grouped else "")
                + " would resolve a change this size")


def _status(from_index: int, to_index: int, ledger: AttributionLedger) -> Status:
    change = ledger.loss_change
    if from_index == to_index or change.estimate <= 0:
        return Status.NO_RISE
    return Status.RISE if change.above_zero else Status.UNRESOLVED


def compare(analysis: RunAnalysis, config: DiagnosisConfig, from_index: int | None = None,
            to_index: int | None = None, modes: ModeAnalysis | None = None) -> Comparison:
    """The comparison of two epochs: by default the lowest-loss epoch against the last one; the training side
    follows the ledger's confusion pairs and the classes whose recall fell beyond noise."""
    from_index = analysis.best_loss_index if from_index is None else from_index
    to_index = len(analysis.epochs) - 1 if to_index is None else to_index
    records = analysis.records
    candidates = label_issue_candidates(analysis.labels, records, to_index, len(analysis.classes),
                                        config.candidate_window, config.candidate_min_confidence)
    ledger = attribution_ledger(analysis.labels, analysis.groups, analysis.class_weights, records[from_index],
                                records[to_index], from_index, to_index, candidates=candidates)
    training = None
    if analysis.training is not None:
        pairs = tuple((k.true_class, k.predicted_class) for k in ledger.confusions)
        fallen = tuple(k for k, recall in enumerate(ledger.recall_changes) if recall is not None and recall.below_zero)
        training = compare_training(analysis.training, analysis.labels, analysis.class_weights[analysis.labels],
                                    analysis.groups, records, from_index, to_index, pairs, fallen)
    return Comparison(from_index, to_index, analysis.epochs[from_index].epoch, analysis.epochs[to_index].epoch,
                      analysis.epochs[from_index].metrics.loss, analysis.epochs[to_index].metrics.loss,
                      _status(from_index, to_index, ledger), ledger, candidates, training, modes)
