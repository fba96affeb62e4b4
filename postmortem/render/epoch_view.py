"""The per-epoch view's data: every epoch's confusion matrix, confidence histograms, reliability bins and
per-class table as one compact document, which templates/epoch_view.js draws under a slider.

Why data, not markup: 30 epochs of static tables made 2.3 MB of a 30 x 20,000 x 20 report; the same numbers
as JSON are a few percent of that and let one panel step through the epochs. Above FOLD_ABOVE classes the
matrix shows the classes that carry the most loss and folds the rest into one "other" row and column (the
static key-epoch tables use the same fold, so print and screen agree). Above class_rows.MAX_LISTED_CLASSES
classes the per-class table lists, at each epoch, the classes with the largest loss share there, largest first,
and one row for the others (class_rows).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .class_rows import class_rows, folded_label, folded_loss

__all__ = ["FOLD_ABOVE", "MatrixFold", "matrix_fold", "epoch_view_data"]

FOLD_ABOVE = 20                 # classes a confusion matrix shows in full; above, FOLD_ABOVE - 1 and "other"


@dataclass(frozen=True)
class MatrixFold:
    """Which classes a confusion matrix shows (class indices, in label order) and how many are folded."""

    shown: tuple[int, ...]
    n_folded: int

    def labels(self, class_labels: Sequence[str]) -> list[str]:
        names = [class_labels[c] for c in self.shown]
        return names + [f"other ({self.n_folded} classes)"] if self.n_folded else names

    def apply(self, confusion) -> np.ndarray:
        """The matrix (analyze.metrics.ConfusionCounts) over the shown classes, the folded ones summed into a last
        row and column."""
        if not self.n_folded:
            return confusion.dense()
        group = np.full(confusion.n_classes, len(self.shown))
        group[list(self.shown)] = np.arange(len(self.shown))
        return confusion.folded(group, len(self.shown) + 1)


def matrix_fold(analysis) -> MatrixFold:
    """All classes up to FOLD_ABOVE; above, the FOLD_ABOVE - 1 with the largest mean loss share over the epochs
    (one choice for every epoch, so the slider's rows stay put)."""
    n = len(analysis.classes)
    if n <= FOLD_ABOVE:
        return MatrixFold(tuple(range(n)), 0)
    mean_share = analysis.loss_shares.mean(axis=0)
    keep = np.sort(np.argsort(-mean_share, kind="stable")[:FOLD_ABOVE - 1])
    return MatrixFold(tuple(int(c) for c in keep), n - len(keep))


def _round(value: float | None, digits: int = 4) -> float | None:
    """A number for the page: `digits` decimals; None (null) where undefined."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _rounded(values, digits: int = 4) -> list:
    return [_round(v, digits) for v in values]


def epoch_view_data(analysis, class_labels: Sequence[str], colours: Sequence[str], cell_rgb: str) -> dict[str, Any]:
    """The slider's document (see templates/epoch_view.js for how each field is drawn)."""
    views = analysis.epochs
    fold = matrix_fold(analysis)
    return {
        "epochs": [int(v.epoch) for v in views],
        "checkpoints": [v.checkpoint for v in views],
        "loss": _rounded(v.metrics.loss for v in views),
        "accuracy": _rounded(v.metrics.accuracy for v in views),
        "ece": _rounded(v.calibration.expected_calibration_error for v in views),
        "best": analysis.best_loss_index,
        "cellRgb": cell_rgb,
        "matrix": {"labels": fold.labels(class_labels), "folded": fold.n_folded,
                   "counts": [fold.apply(v.metrics.confusion_counts).ravel().tolist() for v in views]},
        "hist": {"correct": [v.hist_correct.tolist() for v in views], "wrong": [v.hist_wrong.tolist() for v in views]},
        "reliability": {"counts": [v.calibration.reliability.counts.tolist() for v in views],
                        "accuracy": [_rounded(v.calibration.reliability.accuracy, 3) for v in views],
                        "confidence": [_rounded(v.calibration.reliability.mean_confidence, 3) for v in views]},
        **_class_table(views, class_labels, colours),
    }


def _class_table(views, class_labels: Sequence[str], colours: Sequence[str]) -> dict[str, Any]:
    """The per-class table's data: `classes`, `colours` and `support` of the classes it lists, and `perClass`: per
    epoch, the values of its rows. With every class listed, row k is class k; otherwise `classRows` says, per
    epoch, which class (an index into `classes`) each row shows, and gives the folded classes' row."""
    fields = (("loss", "class_loss"), ("share", "loss_share"), ("precision", "precision"), ("recall", "recall"))
    rows = [class_rows(v.metrics.loss_share) for v in views]
    if not rows[0].n_folded:
        return {"classes": list(class_labels), "colours": list(colours), "support": views[0].metrics.support.tolist(),
                "perClass": {name: [_rounded(getattr(v.metrics, field).tolist()) for v in views]
                             for name, field in fields}}
    listed = sorted({c for r in rows for c in r.shown})
    position = {c: k for k, c in enumerate(listed)}
    support = views[0].metrics.support
    return {
        "classes": [class_labels[c] for c in listed], "colours": [colours[c] for c in listed],
        "support": support[listed].tolist(),
        "perClass": {name: [_rounded(getattr(v.metrics, field)[list(r.shown)].tolist()) for v, r in zip(views, rows)]
                     for name, field in fields},
        "classRows": {"shown": [[position[c] for c in r.shown] for r in rows],
                      "other": {"label": folded_label(rows[0]), "support": [int(support[r.folded].sum()) for r in rows],
                                "loss": [_round(folded_loss(v.metrics, r)) for v, r in zip(views, rows)],
                                "share": [_round(float(v.metrics.loss_share[r.folded].sum()))
                                          for v, r in zip(views, rows)]}},
    }
