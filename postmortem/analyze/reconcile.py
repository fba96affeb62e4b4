"""Compare the validation loss the training loop logged with the one recomputed from the checkpoints.

When they differ, say which reduction of the same per-item losses reproduces the logged numbers. The candidates
are one table of named formulas, CANDIDATES: whole-set reductions (class weights left out, a sum, the weighted sum
over the item count) and the per-batch reductions training loops write, over the validation batches as the data
gave them (Evaluation.batch_sizes: for sequence data, batches of whole dialogues). A candidate whose values come
from elsewhere than the per-item losses (a loss postmortem measured another way, e.g. a train-mode pass) is added
with measured_candidate and passed in `candidates`.

Notation, for one epoch: the items i that count, in batch order, nll_i = -log p_i[y_i] and w_i = w[y_i]; batch b
holds n_b counted items, m_b masked-in positions (mask != 0 whatever the label) and r_b rows (examples or
sequences); W_b = sum_{i in b} w_i; L_b = sum_{i in b} w_i nll_i / W_b is the batch's loss as the loss function
computes it on that batch (nll_loss(weight=w), COSMIC's MaskedNLLLoss) and U_b = sum_{i in b} nll_i / n_b its plain
mean; B batches. Batches where no item counts have no loss and are left out of the per-batch formulas (they need
at least two batches). Weighting each L_b by its W_b gives the recomputed loss itself: that loop is 'exact'.

A candidate reproduces the log when it is within `reproduce_tolerance` relative of every logged value it has a
value for; a log written with few decimals (COSMIC rounds to 4) can only be reproduced to its rounding, so the
tolerance is then at least half a unit of the last decimal over the smallest logged value. A log rounded more
coarsely than a difference that counts (`tolerance`) cannot tell the candidates apart, and none is named. When
none reproduces the log, the closest is said, and the remaining usual causes: the model left in train mode while
validating, different weights (an EMA copy, a log written at another step than the checkpoint), or a different
validation set or preprocessing.
Pure numpy/pandas: runs on an Evaluation (cached records), no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from ..evaluate.records import BatchSizes

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LossReconciliation", "reconcile_logged_loss", "Candidate", "EpochLosses", "BatchLosses", "CANDIDATES",
           "measured_candidate", "MATCH_TOLERANCE", "REPRODUCE_TOLERANCE", "OTHER_CAUSES"]

MATCH_TOLERANCE = 1e-3      # relative: float32 forward passes agree to ~1e-6, so 1e-3 is a real difference
REPRODUCE_TOLERANCE = 1e-6  # relative: a loop's float32 per-batch losses are exact to ~1e-7, while two candidates
                            # differ by 1e-4 or more (the per-batch weightings of the same batches by 1e-3 to 1e-2)
MAX_DECIMALS = 8            # a log whose values all have at most this many decimals is taken as rounded to them
OTHER_CAUSES = ("the model left in train mode while validating (dropout, batch-norm statistics); different "
                "weights (an EMA or averaged copy, or a log written at another step than the checkpoint); "
                "or a different validation set, preprocessing or loss")


@dataclass(frozen=True)
class BatchLosses:
    """One epoch's non-empty batches, in order: each one's loss L_b and plain mean U_b, and its sizes
    (n_b counted items, m_b masked-in positions, r_b rows, W_b weight sum)."""

    loss: np.ndarray
    plain: np.ndarray
    counted: np.ndarray
    masked: np.ndarray
    rows: np.ndarray
    weight: np.ndarray

    def averaged(self, values: np.ndarray, by: np.ndarray | None = None) -> float:
        """sum_b by_b values_b / sum_b by_b (the plain mean without `by`)."""
        return float(np.mean(values) if by is None else (by * values).sum() / by.sum())


@dataclass(frozen=True)
class EpochLosses:
    """What a candidate is computed from, for one matched epoch: its number (the reconciliation's key) and
    checkpoint, the counted items' NLLs and weights in batch order, and the validation batches."""

    epoch: int
    checkpoint: str
    nll: np.ndarray
    weights: np.ndarray
    batches: BatchSizes

    @cached_property
    def per_batch(self) -> BatchLosses | None:
        """The non-empty batches' losses, or None when the batches are unknown or fewer than two hold items."""
        counted = np.asarray(self.batches.counted, dtype=np.int64)
        if len(counted) != len(self.batches.masked) or len(counted) != len(self.batches.rows) \
                or counted.sum() != len(self.nll):
            return None
        used = counted > 0
        if used.sum() < 2:
            return None
        starts = np.concatenate(([0], np.cumsum(counted)[:-1]))[used]
        weight = np.add.reduceat(self.weights, starts)
        n = counted[used].astype(np.float64)
        return BatchLosses(loss=np.add.reduceat(self.weights * self.nll, starts) / weight,
                           plain=np.add.reduceat(self.nll, starts) / n, counted=n,
                           masked=np.asarray(self.batches.masked, dtype=np.float64)[used],
                           rows=np.asarray(self.batches.rows, dtype=np.float64)[used], weight=weight)


def _batch_formula(compute: Callable[[BatchLosses], float]) -> Callable[[EpochLosses], float]:
    """A per-batch formula as a candidate's value: NaN where the batches are unknown."""
    def value(losses: EpochLosses) -> float:
        batches = losses.per_batch
        return math.nan if batches is None else compute(batches)
    return value


@dataclass(frozen=True)
class Candidate:
    """One way a logged validation loss may have been computed: a stable name, what the loop that logs it does,
    its formula (notation of the module doc), and its value for one epoch (NaN where it has none: too few
    batches, or an epoch a measured candidate was not measured at). `per_batch`: it depends on the batches."""

    name: str
    meaning: str
    formula: str
    value: Callable[[EpochLosses], float] = field(repr=False)
    per_batch: bool = False


def _weighted_mean(losses: EpochLosses) -> float:
    return float((losses.weights * losses.nll).sum() / losses.weights.sum())


# The table of candidate reductions. When several reproduce a log, the first one in this order is named.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("exact", "the loss postmortem reports, over all counted items at once (also what a loop logs that "
              "weights each batch's loss by its weight sum, or adds up both sums over the batches and divides "
              "once)", "sum_i w_i*nll_i / sum_i w_i", _weighted_mean),
    Candidate("batch_means_by_count", "the per-batch losses averaged with each batch's number of counted items as "
              "its weight (total += loss.item() * n_b, then total / sum_b n_b; COSMIC's train_meld.py, where n_b is "
              "mask.sum()), whereas the loss weighs a batch by the sum of its class weights",
              "sum_b n_b*L_b / sum_b n_b", _batch_formula(lambda b: b.averaged(b.loss, b.counted)), per_batch=True),
    Candidate("batch_means_by_mask", "the per-batch losses averaged with each batch's mask sum as its weight, "
              "masked-in items whose label is ignore_index included (loss.item() * mask.sum())",
              "sum_b m_b*L_b / sum_b m_b", _batch_formula(lambda b: b.averaged(b.loss, b.masked)), per_batch=True),
    Candidate("batch_means_by_rows", "the per-batch losses averaged with each batch's number of rows (examples, "
              "or sequences such as dialogues) as its weight: the batch size PyTorch Lightning's "
              "self.log(..., on_epoch=True) infers", "sum_b r_b*L_b / sum_b r_b",
              _batch_formula(lambda b: b.averaged(b.loss, b.rows)), per_batch=True),
    Candidate("mean_of_batch_means", "the mean of per-batch mean losses: a batch with fewer counted items (the "
              "last batch, padded sequences) weighs as much as a full one", "(1/B) sum_b L_b",
              _batch_formula(lambda b: b.averaged(b.loss)), per_batch=True),
    Candidate("last_batch", "the last batch's loss alone (a variable overwritten in the loop instead of added up)",
              "L_B", _batch_formula(lambda b: float(b.loss[-1])), per_batch=True),
    Candidate("sum_of_batch_means", "the per-batch losses added up and never divided by the number of batches",
              "sum_b L_b", _batch_formula(lambda b: float(b.loss.sum())), per_batch=True),
    Candidate("unweighted", "the plain mean NLL: the class weights were not applied to the logged loss",
              "sum_i nll_i / n", lambda losses: float(losses.nll.mean())),
    Candidate("mean_of_unweighted_batch_means", "the mean of per-batch plain means: class weights not applied, and "
              "per-batch means averaged", "(1/B) sum_b U_b", _batch_formula(lambda b: b.averaged(b.plain)),
              per_batch=True),
    Candidate("unweighted_batch_means_by_mask", "per-batch plain means (class weights not applied) averaged with "
              "each batch's mask sum as its weight", "sum_b m_b*U_b / sum_b m_b",
              _batch_formula(lambda b: b.averaged(b.plain, b.masked)), per_batch=True),
    Candidate("unweighted_batch_means_by_rows", "per-batch plain means (class weights not applied) averaged with "
              "each batch's number of rows as its weight (Lightning's inferred batch size)",
              "sum_b r_b*U_b / sum_b r_b", _batch_formula(lambda b: b.averaged(b.plain, b.rows)), per_batch=True),
    Candidate("weighted_sum_over_count", "the weighted sum divided by the number of items instead of the sum of "
              "the weights", "sum_i w_i*nll_i / n", lambda losses: float((losses.weights * losses.nll).sum()
                                                                          / len(losses.nll))),
    Candidate("sum", "a sum over the items, not a mean (reduction='sum' without dividing)", "sum_i w_i*nll_i",
              lambda losses: float((losses.weights * losses.nll).sum())),
)


