"""The attribution ledger: each candidate cause's part of one loss change dL, with intervals on the same resamples.

For items i that count, a_i = w[y_i], A = sum_i a_i and L = sum_i a_i nll_i / A, the parts are views of one dL
and overlap (never add them up as if disjoint):
- calibration: the change of L - L_TS, with L_TS the cross-fitted temperature-scaled loss (sum_i a_i snll_i / A);
  its complement, the change of L_TS itself, is what scaling cannot undo (genuine degradation);
- class weights: dL minus the change of the unweighted loss (mean nll over items);
- a set of items (label-error candidates): sum over the set of a_i d(nll_i) / A, beside the loss change
  of all the other items (their own weighted mean); and, per predicted class, the confident wrong predictions
  against the number calibrated probabilities expect (the signature of wrong labels);
- a learned confusion c -> c': the growth of the share of c's items predicted as c', and the part of dL of the
  items of c predicted as c' at the later epoch;
- each true class and each transition group (correct/wrong before -> after): their exact parts of dL.
A share is a part divided by dL, resample by resample.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .bootstrap import CONFIDENCE_LEVEL, N_RESAMPLES, SEED, ColumnSums, Interval, ResampledTotals, resample_totals
from .candidates import ItemCandidates
from .decomposition import item_contributions, transition_codes
from .metrics import macro_f1_from_counts

__all__ = ["ConfusionChange", "MissExcess", "ItemSetChange", "AttributionLedger", "attribution_ledger", "confusion_candidates",
           "MAX_CONFUSION_PAIRS"]

MAX_CONFUSION_PAIRS = 10     # class pairs c -> c' followed through the resamples (those carrying most of dL)


@dataclass(frozen=True)
class ConfusionChange:
    """Class `true_class`'s items predicted as `predicted_class`: their share of the class before and after,
    the growth of that share, and the part of dL of the items so predicted at the later epoch."""

    true_class: int
    predicted_class: int
    share_before: float
    share_after: float
    growth: Interval
    part: Interval
    share: Interval


@dataclass(frozen=True)
class MissExcess:
    """Predictions of one class made confidently (scaled p >= its confident-learning bar) that are wrong: how many
    are observed, how many a calibrated model expects (sum of 1 - p over them), and the excess with its interval.
    After temperature scaling, a clean validation set shows no excess; wrong labels on items the model gets
    right show up as an excess in the class the model predicts for them."""

    predicted_class: int
    observed: float
    expected: float
    excess: Interval


@dataclass(frozen=True)
class ItemSetChange:
    """A set of items' part (and share) of dL, and the loss change of all the other items."""

    indices: np.ndarray
    part: Interval
    share: Interval
    rest_change: Interval


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator / denominator


