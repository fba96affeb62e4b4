"""The training subset beside the validation set: what the validation items alone cannot tell apart.

A training subset (--train-data) is evaluated by every checkpoint exactly as the validation set is (eval mode, the
same loss), so for items i of either set, a_i = w[y_i] and L = sum_i a_i nll_i / sum_i a_i:
- the generalisation gap per epoch, G = L_val - L_train, with an interval from independent bootstraps of the two
  sets (validation units and training units are resampled separately; G's resample r is L_val,r - L_train,r);
- per class: its share of the subset beside its share of the validation set, and its training loss and recall;
- label evidence per class pair, from the area under the margin (AUM, Pleiss et al. 2020): an item's margin
  m_e = z_y - max_{k != y} z_k averaged over the epochs up to a given one. A training item whose AUM is below 0
  was, on average over training, placed in another class than its label; its competitor is the class it was most
  often predicted as while wrong. Noisy training labels (items of c labelled c') show as many training items
  labelled c' with competitor c - far more than among the validation items labelled c', whose labels are clean;
  a class that lost its training signal shows instead as its own training items drifting to c' (its training
  recall falls with its validation recall), with no excess of mislabelled-looking items;
- memorised training labels: AUM < 0 items that the model fits only late (wrong early, right at the end), and how
  often each was forgotten (correct -> wrong between consecutive epochs; Toneva et al. 2019);
- leakage: validation items whose inputs are byte-for-byte those of a training item (by input hash, where the
  inputs are known), or whose outputs at every epoch are those of a training item (nearest neighbour in the space
  of output trajectories: a copy scores as its original at every checkpoint, two different items do not).
Pure numpy (and scipy's k-d tree), over the cached records.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bootstrap import ColumnSums, Interval, resample_totals
from .metrics import EpochMetrics, epoch_metrics

__all__ = ["TrainingAnalysis", "MemorisedLabels", "Leakage", "PairLabelEvidence", "ClassSignal", "TrainingComparison",
           "analyze_training", "compare_training", "area_under_margin", "find_leakage", "memorised_labels",
           "generalisation_gap", "TRAIN_SEED", "NEAR_DUPLICATE_TOLERANCE"]

TRAIN_SEED = 1            # the training subset's resamples (the validation set's use bootstrap.SEED): independent
# A validation item duplicates a training item when its output trajectory lies this close to the training item's,
# relative to the median distance between a validation item and its nearest other validation item: copies score
# alike at every checkpoint (distance ~0, float32 batches aside), distinct items lie about that median apart.
NEAR_DUPLICATE_TOLERANCE = 0.02


@dataclass(frozen=True)
class MemorisedLabels:
    """Training items placed in another class than their label on average over the epochs (AUM < 0), most negative
    first: their competitor class, the first epoch index from which they are predicted as labelled at every later
    epoch (-1: not fit by the last epoch), and how often each was forgotten (right, then wrong at the next epoch)."""

    indices: np.ndarray
    area_under_margin: np.ndarray         # (n,) for the listed items
    competitor: np.ndarray                # (n,) class index
    fit_from: np.ndarray                  # (n,) epoch index, -1 when never fit for good
    forgetting_events: np.ndarray         # (n,)

    @property
    def n_memorised(self) -> int:
        """How many of the listed items the model fits by the last epoch: wrong labels learned by heart."""
        return int((self.fit_from >= 0).sum())


@dataclass(frozen=True)
class Leakage:
    """Validation items that duplicate training-subset items: by input hash (exact bytes), and by output trajectory
    (the distance to the nearest training item, over the epochs' scores, below `tolerance` times the median distance
    between a validation item and its nearest other validation item)."""

    by_input_hash: np.ndarray             # validation indices whose input hash appears in the training subset
    by_outputs: np.ndarray                # validation indices whose output trajectory matches a training item's
    matched_training: np.ndarray          # (len(union),) a training index for each item of `indices`
    input_hashes_known: bool
    tolerance: float

    @property
    def indices(self) -> np.ndarray:
        """Every flagged validation item, in index order."""
        return np.union1d(self.by_input_hash, self.by_outputs)


@dataclass(frozen=True)
class TrainingAnalysis:
    """The training subset over the epochs (the same epochs, in the same order, as the validation analysis)."""

    n_items: int
    labels: np.ndarray
    ids: np.ndarray
    groups: np.ndarray
    item_weights: np.ndarray
    records: tuple
    epochs: tuple[EpochMetrics, ...]          # the subset's own metrics per epoch
    gap: tuple[Interval, ...]                 # L_val - L_train per epoch, with its interval
    class_share: np.ndarray                   # (C,) share of the subset's items per class
    validation_class_share: np.ndarray        # (C,)
    memorised: MemorisedLabels
    leakage: Leakage

    @property
    def losses(self) -> np.ndarray:
        return np.array([e.loss for e in self.epochs])

    @property
    def recalls(self) -> np.ndarray:
        """(epochs, C) recall of each class on the subset; NaN for a class the subset lacks."""
        return np.array([[np.nan if c.recall is None else c.recall for c in e.per_class] for e in self.epochs])


def _loss_totals(columns: ColumnSums, labels: np.ndarray, item_weights: np.ndarray, records, prefix: str) -> None:
    columns.add(f"{prefix}weight", item_weights)
    for e, r in enumerate(records):
        columns.add(f"{prefix}loss{e}", item_weights * r.nll)


def _losses(totals, n_epochs: int, prefix: str) -> np.ndarray:
    """(1 + R, E): the weighted mean loss per epoch on all units and on each resample."""
    weight = totals[f"{prefix}weight"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([totals[f"{prefix}loss{e}"] / weight for e in range(n_epochs)], axis=1)


def generalisation_gap(val_labels: np.ndarray, val_weights: np.ndarray, val_groups: np.ndarray, val_records,
                       train_labels: np.ndarray, train_weights: np.ndarray, train_groups: np.ndarray,
                       train_records) -> tuple[Interval, ...]:
    """L_val - L_train per epoch, each with its interval over independent resamples of the two sets."""
    n = len(val_records)
    val = resample_totals(val_groups, lambda c: _loss_totals(c, val_labels, val_weights, val_records, ""))
    train = resample_totals(train_groups, lambda c: _loss_totals(c, train_labels, train_weights, train_records, ""),
                            seed=TRAIN_SEED)
    gaps = _losses(val, n, "") - _losses(train, n, "")
    return tuple(val.interval(gaps[:, e]) for e in range(n))


def area_under_margin(records, upto: int) -> np.ndarray:
    """AUM: each item's margin z_y - max_{k != y} z_k averaged over epochs 0..upto (Pleiss et al. 2020)."""
    return np.mean([records[e].margin for e in range(upto + 1)], axis=0)


