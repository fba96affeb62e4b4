"""Which checkpoint to pick: the best epoch by each criterion, with all criteria side by side."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

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


def checkpoint_choice(epoch_table: pd.DataFrame) -> CheckpointChoice:
    """Best epoch per criterion from a table with one row per epoch (RangeIndex) and CRITERIA's columns."""
    rows = []
    for column, direction, name in CRITERIA:
        index = int(epoch_table[column].idxmin() if direction == "min" else epoch_table[column].idxmax())
        row = epoch_table.loc[index]
        rows.append(CheckpointCandidate(
            criterion=name, index=index, epoch=int(row["epoch"]), checkpoint=str(row["checkpoint"]),
            **{c: float(row[c]) for c, _, _ in CRITERIA},
        ))
    return CheckpointChoice(tuple(rows))
