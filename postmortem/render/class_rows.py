"""Which classes a per-class table or bar figure lists, and the one row that stands for the others.

Up to MAX_LISTED_CLASSES classes every class is listed, in label order. Above, the MAX_LISTED_CLASSES with the
largest |value| (an epoch's loss share, a class's part of dL) are listed, largest first, and the others are folded
into one row of their sums: 1,000 classes made each per-class table 1,000 rows (the key epochs' tables and the
class-share table were 0.6 MB of a 1.8 MB report.html) that no one reads past the first screen.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_LISTED_CLASSES", "ClassRows", "class_rows", "folded_label", "folded_loss"]

MAX_LISTED_CLASSES = 50


@dataclass(frozen=True)
class ClassRows:
    """The classes listed (class indices, in the order shown) and those folded into one row (ascending)."""

    shown: tuple[int, ...]
    folded: np.ndarray

    @property
    def n_folded(self) -> int:
        return len(self.folded)


def class_rows(values: np.ndarray, limit: int = MAX_LISTED_CLASSES) -> ClassRows:
    """Every class in label order up to `limit` classes; above, the `limit` with the largest |value| (NaN counts as
    0), largest first (ties in label order), and the rest folded."""
    n = len(values)
    if n <= limit:
        return ClassRows(tuple(range(n)), np.zeros(0, dtype=np.int64))
    order = np.argsort(-np.abs(np.nan_to_num(np.asarray(values, dtype=np.float64))), kind="stable")
    return ClassRows(tuple(int(c) for c in order[:limit]), np.sort(order[limit:]))


def folded_label(rows: ClassRows) -> str:
    return f"other ({rows.n_folded} classes)"


def folded_loss(metrics, rows: ClassRows) -> float | None:
    """The mean NLL of the folded classes' items at one epoch (EpochMetrics): their classes' losses weighted by
    support; None when they have no items."""
    support = metrics.support[rows.folded]
    counted = support > 0
    total = int(support[counted].sum())
    return float(metrics.class_loss[rows.folded][counted] @ support[counted] / total) if total else None