@dataclass(frozen=True)
class AttributionLedger:
    """The change from epoch index `from_index` to `to_index` and its parts, each with its interval."""

    from_index: int
    to_index: int
    totals: ResampledTotals
    pairs: tuple[tuple[int, int], ...]
    flagged_pairs: tuple[tuple[int, int], ...]   # the (label, later prediction) pairs of the flagged items
    flagged_buckets: np.ndarray       # per item: the index of its pair in `flagged_pairs`, -1 if not flagged

    def _loss(self, prefix: str) -> np.ndarray:
        return _ratio(self.totals[f"{prefix}_after"] - self.totals[f"{prefix}_before"], self.totals["weight"])

    @cached_property
    def _dl(self) -> np.ndarray:
        return self._loss("weighted_nll")

    def _share(self, part: np.ndarray) -> Interval:
        return self.totals.interval(_ratio(part, self._dl))

    @cached_property
    def loss_change(self) -> Interval:
        return self.totals.interval(self._dl)

    @cached_property
    def scaled_loss_change(self) -> Interval:
        """Change of L_TS: the part of dL that temperature scaling cannot undo."""
        return self.totals.interval(self._loss("weighted_scaled_nll"))

    @cached_property
    def scaled_share(self) -> Interval:
        return self._share(self._loss("weighted_scaled_nll"))

    @cached_property
    def calibration_part(self) -> Interval:
        """Change of L - L_TS: the part of dL that temperature scaling removes."""
        return self.totals.interval(self._dl - self._loss("weighted_scaled_nll"))

    @cached_property
    def calibration_share(self) -> Interval:
        return self._share(self._dl - self._loss("weighted_scaled_nll"))

    @cached_property
    def _unweighted(self) -> np.ndarray:
        return _ratio(self.totals["nll_after"] - self.totals["nll_before"], self.totals["items"])

    @cached_property
    def unweighted_loss_change(self) -> Interval:
        """Change of the mean nll over items, class weights left out."""
        return self.totals.interval(self._unweighted)

    @cached_property
    def class_weight_part(self) -> Interval:
        """dL minus the unweighted change: what the class weights add to the change."""
        return self.totals.interval(self._dl - self._unweighted)

    @cached_property
    def class_weight_share(self) -> Interval:
        return self._share(self._dl - self._unweighted)

    @cached_property
    def accuracy_change(self) -> Interval:
        return self.totals.interval(_ratio(self.totals["correct_after"] - self.totals["correct_before"],
                                           self.totals["items"]))

    @cached_property
    def macro_f1_change(self) -> Interval:
        t = self.totals
        counted = t["support"][0] > 0                   # the classes with items in the whole validation set
        before = macro_f1_from_counts(t["true_positive_before"], t["support"], t["predicted_before"], counted)
        after = macro_f1_from_counts(t["true_positive_after"], t["support"], t["predicted_after"], counted)
        return t.interval(after - before)

    @cached_property
    def class_parts(self) -> tuple[Interval, ...]:
        """Each true class's part of dL."""
        return self.totals.intervals(_ratio(self.totals["class_part"], self.totals["weight"][:, None]))

    @cached_property
    def class_shares(self) -> tuple[Interval, ...]:
        return self.totals.intervals(_ratio(self.totals["class_part"], (self.totals["weight"] * self._dl)[:, None]))

    @cached_property
    def transition_parts(self) -> tuple[Interval, ...]:
        """Each transition group's part of dL, in decomposition.TRANSITIONS order."""
        return self.totals.intervals(_ratio(self.totals["transition_part"], self.totals["weight"][:, None]))

    @cached_property
    def recall_changes(self) -> tuple[Interval | None, ...]:
        """Each class's recall change (None for a class with no items)."""
        t = self.totals
        change = _ratio(t["true_positive_after"] - t["true_positive_before"], t["support"])
        return tuple(interval if t["support"][0, c] > 0 else None for c, interval in enumerate(t.intervals(change)))

    @cached_property
    def confusions(self) -> tuple[ConfusionChange, ...]:
        """The followed pairs c -> c', in the order given."""
        t = self.totals
        support = t["support"][:, [c for c, _ in self.pairs]]
        before, after = _ratio(t["pair_before"], support), _ratio(t["pair_after"], support)
        part = _ratio(t["pair_part"], t["weight"][:, None])
        growth, parts = t.intervals(after - before), t.intervals(part)
        shares = t.intervals(_ratio(part, self._dl[:, None]))
        return tuple(ConfusionChange(c, d, float(before[0, k]), float(after[0, k]), growth[k], parts[k], shares[k])
                     for k, (c, d) in enumerate(self.pairs))

    def classes_part(self, classes: tuple[int, ...]) -> tuple[Interval, Interval]:
        """The part of dL of the items of some true classes, and its share."""
        part = _ratio(self.totals["class_part"][:, list(classes)].sum(axis=1), self.totals["weight"])
        return self.totals.interval(part), self._share(part)

    def pairs_part(self, pairs: tuple[tuple[int, int], ...]) -> tuple[Interval, Interval]:
        """The part of dL of the items of c predicted c' at the later epoch, over some followed pairs, and its share."""
        columns = [self.pairs.index(pair) for pair in pairs]
        part = _ratio(self.totals["pair_part"][:, columns].sum(axis=1), self.totals["weight"])
        return self.totals.interval(part), self._share(part)

    @cached_property
    def class_weight_effects(self) -> np.ndarray:
        """(C,) each class's part of dL minus its part of the unweighted change: the classes whose weights add
        to the change (positive) or take from it; the entries sum to the class-weight part."""
        t = self.totals
        return t["class_part"][0] / t["weight"][0] - t["class_unweighted_part"][0] / t["items"][0]

    @cached_property
    def confident_misses(self) -> tuple[MissExcess, ...]:
        """Per predicted class: confident wrong predictions observed at the later epoch against the number a
        calibrated model expects, sum of (1 - scaled confidence) over its confident predictions."""
        t = self.totals
        observed, expected = t["confident_miss"], t["expected_miss"]
        excess = t.intervals(observed - expected)
        return tuple(MissExcess(k, float(observed[0, k]), float(expected[0, k]), excess[k])
                     for k in range(observed.shape[1]))

    def flagged(self, pairs: tuple[tuple[int, int], ...] | None = None) -> ItemSetChange:
        """The flagged items whose (label, later prediction) is one of `pairs` (default all): their part and share
        of dL, and the loss change of every other item."""
        keep = np.array([pairs is None or pair in pairs for pair in self.flagged_pairs], dtype=bool)
        t = self.totals
        weight = t["flagged_weight"][:, keep].sum(axis=1)
        nll_before = t["flagged_weighted_nll_before"][:, keep].sum(axis=1)
        nll_after = t["flagged_weighted_nll_after"][:, keep].sum(axis=1)
        part = _ratio(nll_after - nll_before, t["weight"])
        rest = _ratio((t["weighted_nll_after"] - nll_after) - (t["weighted_nll_before"] - nll_before),
                      t["weight"] - weight)
        chosen = np.flatnonzero(keep)
        indices = np.flatnonzero(np.isin(self.flagged_buckets, chosen))
        return ItemSetChange(indices, t.interval(part), self._share(part), t.interval(rest))


