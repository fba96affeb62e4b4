"""The one input every renderer reads (figures, HTML, PDF, markdown), built once in pipeline.py.

Why one object: the renderers used to take the evaluation, the analysis and a dozen loose arguments each;
this names what a report is drawn from, so HTML, PDF and markdown cannot disagree about it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from ..analyze.reconcile import LossReconciliation
    from ..analyze.run import RunAnalysis
    from ..analyze.schedule import LrEvent
    from ..diagnose import Comparison, Finding, Verdict
    from ..evaluate.runner import NonFiniteEpoch, Skipped
    from ..load.discovery import UnreadFile

__all__ = ["CheckpointRow", "TrainLogComparison", "RenderInput"]


@dataclass(frozen=True)
class CheckpointRow:
    """One analysed checkpoint's provenance: file name, epoch, first 16 hex digits of its sha256, outputs."""

    checkpoint: str
    epoch: int
    sha256: str
    output_kind: str


@dataclass(frozen=True)
class TrainLogComparison:
    """A training log given or found: where it came from, its table (for the loss curve), the column that
    matches the checkpoints' numbers ("epoch" or "step"), and the logged-vs-recomputed comparison (None when
    the log has no validation loss for these checkpoints)."""

    source: str
    table: "pd.DataFrame"
    key: str
    reconciliation: "LossReconciliation | None"


@dataclass(frozen=True)
class RenderInput:
    """Everything a report is drawn from: the analysis, diagnose's findings, verdict and comparison (whose ledger
    holds the intervals the evidence tables print) and learning-rate events, and what the evaluation left to say."""

    run_name: str
    generated: str                                 # "YYYY-MM-DD HH:MM", the same in every file of one report
    paper: str                                     # "a4" or "letter"
    analysis: "RunAnalysis"
    findings: "tuple[Finding, ...]"
    verdict: "Verdict"
    comparison: "Comparison"
    class_labels: tuple[str, ...]
    colours: tuple[str, ...]                       # one per class, the same in every figure and table
    n_items: int                                   # counted validation items
    checkpoints: tuple[CheckpointRow, ...]         # one per analysed epoch, in training order
    provenance: tuple[tuple[str, str], ...]        # (name, value) rows
    skipped: "tuple[Skipped, ...]"
    nonfinite: "tuple[NonFiniteEpoch, ...]"
    notes: tuple[str, ...]
    train_log: TrainLogComparison | None
    lr_events: "tuple[LrEvent, ...]" = ()           # diagnosis.lr_events: shaded on the loss curve, listed in the
                                                   # training setup
    unread: "tuple[UnreadFile, ...]" = ()         # files of the checkpoint folders not read, and what each is