EXACT = CANDIDATES[0]


def measured_candidate(name: str, meaning: str, formula: str, values: Mapping[int, float]) -> Candidate:
    """A candidate whose values postmortem measured apart from the per-item losses (e.g. the loss of a train-mode
    pass over some checkpoints), keyed by epoch (or step: the reconciliation's key); an epoch it has no value for
    is not compared."""
    return Candidate(name, meaning, formula, lambda losses: float(values.get(losses.epoch, math.nan)))


@dataclass(frozen=True)
class LossReconciliation:
    """The logged validation loss beside the recomputed one, per matched epoch, and what reproduces the log.

    rows: DataFrame with the key column (epoch or step), checkpoint, logged_val_loss, recomputed_loss,
    relative_difference (|logged - recomputed| / recomputed), and one column per candidate (by name).
    explanation: 'exact' when every logged value is within `tolerance` of the recomputed one; else the name of the
    first candidate that reproduces the log (see the module doc), or None when none does (see OTHER_CAUSES).
    matching: every candidate that reproduces it; closest, closest_difference: the candidate (other than
    'exact') nearest the log and its largest relative difference. written_decimals: the decimals the log's values
    are rounded to, None when they are not; reproduce_tolerance: the relative difference a candidate was allowed
    (the one asked for, or the log's rounding when that is coarser: `rounded`); resolvable: whether that is within
    `tolerance`. best, best_logged: the key at the lowest recomputed and at the lowest logged loss; best_offset:
    (logged - recomputed) / recomputed at `best`. candidates: those tried, 'exact' among them.
    """

    key: str
    rows: "pd.DataFrame"
    max_relative_difference: float
    n_matched: int
    explanation: str | None
    batch_note: str
    candidates: tuple[Candidate, ...] = ()
    matching: tuple[str, ...] = ()
    closest: str | None = None
    closest_difference: float = math.nan
    tolerance: float = MATCH_TOLERANCE
    reproduce_tolerance: float = REPRODUCE_TOLERANCE
    written_decimals: int | None = None
    rounded: bool = False
    resolvable: bool = True
    best: int | None = None
    best_logged: int | None = None
    best_offset: float = math.nan

    @property
    def agrees(self) -> bool:
        return self.explanation == "exact"

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    @property
    def explained_by(self) -> Candidate | None:
        return None if self.explanation is None else self.candidate(self.explanation)

    def difference(self, name: str) -> float:
        """A candidate's largest relative difference from the logged values (over the epochs it has values for)."""
        return _largest_difference(self.rows[name].to_numpy(float), self.rows["logged_val_loss"].to_numpy(float))

    def n_compared(self, name: str) -> int:
        """The matched epochs a candidate has a value for."""
        return int(np.isfinite(self.rows[name].to_numpy(float)).sum())

    @property
    def precision_text(self) -> str:
        """How closely the log can be reproduced: '1e-06 relative', or the log's decimals."""
        if not self.rounded:
            return f"{self.reproduce_tolerance:.0e} relative"
        decimals = f"{self.written_decimals} decimal{'' if self.written_decimals == 1 else 's'}"
        if not self.resolvable:
            return f"the {decimals} the log is written with, too few to tell the reductions apart"
        return f"{self.reproduce_tolerance:.1e} relative, the rounding of the {decimals} the log is written with"

    @property
    def explanation_text(self) -> str:
        """A sentence (without its full stop): what reproduces the log, its formula and how closely; or why nothing
        is named."""
        if self.explanation is None:
            closest = "" if self.closest is None else \
                (f"; closest: {self.candidate(self.closest).meaning}, {self.candidate(self.closest).formula}, off by "
                 f"up to {self.closest_difference:.2%}")
            return (f"No reduction of the same predictions reproduces the logged values (to {self.precision_text}"
                    f"{closest}); usual causes: " + OTHER_CAUSES)
        chosen = self.explained_by
        if self.agrees:
            return f"It agrees with {chosen.meaning}: {chosen.formula}"
        n, where = self.n_compared(chosen.name), f"{self.key}s"
        compared = f"all {n} {where}" if n == self.n_matched else f"the {n} of {self.n_matched} {where} it was " \
                                                                  f"measured at"
        also = [c for c in self.matching if c != chosen.name]
        return (f"It is {chosen.meaning}: {chosen.formula}, which reproduces the log at {compared} (largest relative "
                f"difference {self.difference(chosen.name):.1e}; to {self.precision_text})"
                + (f"; {', '.join(also)} reproduce{'s' if len(also) == 1 else ''} it too" if also else ""))