def confusion_candidates(labels: np.ndarray, class_weights: np.ndarray, before, after,
                         limit: int = MAX_CONFUSION_PAIRS) -> tuple[tuple[int, int], ...]:
    """Pairs c -> c' (c != c') whose count of c-items predicted c' grew, largest part of dL first (at most `limit`
    with a positive part): the confusions worth following through the resamples. Counted over the cells that
    hold items at the later epoch (np.unique), not over all C^2 cells (three C^2 arrays: 24 MB at 1,000 classes,
    2.4 GB at 10,000); ties keep the cells' row-major order."""
    n_classes = len(class_weights)
    contributions = item_contributions(class_weights[labels], before.nll, after.nll)
    cells, inverse = np.unique(labels * n_classes + after.pred, return_inverse=True)
    count_after = np.bincount(inverse, minlength=len(cells))
    part = np.bincount(inverse, weights=contributions, minlength=len(cells))
    before_index = _cell_index(cells, labels * n_classes + before.pred)
    count_before = np.bincount(before_index[before_index >= 0], minlength=len(cells))
    off_diagonal = cells // n_classes != cells % n_classes
    chosen = np.flatnonzero(off_diagonal & (count_after > count_before) & (part > 0))
    chosen = chosen[np.argsort(-part[chosen], kind="stable")[:limit]]
    return tuple((int(cells[k] // n_classes), int(cells[k] % n_classes)) for k in chosen)


def _cell_index(sorted_cells: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per code: its index in `sorted_cells` (ascending, unique), or -1 where it is not there."""
    if len(sorted_cells) == 0:
        return np.full(len(codes), -1, dtype=np.int64)
    position = np.minimum(np.searchsorted(sorted_cells, codes), len(sorted_cells) - 1)
    return np.where(sorted_cells[position] == codes, position, -1)


def _pair_codes(labels: np.ndarray, pred: np.ndarray, pairs: tuple[tuple[int, int], ...], n_classes: int) -> np.ndarray:
    """Per item: the index in `pairs` of (label, pred), or -1 (a search among the pairs' cells, not a lookup table
    of all C^2 cells)."""
    if not pairs:
        return np.full(len(labels), -1, dtype=np.int64)
    cells = np.array([c * n_classes + d for c, d in pairs], dtype=np.int64)
    order = np.argsort(cells)
    found = _cell_index(cells[order], labels * n_classes + pred)
    return np.where(found >= 0, order[found], -1)


def attribution_ledger(labels: np.ndarray, groups: np.ndarray, class_weights: np.ndarray, before, after,
                       from_index: int, to_index: int, candidates: ItemCandidates | None = None,
                       pairs: tuple[tuple[int, int], ...] | None = None, n_resamples: int = N_RESAMPLES,
                       confidence_level: float = CONFIDENCE_LEVEL, seed: int = SEED) -> AttributionLedger:
    """The ledger of `after` minus `before` (records with .pred, .nll, .scaled_nll, .scaled_confidence) over the
    counted items; `candidates` (label-error candidates at `after`) are the flagged items followed (default
    none), `pairs` the confusions followed (default confusion_candidates). Resamples draw whole groups."""
    n_classes = len(class_weights)
    pairs = confusion_candidates(labels, class_weights, before, after) if pairs is None else tuple(pairs)
    flagged = np.zeros(len(labels), bool)
    confident = np.zeros(len(labels), bool) if candidates is None else candidates.confident
    if candidates is not None:
        flagged[candidates.indices] = True
    item_weights = class_weights[labels]
    correct_before, correct_after = before.pred == labels, after.pred == labels
    weighted_change = item_weights * (after.nll - before.nll)
    pair_after = _pair_codes(labels, after.pred, pairs, n_classes)
    cells = labels * n_classes + after.pred
    flagged_cells, flagged_codes = np.unique(cells[flagged], return_inverse=True)
    buckets = np.full(len(labels), -1, dtype=np.int64)
    buckets[flagged] = flagged_codes.reshape(-1)
    flagged_pairs = tuple((int(k // n_classes), int(k % n_classes)) for k in flagged_cells)

    def build(columns: ColumnSums) -> None:
        columns.add("weight", item_weights)
        columns.add("items", np.ones(len(labels)))
        for when, records, correct in (("before", before, correct_before), ("after", after, correct_after)):
            columns.add(f"weighted_nll_{when}", item_weights * records.nll)
            columns.add(f"weighted_scaled_nll_{when}", item_weights * records.scaled_nll)
            columns.add(f"nll_{when}", records.nll)
            columns.add(f"correct_{when}", correct)
            columns.add_block(f"true_positive_{when}", np.where(correct, labels, -1), n_classes)
            columns.add_block(f"predicted_{when}", records.pred, n_classes)
            columns.add_block(f"pair_{when}", _pair_codes(labels, records.pred, pairs, n_classes), len(pairs))
            columns.add_block(f"flagged_weighted_nll_{when}", buckets, len(flagged_pairs), item_weights * records.nll)
        columns.add_block("support", labels, n_classes)
        columns.add_block("class_part", labels, n_classes, weighted_change)
        columns.add_block("class_unweighted_part", labels, n_classes, after.nll - before.nll)
        columns.add_block("transition_part", transition_codes(correct_before, correct_after), 4, weighted_change)
        columns.add_block("pair_part", pair_after, len(pairs), weighted_change)
        columns.add_block("flagged_weight", buckets, len(flagged_pairs), item_weights)
        columns.add_block("confident_miss", np.where(confident & ~correct_after, after.pred, -1), n_classes)
        columns.add_block("expected_miss", np.where(confident, after.pred, -1), n_classes, 1 - after.scaled_confidence)

    totals = resample_totals(groups, build, n_resamples, confidence_level, seed)
    return AttributionLedger(from_index, to_index, totals, pairs, flagged_pairs, buckets)
