"""Which checkpoint to pick: the best epoch by each criterion, with all criteria side by side."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["CRITERIA", "CheckpointCandidate", "CheckpointChoice", "checkpoint_choice"]

# (column of the epoch table, direction, what the row is called); earliest epoch wins a tie.
CRITERIA = (
    ("loss", "min", "lowest loss"),
    ("accuracy", "max", "highest accuracy"),
    ("macro_f1_score", "max", "highest macro F1"),
    ("expected_calibration_error", "min", "lowest ECE"),
    ("scaled_loss", "min", "lowest loss after temperature scaling"),
)


@dataclass(frozen=True)
class CheckpointCandidate:
    """The epoch one criterion picks, with every criterion's value at that epoch."""

    criterion: str
    index: int
    epoch: int
    checkpoint: str
    loss: float
    accuracy: float
    macro_f1_score: float
    expected_calibration_error: float
    scaled_loss: float


@dataclass(frozen=True)
class CheckpointChoice:
    """One row per criterion, in CRITERIA order."""

    rows: tuple[CheckpointCandidate, ...]

    def index_by(self, criterion: str) -> int:
        """Epoch index picked by a criterion named as in CRITERIA's last field."""
        return next(row.index for row in self.rows if row.criterion == criterion)


def checkpoint_choice(epoch_table: Mapping[str, Sequence]) -> CheckpointChoice:
    """Best epoch per criterion from per-epoch columns (a dict of sequences, or the epoch_table() DataFrame
    with its RangeIndex) holding CRITERIA's columns, 'epoch' and 'checkpoint'. NaN never wins; the earliest
    epoch wins a tie (numpy's arg-min/max return the first, as pandas' idxmin/idxmax do)."""
    columns = {name: np.asarray(epoch_table[name]) for name in ("epoch", "checkpoint", *(c for c, _, _ in CRITERIA))}
    rows = []
    for column, direction, name in CRITERIA:
        values = columns[column].astype(float)
        index = int(np.nanargmin(values) if direction == "min" else np.nanargmax(values))
        rows.append(CheckpointCandidate(
            criterion=name, index=index, epoch=int(columns["epoch"][index]), checkpoint=str(columns["checkpoint"][index]),
            **{c: float(columns[c][index]) for c, _, _ in CRITERIA},
        ))
    return CheckpointChoice(tuple(rows))