def _written_decimals(values: np.ndarray) -> int | None:
    """The fewest decimals every value is written with (a log that rounds, as COSMIC's round(avg_loss, 4)), or None
    when some value needs more than MAX_DECIMALS (a log written at full precision)."""
    for decimals in range(MAX_DECIMALS + 1):
        if all(float(v) == round(float(v), decimals) for v in values):
            return decimals
    return None


def _largest_difference(values: np.ndarray, logged: np.ndarray) -> float:
    """max |logged - value| / |value| over the epochs a candidate has a value for (NaN when it has none)."""
    finite = np.isfinite(values)
    if not finite.any():
        return math.nan
    return float(np.max(_relative(np.abs(logged[finite] - values[finite]), np.abs(values[finite]))))


def _relative(difference, reference):
    """difference / reference, inf where the reference is 0 and the difference is not (0 where both are)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(difference == 0, 0.0, np.asarray(difference, float) / reference)


def _reproduces(values: np.ndarray, logged: np.ndarray, relative: float) -> bool:
    """Within `relative` of every logged value it has a value for (and a value for one at least)."""
    return bool(_largest_difference(values, logged) <= relative)


def _batch_note(batches: BatchSizes) -> str:
    if len(batches.counted) < 2:
        return ("per-batch reductions need the loop's batches, and the data came as one batch: give val_data() "
                "the loop's validation DataLoader, or --batch-size" if batches.counted else "batch boundaries unknown")
    in_rows = f" in {_span(batches.rows)} rows" if tuple(batches.rows) != tuple(batches.counted) else ""
    return (f"per-batch reductions use the validation batches as the data gives them ({len(batches.counted)} "
            f"batches of {_span(batches.counted)} counted items{in_rows}); a loop with other batches (another "
            f"batch size, shuffled, or without its last batch) gives other values")


def _span(values: tuple[int, ...]) -> str:
    """'8' when every value is 8, else 'lowest..highest'."""
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}..{high}"


def reconcile_logged_loss(evaluation, log: "pd.DataFrame", tolerance: float = MATCH_TOLERANCE,
                          reproduce_tolerance: float = REPRODUCE_TOLERANCE,
                          candidates: tuple[Candidate, ...] = CANDIDATES) -> LossReconciliation | None:
    """Match the log's validation losses to the evaluated epochs and explain any difference.

    Matching uses the key the checkpoints were ordered by: global_step/step when that is what they
    store (Hugging Face checkpoints saved mid-epoch), else the epoch number (as stored: Lightning's
    0-based epochs match its 0-based metrics.csv). Returns None when no epoch has a logged val_loss.
    `candidates` are tried in order (default CANDIDATES; add measured ones with measured_candidate).
    """
    import pandas as pd

    from ..load.train_log import per_epoch

    if len({c.name for c in candidates}) != len(candidates):
        raise ValueError(f"candidate names repeat: {[c.name for c in candidates]}")
    if EXACT.name not in {c.name for c in candidates}:
        candidates = (EXACT, *candidates)
    key = "step" if evaluation.order_key in ("global_step", "step") else "epoch"
    logged = per_epoch(log, key)
    if logged.empty:
        return None
    by_value = dict(zip(logged[key].astype(int), logged["val_loss"].astype(float)))
    rows = []
    for epoch in evaluation.epochs:
        if epoch.epoch not in by_value:
            continue
        losses = EpochLosses(int(epoch.epoch), epoch.checkpoint, epoch.records.nll, evaluation.item_weights,
                             evaluation.batch_sizes)
        logged_value, recomputed = by_value[epoch.epoch], _weighted_mean(losses)
        rows.append({key: int(epoch.epoch), "checkpoint": epoch.checkpoint, "logged_val_loss": logged_value,
                     "recomputed_loss": recomputed,
                     "relative_difference": float(_relative(abs(logged_value - recomputed), abs(recomputed))),
                     **{c.name: c.value(losses) for c in candidates}})
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    logged_values = frame["logged_val_loss"].to_numpy(float)
    worst = float(frame["relative_difference"].max())
    decimals = _written_decimals(logged_values)
    # (1 + 1e-9): a value exactly half a unit off, as rounding leaves it, is within the rounding
    rounding = 0.0 if decimals is None else 0.5 * 10.0 ** -decimals * (1 + 1e-9) / float(np.min(np.abs(logged_values)))
    allowed = max(reproduce_tolerance, rounding)
    resolvable = allowed <= tolerance
    matching = tuple(c.name for c in candidates if c.name != "exact" and resolvable and
                     _reproduces(frame[c.name].to_numpy(float), logged_values, allowed))
    others = [c.name for c in candidates if c.name != "exact" and np.isfinite(frame[c.name].to_numpy(float)).any()]
    closest = min(others, key=lambda name: _largest_difference(frame[name].to_numpy(float), logged_values)) \
        if others else None
    recomputed = frame["recomputed_loss"].to_numpy(float)
    best = int(recomputed.argmin())
    return LossReconciliation(
        key=key, rows=frame, max_relative_difference=worst, n_matched=len(frame),
        explanation="exact" if worst <= tolerance else (matching[0] if matching else None),
        batch_note=_batch_note(evaluation.batch_sizes), candidates=tuple(candidates), matching=matching,
        closest=closest,
        closest_difference=_largest_difference(frame[closest].to_numpy(float), logged_values) if closest else math.nan,
        tolerance=tolerance, reproduce_tolerance=allowed, written_decimals=decimals,
        rounded=rounding > reproduce_tolerance, resolvable=resolvable,
        best=int(frame[key].iloc[best]), best_logged=int(frame[key].iloc[int(logged_values.argmin())]),
        best_offset=float(np.sign(logged_values[best] - recomputed[best])
                          * _relative(abs(logged_values[best] - recomputed[best]), recomputed[best])))
