"""Where a loss change comes from: the exact split of dL over items, by true class and transition group.

With a_i = w[y_i] and A = sum_i a_i (the same at every epoch), L = sum_i a_i nll_i / A, so
dL = sum_i (a_i / A) d(nll_i) exactly: grouping the terms by class and by transition group sums to dL.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TRANSITIONS", "LossChangeDecomposition", "ClassShares", "ConfidentError", "item_contributions",
           "transition_codes", "decompose_loss_change", "class_shares", "confident_errors", "top_share"]

# Column order of every class x transition table: correct/wrong at the earlier epoch -> at the later one.
TRANSITIONS = ("correct->correct", "correct->wrong", "wrong->correct", "wrong->wrong")
CORRECT_TO_CORRECT, CORRECT_TO_WRONG, WRONG_TO_WRONG = 0, 1, 3   # columns of TRANSITIONS
TOP_FRACTIONS = (0.01, 0.05)


@dataclass(frozen=True)
class LossChangeDecomposition:
    """dL = L(to) - L(from) split into additive parts: `by_class_transition[c, t]` sums a_i d(nll_i) / A
    over items of true class c in transition group TRANSITIONS[t]; the table sums to `loss_change`.

    top_1_percent_share / top_5_percent_share: the part of dL carried by the 1% / 5% of items that
    push hardest in its direction (can exceed 1 when other items push back; NaN when dL = 0).
    """

    from_index: int
    to_index: int
    loss_change: float
    by_class_transition: np.ndarray      # (C, 4) float64
    item_counts: np.ndarray              # (C, 4) int64: items in each cell
    top_1_percent_share: float
    top_5_percent_share: float

    @property
    def by_class(self) -> np.ndarray:
        """(C,) each true class's part of dL."""
        return self.by_class_transition.sum(axis=1)

    @property
    def by_transition(self) -> np.ndarray:
        """(4,) each transition group's part of dL, in TRANSITIONS order."""
        return self.by_class_transition.sum(axis=0)

    def share(self, part: np.ndarray) -> np.ndarray:
        """Parts of dL as fractions of dL (NaN when dL = 0)."""
        return part / self.loss_change if self.loss_change != 0 else np.full(np.shape(part), np.nan)


@dataclass(frozen=True)
class ClassShares:
    """Each class's loss-weight share pi_c = w_c n_c / sum_k w_k n_k beside its frequency share n_c / N."""

    weight_share: np.ndarray
    frequency_share: np.ndarray

    @property
    def amplification(self) -> np.ndarray:
        """pi_c / (n_c / N): how much the class weights magnify a class (NaN for classes with no items)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.frequency_share > 0, self.weight_share / self.frequency_share, np.nan)


@dataclass(frozen=True)
class ConfidentError:
    """One item wrong at the later epoch, with its part of the loss change (row of the confident-errors table)."""

    index: int
    id: str
    true_class: str
    predicted_before: str
    predicted_after: str
    confidence_after: float          # probability of the (wrong) predicted class at the later epoch
    true_confidence_before: float    # p(y) at the earlier epoch
    true_confidence_after: float     # p(y) at the later epoch
    loss_contribution: float         # a_i d(nll_i) / A: this item's part of dL
    transition: str


def transition_codes(correct_before: np.ndarray, correct_after: np.ndarray) -> np.ndarray:
    """Index into TRANSITIONS of each item: 2 * wrong_before + wrong_after."""
    return 2 * (~correct_before).astype(np.int64) + (~correct_after).astype(np.int64)


def item_contributions(item_weights: np.ndarray, nll_before: np.ndarray, nll_after: np.ndarray) -> np.ndarray:
    """a_i (nll_i(after) - nll_i(before)) / A: each item's additive part of dL."""
    return item_weights * (nll_after - nll_before) / item_weights.sum()


def top_share(contributions: np.ndarray, total: float, fraction: float) -> float:
    """Part of `total` carried by the ceil(fraction * N) items pushing hardest in its direction."""
    if total == 0 or len(contributions) == 0:
        return float("nan")
    k = max(1, int(np.ceil(fraction * len(contributions))))
    toward = np.sign(total) * contributions
    largest = np.partition(toward, len(toward) - k)[len(toward) - k:]
    return float(largest.sum() / abs(total))


def decompose_loss_change(labels: np.ndarray, class_weights: np.ndarray, before, after,
                          from_index: int, to_index: int) -> LossChangeDecomposition:
    """Split L(after) - L(before) by true class x transition group; `before`/`after` have .pred and .nll."""
    n_classes = len(class_weights)
    item_weights = class_weights[labels]
    contributions = item_contributions(item_weights, before.nll, after.nll)
    cell = labels * 4 + transition_codes(before.pred == labels, after.pred == labels)
    total_weight = item_weights.sum()
    loss_change = float(item_weights @ after.nll / total_weight - item_weights @ before.nll / total_weight)
    return LossChangeDecomposition(
        from_index=from_index,
        to_index=to_index,
        loss_change=loss_change,
        by_class_transition=np.bincount(cell, weights=contributions, minlength=4 * n_classes).reshape(n_classes, 4),
        item_counts=np.bincount(cell, minlength=4 * n_classes).reshape(n_classes, 4),
        top_1_percent_share=top_share(contributions, loss_change, TOP_FRACTIONS[0]),
        top_5_percent_share=top_share(contributions, loss_change, TOP_FRACTIONS[1]),
    )


def class_shares(labels: np.ndarray, class_weights: np.ndarray) -> ClassShares:
    """pi_c = w_c n_c / sum_k w_k n_k and n_c / N."""
    counts = np.bincount(labels, minlength=len(class_weights)).astype(np.float64)
    weighted = class_weights * counts
    return ClassShares(weight_share=weighted / weighted.sum(), frequency_share=counts / counts.sum())


def confident_errors(labels: np.ndarray, ids: np.ndarray, class_weights: np.ndarray, class_names: tuple[str, ...],
                     before, after, limit: int = 20) -> tuple[ConfidentError, ...]:
    """The items wrong at the later epoch whose loss rose most, largest part of dL first (at most `limit`)."""
    contributions = item_contributions(class_weights[labels], before.nll, after.nll)
    candidates = np.flatnonzero((after.pred != labels) & (contributions > 0))
    chosen = candidates[np.argsort(-contributions[candidates], kind="stable")[:limit]]
    codes = transition_codes(before.pred == labels, after.pred == labels)
    return tuple(
        ConfidentError(
            index=int(i), id=str(ids[i]), true_class=class_names[labels[i]],
            predicted_before=class_names[before.pred[i]], predicted_after=class_names[after.pred[i]],
            confidence_after=float(after.confidence[i]), true_confidence_before=float(np.exp(-before.nll[i])),
            true_confidence_after=float(np.exp(-after.nll[i])), loss_contribution=float(contributions[i]),
            transition=TRANSITIONS[codes[i]],
        )
        for i in chosen
    )
