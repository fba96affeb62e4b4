"""Train mode against eval mode on the validation set, for the two epochs the verdict compares (the passes come
from evaluate.mode_check): the loss with dropout active and BatchNorm on batch statistics, and the loss in eval mode
after BatchNorm's running statistics were recomputed on the training subset.

A training log whose validation loss is the train-mode loss was computed without model.eval(); recomputed
statistics that lower the later epoch's loss more than the earlier one's remove part of the rise: for items i,
a_i = w[y_i], the part removed is sum_i a_i (d nll_i - d nll'_i) / sum_i a_i, d the change between the epochs and
nll' the recomputed-statistics NLL, with a paired bootstrap interval over the validation units.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bootstrap import ColumnSums, Interval, resample_totals
from .metrics import weighted_loss

__all__ = ["ModeComparison", "ModeAnalysis", "TrainModeMatch", "analyze_modes", "match_train_mode"]


@dataclass(frozen=True)
class ModeComparison:
    """One epoch's validation loss in eval mode (as the report computes it), in train mode (one per seeded pass),
    and in eval mode with BatchNorm statistics recomputed on the training subset (None where not measured)."""

    epoch_index: int
    layers: str                               # what differs in train mode ('' when nothing does)
    eval_loss: float
    train_mode_losses: tuple[float, ...]
    recalibrated_loss: float | None

    @property
    def train_mode_loss(self) -> float | None:
        """The mean over the seeded train-mode passes."""
        return float(np.mean(self.train_mode_losses)) if self.train_mode_losses else None

    @property
    def train_mode_spread(self) -> float:
        """Half the range of the train-mode passes: how far one pass may fall from their mean."""
        losses = self.train_mode_losses
        return (max(losses) - min(losses)) / 2 if losses else 0.0


@dataclass(frozen=True)
class ModeAnalysis:
    """The compared epochs' mode comparisons, and the part of the rise between them that recomputing BatchNorm's
    statistics removes (None without BatchNorm layers or a training subset)."""

    epochs: tuple[ModeComparison, ...]
    recalibration_removes: Interval | None
    recalibration_share: Interval | None

    def at(self, epoch_index: int) -> ModeComparison | None:
        return next((e for e in self.epochs if e.epoch_index == epoch_index), None)


def analyze_modes(labels: np.ndarray, groups: np.ndarray, class_weights: np.ndarray, records, passes,
                  from_index: int, to_index: int) -> ModeAnalysis:
    """Mode comparisons of the epochs in `passes` (evaluate.mode_check.ModePasses) against their eval-mode
    `records`, and the recomputed statistics' part of the rise from_index -> to_index."""
    epochs = tuple(ModeComparison(
        p.epoch_index, p.layers, weighted_loss(labels, records[p.epoch_index].nll, class_weights),
        tuple(weighted_loss(labels, r.nll, class_weights) for r in p.train_mode),
        None if p.recalibrated is None else weighted_loss(labels, p.recalibrated.nll, class_weights))
        for p in passes)
    by_index = {p.epoch_index: p for p in passes}
    before, after = by_index.get(from_index), by_index.get(to_index)
    if before is None or after is None or before.recalibrated is None or after.recalibrated is None \
            or from_index == to_index:
        return ModeAnalysis(epochs, None, None)
    a = class_weights[labels]
    change = records[to_index].nll - records[from_index].nll
    recalibrated_change = after.recalibrated.nll - before.recalibrated.nll

    def build(columns: ColumnSums) -> None:
        columns.add("weight", a)
        columns.add("change", a * change)
        columns.add("removed", a * (change - recalibrated_change))

    totals = resample_totals(groups, build)
    with np.errstate(invalid="ignore", divide="ignore"):
        removed = totals["removed"] / totals["weight"]
        share = totals["removed"] / totals["change"]
    return ModeAnalysis(epochs, totals.interval(removed), totals.interval(share))


@dataclass(frozen=True)
class TrainModeMatch:
    """A logged validation loss beside the train-mode loss at one epoch: whether it is that loss (within `allowed`)
    and not the eval-mode one."""

    epoch: int
    logged: float
    eval_loss: float
    train_mode_loss: float
    allowed: float
    matches: bool


def match_train_mode(logged: dict[int, float], epochs: tuple[int, ...], modes: ModeAnalysis, spreads: float,
                     relative_tolerance: float) -> tuple[TrainModeMatch, ...]:
    """The measured epochs with a logged validation loss (`logged`: epoch number -> value; `epochs`: the number of
    each epoch index), each compared with its train-mode loss: a match lies within max(spreads x the passes' spread,
    relative_tolerance x the train-mode loss) of it, and differs from the eval-mode loss by more than
    relative_tolerance. Empty where nothing was measured in train mode."""
    found = []
    for comparison in modes.epochs:
        number = epochs[comparison.epoch_index]
        if number not in logged or comparison.train_mode_loss is None:
            continue
        value, train = logged[number], comparison.train_mode_loss
        allowed = max(spreads * comparison.train_mode_spread, relative_tolerance * train)
        found.append(TrainModeMatch(number, value, comparison.eval_loss, train, allowed,
                                    abs(value - train) <= allowed
                                    and abs(value - comparison.eval_loss) > relative_tolerance * comparison.eval_loss))
    return tuple(found)
