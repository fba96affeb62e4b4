"""The learning rate over the evaluated epochs, and its events: drops, rises after a decline, warm-up.

Read from each checkpoint's training setup (load.training_setup): the lr each param group held when the checkpoint
was saved. Events are judged between consecutive evaluated checkpoints, on the change relative to the larger value,

    r = (lr_after - lr_before) / max(lr_before, lr_after)        in [-1, 1]

so that a fall to a tenth (r = -0.9) and a rise tenfold (r = +0.9) weigh the same. A step counts when |r| reaches
`min_change` (DiagnosisConfig.min_lr_change) in some param group: a fall is a DROP (step decay, a plateau
reduction, annealing); a rise is a RESTART when that group's lr had already declined from its peak by at least
`min_change` (relative to the peak: warm restarts, cycles), else WARMUP. Consecutive steps of one kind are merged
into one event spanning them (a warm-up over five epochs is one event).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from ..load.training_setup import TrainingSetup

__all__ = ["LearningRateSeries", "LrEventKind", "LrEvent", "learning_rate_series", "lr_events", "relative_change"]


@dataclass(frozen=True)
class LearningRateSeries:
    """Each evaluated epoch's learning rate per param group: `rates[i, g]` is group g's lr at checkpoint i (NaN
    where that checkpoint saved none, or has fewer groups); `epochs` the epoch numbers, in training order."""

    epochs: np.ndarray
    rates: np.ndarray

    @property
    def known(self) -> bool:
        """Whether any checkpoint saved a learning rate."""
        return bool(np.isfinite(self.rates).any())

    @property
    def n_groups(self) -> int:
        return int(self.rates.shape[1])

    @property
    def spans_decades(self) -> bool:
        """Whether the positive rates span a factor of 10 or more (the figure then draws them on a log scale)."""
        positive = self.rates[np.isfinite(self.rates) & (self.rates > 0)]
        return bool(positive.size) and float(positive.max()) >= 10 * float(positive.min())


class LrEventKind(str, Enum):
    DROP = "drop"          # the lr fell (step decay, ReduceLROnPlateau, the tail of an annealing schedule)
    RESTART = "restart"    # the lr rose after an earlier decline (warm restarts, cyclic schedules)
    WARMUP = "warmup"      # the lr rose with no decline before it (warm-up)


@dataclass(frozen=True)
class LrEvent:
    """A change of the learning rate between checkpoints `from_index` and `to_index` (indices into the evaluated
    epochs; epochs `from_epoch`, `to_epoch`): each group's lr before and after, the relative change r of the group
    that moved most (signed), and the groups whose change reached the threshold."""

    kind: LrEventKind
    from_index: int
    to_index: int
    from_epoch: int
    to_epoch: int
    lr_before: tuple[float, ...]
    lr_after: tuple[float, ...]
    relative_change: float
    groups: tuple[int, ...]


def relative_change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """r = (after - before) / max(before, after); 0 where both are 0."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    larger = np.maximum(before, after)
    return np.divide(after - before, larger, out=np.zeros(np.broadcast(before, after).shape), where=larger > 0)


def learning_rate_series(epochs: Sequence[int], setups: Sequence[TrainingSetup | None]) -> LearningRateSeries:
    """The lr per param group at each checkpoint, from its training setup (NaN where it saved none)."""
    rates = [(s.learning_rates if s is not None else None) or () for s in setups]
    table = np.full((len(setups), max((len(r) for r in rates), default=0)), np.nan)
    for i, row in enumerate(rates):
        table[i, :len(row)] = row
    return LearningRateSeries(epochs=np.asarray(epochs, dtype=np.int64), rates=table)


def _step_kinds(series: LearningRateSeries, min_change: float) -> list[dict[LrEventKind, list[int]]]:
    """For each step i -> i+1 between checkpoints, the groups whose lr changed by |r| >= min_change, by kind."""
    rates = series.rates
    steps: list[dict[LrEventKind, list[int]]] = []
    peak = np.full(series.n_groups, np.nan)
    for i in range(len(rates) - 1):
        before, after = rates[i], rates[i + 1]
        peak = np.fmax(peak, before)
        both = np.isfinite(before) & np.isfinite(after)
        r = np.where(both, relative_change(np.nan_to_num(before), np.nan_to_num(after)), 0.0)
        declined = relative_change(np.nan_to_num(peak), np.nan_to_num(before)) <= -min_change
        kinds: dict[LrEventKind, list[int]] = {}
        for g in np.flatnonzero(np.abs(r) >= min_change):
            kind = LrEventKind.DROP if r[g] < 0 else (LrEventKind.RESTART if declined[g] else LrEventKind.WARMUP)
            kinds.setdefault(kind, []).append(int(g))
        steps.append(kinds)
    return steps


def lr_events(series: LearningRateSeries, min_change: float) -> tuple[LrEvent, ...]:
    """The learning-rate events between consecutive checkpoints (module doc), in training order; consecutive steps
    of one kind merge into one event from the first step's checkpoint to the last one's."""
    spans: list[tuple[LrEventKind, int, int, set[int]]] = []
    for i, kinds in enumerate(_step_kinds(series, min_change)):
        for kind, groups in kinds.items():
            last = spans[-1] if spans else None
            if last is not None and last[0] is kind and last[2] == i:
                spans[-1] = (kind, last[1], i + 1, last[3] | set(groups))
            else:
                spans.append((kind, i, i + 1, set(groups)))
    events = []
    for kind, start, end, groups in sorted(spans, key=lambda span: (span[1], span[2])):
        before, after = series.rates[start], series.rates[end]
        changes = relative_change(np.nan_to_num(before), np.nan_to_num(after))
        moved = sorted(groups)
        largest = moved[int(np.argmax(np.abs(changes[moved])))]
        events.append(LrEvent(kind=kind, from_index=start, to_index=end, from_epoch=int(series.epochs[start]),
                              to_epoch=int(series.epochs[end]),
                              lr_before=tuple(float(v) for v in before[np.isfinite(before)]),
                              lr_after=tuple(float(v) for v in after[np.isfinite(after)]),
                              relative_change=float(changes[largest]), groups=tuple(moved)))
    return tuple(events)