def _competitors(labels: np.ndarray, records, upto: int, n_classes: int) -> np.ndarray:
    """Each item's most frequent wrong prediction over epochs 0..upto (its label where it was never wrong)."""
    counts = np.zeros((len(labels), n_classes), dtype=np.int64)
    rows = np.arange(len(labels))
    for e in range(upto + 1):
        wrong = records[e].pred != labels
        np.add.at(counts, (rows[wrong], records[e].pred[wrong]), 1)
    competitor = counts.argmax(axis=1)
    return np.where(counts.max(axis=1) > 0, competitor, labels)


def memorised_labels(labels: np.ndarray, records, n_classes: int) -> MemorisedLabels:
    """Training items with AUM < 0 over all epochs, most negative first (see MemorisedLabels)."""
    last = len(records) - 1
    aum = area_under_margin(records, last)
    chosen = np.flatnonzero(aum < 0)
    chosen = chosen[np.argsort(aum[chosen], kind="stable")]
    correct = np.array([r.pred[chosen] == labels[chosen] for r in records])          # (E, n)
    # fit_from: the first epoch after which every epoch is right (the suffix of right predictions)
    wrong_after = np.flip(np.cumsum(np.flip(~correct, axis=0), axis=0), axis=0)       # wrong epochs from e on
    always_right_from = wrong_after == 0
    fit_from = np.where(always_right_from.any(axis=0), always_right_from.argmax(axis=0), -1)
    forgotten = (correct[:-1] & ~correct[1:]).sum(axis=0)
    return MemorisedLabels(chosen, aum[chosen], _competitors(labels, records, last, n_classes)[chosen],
                           fit_from.astype(np.int64), forgotten.astype(np.int64))


def _trajectories(records) -> np.ndarray:
    """(N, 2E) each item's label-free scores over the epochs: entropy and centred-logit norm, each standardised over
    all items of the epoch pooled with the other set by the caller."""
    return np.concatenate([np.stack([r.entropy, r.logit_norm], axis=1) for r in records], axis=1)


