"""Compare the validation loss the training loop logged with the one recomputed from the checkpoints.

When they differ, try the usual ways a logged loss goes wrong on the same per-item NLLs and say which
one reproduces the logged numbers:
- averaging per-batch means (batches with fewer counted items weigh as much as full ones);
- class weights left out, or the weighted sum divided by the number of items instead of the weights;
- a sum instead of a mean (reduction='sum').
When none does, the remaining usual causes are named: the model left in train mode while validating
(dropout, batch-norm statistics), different weights (an EMA copy, or a log written at another step
than the checkpoint), or a different validation set or preprocessing.
Pure numpy/pandas: runs on an Evaluation (cached records), no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LossReconciliation", "reconcile_logged_loss", "REDUCTIONS", "MATCH_TOLERANCE", "OTHER_CAUSES"]

MATCH_TOLERANCE = 1e-3   # relative: float32 forward passes agree to ~1e-6, so 1e-3 is a real difference

REDUCTIONS = {
    "exact": "the loss postmortem reports: sum_i w[y_i] nll_i / sum_i w[y_i] over the counted items",
    "mean_of_batch_means": "the mean of per-batch mean losses: a batch with fewer counted items (the last "
                           "batch, padded sequences) weighs as much as a full one",
    "unweighted": "the plain mean NLL: the class weights were not applied to the logged loss",
    "mean_of_unweighted_batch_means": "the mean of per-batch plain means: class weights not applied, and "
                                      "per-batch means averaged",
    "weighted_sum_over_count": "the weighted sum divided by the number of items instead of the sum of the weights",
    "sum": "a sum over the items, not a mean (reduction='sum' without dividing)",
}
OTHER_CAUSES = ("the model left in train mode while validating (dropout, batch-norm statistics); different "
                "weights (an EMA or averaged copy, or a log written at another step than the checkpoint); "
                "or a different validation set, preprocessing or loss")


@dataclass(frozen=True)
class LossReconciliation:
    """The logged validation loss beside the recomputed one, per matched epoch.

    rows: DataFrame with the key column (epoch or step), logged_val_loss, recomputed_loss,
    relative_difference (|logged - recomputed| / recomputed), and one column per REDUCTIONS entry.
    explanation: the REDUCTIONS key that reproduces every logged value within MATCH_TOLERANCE
    ('exact' when the log agrees), or None when none does (see OTHER_CAUSES).
    """

    key: str
    rows: "pd.DataFrame"
    max_relative_difference: float
    n_matched: int
    explanation: str | None
    batch_note: str

    @property
    def agrees(self) -> bool:
        return self.explanation == "exact"

    @property
    def explanation_text(self) -> str:
        if self.explanation is None:
            return "no simple reduction of the same predictions reproduces the logged values; usual causes: " + OTHER_CAUSES
        return REDUCTIONS[self.explanation]


def _reductions(nll: np.ndarray, weights: np.ndarray, batch_counts: tuple[int, ...]) -> dict[str, float]:
    """Every REDUCTIONS value for one epoch's per-item NLLs and item weights (items in batch order)."""
    values = {"exact": float((weights * nll).sum() / weights.sum()),
              "unweighted": float(nll.mean()),
              "weighted_sum_over_count": float((weights * nll).sum() / len(nll)),
              "sum": float((weights * nll).sum())}
    if batch_counts and sum(batch_counts) == len(nll):
        bounds = np.cumsum((0,) + tuple(batch_counts))
        spans = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        values["mean_of_batch_means"] = float(np.mean([(weights[a:b] * nll[a:b]).sum() / weights[a:b].sum()
                                                       for a, b in spans]))
        values["mean_of_unweighted_batch_means"] = float(np.mean([nll[a:b].mean() for a, b in spans]))
    else:
        values["mean_of_batch_means"] = values["mean_of_unweighted_batch_means"] = math.nan
    return values


def reconcile_logged_loss(evaluation, log: "pd.DataFrame", tolerance: float = MATCH_TOLERANCE) -> LossReconciliation | None:
    """Match the log's validation losses to the evaluated epochs and explain any difference.

    Matching uses the key the checkpoints were ordered by: global_step/step when that is what they
    store (Hugging Face checkpoints saved mid-epoch), else the epoch number (as stored: Lightning's
    0-based epochs match its 0-based metrics.csv). Returns None when no epoch has a logged val_loss.
    """
    import pandas as pd

    from ..load.train_log import per_epoch

    key = "step" if evaluation.order_key in ("global_step", "step") else "epoch"
    logged = per_epoch(log, key)
    if logged.empty:
        return None
    by_value = dict(zip(logged[key].astype(int), logged["val_loss"].astype(float)))
    rows = []
    for epoch in evaluation.epochs:
        if epoch.epoch not in by_value:
            continue
        values = _reductions(epoch.records.nll, evaluation.item_weights, evaluation.batch_counts)
        logged_value = by_value[epoch.epoch]
        recomputed = values["exact"]
        rows.append({key: int(epoch.epoch), "checkpoint": epoch.checkpoint, "logged_val_loss": logged_value,
                     "recomputed_loss": recomputed,
                     "relative_difference": abs(logged_value - recomputed) / abs(recomputed) if recomputed else math.inf,
                     **values})
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    explanation = None
    for name in REDUCTIONS:
        candidate = frame[name].to_numpy(float)
        logged_values = frame["logged_val_loss"].to_numpy(float)
        if np.isfinite(candidate).all() and (np.abs(logged_values - candidate) <= tolerance * np.abs(candidate)).all():
            explanation = name
            break
    sizes = sorted(set(evaluation.batch_counts))
    batch_note = (f"per-batch reductions use postmortem's batches ({len(evaluation.batch_counts)} batches of "
                  f"{sizes[0]}..{sizes[-1]} counted items); a loop with another batch size gives other values"
                  if sizes else "batch boundaries unknown")
    return LossReconciliation(key=key, rows=frame, max_relative_difference=float(frame["relative_difference"].max()),
                              n_matched=len(frame), explanation=explanation, batch_note=batch_note)