def find_leakage(val_records, train_records, val_hashes: np.ndarray | None, train_hashes: np.ndarray | None,
                 tolerance: float) -> Leakage:
    """Validation items duplicating training items, by input hash and by output trajectory (see Leakage)."""
    from scipy.spatial import cKDTree

    by_hash = np.zeros(0, dtype=np.int64)
    known = val_hashes is not None and train_hashes is not None
    if known:
        by_hash = np.flatnonzero(np.isin(val_hashes, train_hashes))
    val_traj, train_traj = _trajectories(val_records), _trajectories(train_records)
    scale = np.concatenate([val_traj, train_traj]).std(axis=0)
    scale[scale == 0] = 1.0
    val_traj, train_traj = val_traj / scale, train_traj / scale
    to_train, nearest_train = cKDTree(train_traj).query(val_traj, k=1)
    among_val = cKDTree(val_traj).query(val_traj, k=2)[0][:, 1]    # the nearest OTHER validation item
    typical = float(np.median(among_val)) if len(among_val) else 0.0
    # With most validation items scoring exactly alike (typical 0), outputs cannot tell a copy from a twin.
    by_outputs = np.flatnonzero(to_train <= tolerance * typical) if typical > 0 else np.zeros(0, dtype=np.int64)
    flagged = np.union1d(by_hash, by_outputs)
    matched = nearest_train[flagged]
    if known and len(by_hash):
        first_train = {h: i for i, h in reversed(list(enumerate(train_hashes.tolist())))}
        hashed = {int(v): first_train[val_hashes[v]] for v in by_hash}
        matched = np.array([hashed.get(int(v), m) for v, m in zip(flagged, matched)], dtype=np.int64)
    return Leakage(by_hash, by_outputs, matched.astype(np.int64), known, tolerance)


def analyze_training(subset, val_labels: np.ndarray, val_item_weights: np.ndarray, val_groups: np.ndarray,
                     val_records, class_weights: np.ndarray, val_hashes: np.ndarray | None = None,
                     train_hashes: np.ndarray | None = None,
                     leakage_tolerance: float = NEAR_DUPLICATE_TOLERANCE) -> TrainingAnalysis:
    """Everything about the training subset (`subset`: evaluate.runner.TrainingSubset) over the epochs."""
    items = subset.items
    n_classes = len(class_weights)
    records = tuple(subset.records)
    return TrainingAnalysis(
        n_items=len(items.labels), labels=items.labels, ids=items.ids, groups=items.groups,
        item_weights=subset.item_weights, records=records,
        epochs=tuple(epoch_metrics(items.labels, r.pred, r.nll, class_weights) for r in records),
        gap=generalisation_gap(val_labels, val_item_weights, val_groups, val_records, items.labels,
                               subset.item_weights, items.groups, records),
        class_share=np.bincount(items.labels, minlength=n_classes) / len(items.labels),
        validation_class_share=np.bincount(val_labels, minlength=n_classes) / len(val_labels),
        memorised=memorised_labels(items.labels, records, n_classes),
        leakage=find_leakage(val_records, records, val_hashes, train_hashes, leakage_tolerance))


# ----------------------------------------------------------------------------- one comparison of two epochs
@dataclass(frozen=True)
class PairLabelEvidence:
    """For a validation confusion c -> c': items labelled c' that the model places in c (AUM < 0 up to the later
    epoch, competitor c), as a share of the items labelled c', in the training subset and in the validation set,
    and the excess (training minus validation share) with its interval. Noisy training labels (items of c labelled
    c') make the training share exceed the validation one; clean labels do not."""

    true_class: int
    predicted_class: int
    train_share: float
    validation_share: float
    excess: Interval
    train_indices: np.ndarray             # the training items labelled c' placed in c


@dataclass(frozen=True)
class ClassSignal:
    """One class on the training subset between the two epochs: its recall and the share of its items predicted
    as `predicted_class` (None: the recall only), each before, after and the change with its interval."""

    true_class: int
    predicted_class: int | None
    recall_before: float
    recall_after: float
    recall_change: Interval
    drift_before: float | None = None
    drift_after: float | None = None
    drift_change: Interval | None = None


@dataclass(frozen=True)
class TrainingComparison:
    """The training side of one comparison (epoch indices `from_index` -> `to_index`): the gap at both epochs and
    its change, and, per class pair or class the diagnosis follows, the label evidence and the class's signal."""

    from_index: int
    to_index: int
    gap_before: Interval
    gap_after: Interval
    gap_change: Interval
    train_loss_change: Interval
    pair_evidence: tuple[PairLabelEvidence, ...]
    signals: tuple[ClassSignal, ...]

    def evidence_for(self, pair: tuple[int, int]) -> PairLabelEvidence | None:
        return next((e for e in self.pair_evidence if (e.true_class, e.predicted_class) == pair), None)

    def signal_for(self, true_class: int, predicted_class: int | None = None) -> ClassSignal | None:
        return next((s for s in self.signals if s.true_class == true_class
                     and (predicted_class is None or s.predicted_class == predicted_class)), None)


def _placed_in(labels: np.ndarray, records, upto: int, n_classes: int, pair: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(items labelled c', those of them with AUM < 0 and competitor c), as 0/1 arrays, for pair (c, c')."""
    c, c2 = pair
    labelled = labels == c2
    placed = labelled & (area_under_margin(records, upto) < 0) & (_competitors(labels, records, upto, n_classes) == c)
    return labelled.astype(np.float64), placed.astype(np.float64)


def compare_training(training: TrainingAnalysis, val_labels: np.ndarray, val_item_weights: np.ndarray,
                     val_groups: np.ndarray, val_records, from_index: int, to_index: int,
                     pairs: tuple[tuple[int, int], ...], classes: tuple[int, ...]) -> TrainingComparison:
    """The training side of the comparison from_index -> to_index, for the confusion pairs (c, c') and classes
    the validation side follows; every interval is over resamples of the subset's units (and, for the excess and
    the gap's change, independent resamples of the validation units: resample r of a difference between the sets
    is the difference of their resamples r)."""
    labels, records, n_classes = training.labels, training.records, len(training.class_share)
    before, after = records[from_index], records[to_index]
    placed = {pair: _placed_in(labels, records, to_index, n_classes, pair) for pair in pairs}
    val_placed = {pair: _placed_in(val_labels, val_records, to_index, n_classes, pair) for pair in pairs}
    followed = tuple(dict.fromkeys([*classes, *(c for c, _ in pairs)]))

    def build_train(columns: ColumnSums) -> None:
        _loss_totals(columns, labels, training.item_weights, (before, after), "")
        for pair, (labelled, hit) in placed.items():
            columns.add(f"labelled{pair}", labelled)
            columns.add(f"placed{pair}", hit)
        for c in followed:
            of_c = labels == c
            columns.add(f"support{c}", of_c)
            columns.add(f"right_before{c}", of_c & (before.pred == c))
            columns.add(f"right_after{c}", of_c & (after.pred == c))
        for c, c2 in pairs:
            of_c = labels == c
            columns.add(f"drift_before{c},{c2}", of_c & (before.pred == c2))
            columns.add(f"drift_after{c},{c2}", of_c & (after.pred == c2))

    def build_val(columns: ColumnSums) -> None:
        _loss_totals(columns, val_labels, val_item_weights, (val_records[from_index], val_records[to_index]), "")
        for pair, (labelled, hit) in val_placed.items():
            columns.add(f"labelled{pair}", labelled)
            columns.add(f"placed{pair}", hit)

    train = resample_totals(training.groups, build_train, seed=TRAIN_SEED)
    val = resample_totals(val_groups, build_val)
    with np.errstate(invalid="ignore", divide="ignore"):
        train_losses, val_losses = _losses(train, 2, ""), _losses(val, 2, "")
        evidence = []
        for pair in pairs:
            share_train = train[f"placed{pair}"] / train[f"labelled{pair}"]
            share_val = val[f"placed{pair}"] / val[f"labelled{pair}"]
            evidence.append(PairLabelEvidence(pair[0], pair[1], float(share_train[0]), float(share_val[0]),
                                              train.interval(share_train - share_val),
                                              np.flatnonzero(placed[pair][1])))
        signals = []
        for c in followed:
            support = train[f"support{c}"]
            recall_before, recall_after = train[f"right_before{c}"] / support, train[f"right_after{c}"] / support
            recall = (float(recall_before[0]), float(recall_after[0]), train.interval(recall_after - recall_before))
            drifts = [c2 for c_, c2 in pairs if c_ == c]
            if not drifts:
                signals.append(ClassSignal(c, None, *recall))
            for c2 in drifts:
                drift_before = train[f"drift_before{c},{c2}"] / support
                drift_after = train[f"drift_after{c},{c2}"] / support
                signals.append(ClassSignal(c, c2, *recall, float(drift_before[0]), float(drift_after[0]),
                                           train.interval(drift_after - drift_before)))
    train_change = train_losses[:, 1] - train_losses[:, 0]
    gap_change = (val_losses[:, 1] - val_losses[:, 0]) - train_change
    return TrainingComparison(from_index, to_index, training.gap[from_index], training.gap[to_index],
                              val.interval(gap_change), train.interval(train_change), tuple(evidence), tuple(signals))
