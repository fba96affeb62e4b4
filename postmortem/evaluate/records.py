"""Per-item records: what one checkpoint's outputs reduce to, and all that later stages read."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .temperature import ShiftedLogits, crossfit_temperature, row_blocks
from ..errors import DataError, NonFiniteOutputsError
from ..load.data import ID_KEYS

__all__ = ["ItemTable", "EpochRecords", "BatchSizes", "OutputsAccumulator", "counted_rows", "detect_output_kind", "score_rows",
           "reduce_outputs", "own_groups", "HostOutputs", "LOG_TINY"]

ITEM_SCALARS = ("pred", "confidence", "nll", "margin", "logit_norm", "entropy", "sum_sq_prob", "scaled_nll",
                "scaled_confidence")


@dataclass(frozen=True)
class ItemTable:
    """The counted validation items, the same for every epoch: labels, ids and groups (e.g. a dialogue)."""

    labels: np.ndarray          # int64, in [0, C)
    ids: np.ndarray             # str
    groups: np.ndarray          # int64; an item's own index when the data names no groups
    input_hashes: np.ndarray | None = None   # uint64 per item, a hash of its inputs (with a training subset only)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class BatchSizes:
    """The validation batches as the data gave them, in order (what a training loop's per-batch reductions of its
    logged loss are computed over): per batch, the items that count (mask != 0 and label != ignore_index), the
    masked-in positions (mask != 0 whatever the label; the counted items when there is no mask) and the rows (the
    labels' first dimension: examples, or sequences such as dialogues)."""

    counted: tuple[int, ...] = ()
    masked: tuple[int, ...] = ()
    rows: tuple[int, ...] = ()

    def as_metadata(self) -> dict[str, list[int]]:
        return {"counted": list(self.counted), "masked": list(self.masked), "rows": list(self.rows)}

    @classmethod
    def from_metadata(cls, value: dict | None) -> "BatchSizes":
        value = value or {}
        return cls(*(tuple(int(n) for n in value.get(name, ())) for name in ("counted", "masked", "rows")))


@dataclass(frozen=True)
class EpochRecords:
    """One epoch's per-item scalars (float64 unless noted), and its temperature-scaling fit.

    pred (int64) argmax class; confidence max probability; nll -log p[y]; margin z_y - max_{k!=y} z_k;
    logit_norm ||z|| of centred logits z; entropy -sum p log p; sum_sq_prob sum p^2 (for Brier);
    scaled_nll and scaled_confidence the NLL and top-class probability after temperature scaling, cross-fitted
    (each item scaled by the T fitted on other items: temperature.crossfit_temperature);
    temperature T fitted on all items and scaled_loss the weighted mean of scaled_nll (L_TS).
    """

    n_classes: int
    pred: np.ndarray
    confidence: np.ndarray
    nll: np.ndarray
    margin: np.ndarray
    logit_norm: np.ndarray
    entropy: np.ndarray
    sum_sq_prob: np.ndarray
    scaled_nll: np.ndarray
    scaled_confidence: np.ndarray
    temperature: float
    scaled_loss: float

    @property
    def p_true(self) -> np.ndarray:
        return np.exp(-self.nll)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ITEM_SCALARS}


def counted_rows(outputs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None, ignore_index: int,
                 limit: int | None = None) -> np.ndarray:
    """The (n, C) output rows of the items that count (mask != 0, label != ignore_index), the first `limit` of
    them when given; none when the shapes disagree (the accumulator reports that). Output kinds are detected on
    these: padded rows may hold anything. (With a limit only those rows are copied: a whole 10k x 1,000 epoch's
    copy, for the 256 rows detect_output_kind reads, cost more than its loss.)"""
    labels = np.asarray(labels)
    if outputs.shape[:-1] != labels.shape:
        return outputs.reshape(-1, outputs.shape[-1])[:0]
    counted = labels != ignore_index
    if mask is not None and np.asarray(mask).shape == labels.shape:
        counted &= np.asarray(mask) != 0
    if limit is None:
        return outputs[counted]
    return outputs.reshape(-1, outputs.shape[-1])[np.flatnonzero(counted.reshape(-1))[:limit]]


def detect_output_kind(outputs: np.ndarray) -> str:
    """'probs' when rows are non-negative and sum to 1, 'log_probs' when rows are <= 0 and exp-sum to 1, else 'logits'."""
    values = np.asarray(outputs, dtype=np.float64).reshape(-1, outputs.shape[-1])
    if values.size == 0:
        return "logits"
    if values.min() >= 0 and values.max() <= 1 and np.allclose(values.sum(axis=1), 1.0, atol=1e-3):
        return "probs"
    if values.max() <= 1e-6 and np.allclose(np.exp(values).sum(axis=1), 1.0, atol=1e-3):
        return "log_probs"
    return "logits"


ID_SOURCES = f"a batch key {', '.join(repr(k) for k in ID_KEYS)}, or forward's fourth returned value"

LOG_TINY = float(np.log(np.finfo(np.float64).tiny))   # the float64 floor for log-probabilities of exactly 0
FOLD_COLUMNS_UP_TO = 64   # row_max folds columns up to this many classes (measured 3-9x faster at 7 and 20
                          # classes, 1.7x slower at 100)


def row_max(values, xp):
    """Each row's maximum. numpy reduces a short row at a time (over 7 or 20 classes a max costs 3-10x an exp of
    the same block), so up to FOLD_COLUMNS_UP_TO classes the columns are folded with an elementwise maximum."""
    if xp is not np or values.shape[1] > FOLD_COLUMNS_UP_TO:
        return xp.amax(values, axis=1)
    result = values[:, 0].copy()
    for column in range(1, values.shape[1]):
        np.maximum(result, values[:, column], out=result)
    return result


def row_sum(values, xp):
    """Each row's sum (einsum: 4-5x faster than sum(axis=1) on short rows, in numpy and torch alike)."""
    return xp.einsum("ij->i", values)


def score_rows(scores, labels, at, xp) -> tuple[int, dict | None, object, object]:
    """Per-item records of float64 class scores (n, C) (logits or log-probabilities), in numpy or in torch:
    `xp` is the module (torch takes numpy's axis/keepdims spellings), so the host and the device reductions
    share these formulas; `at` is arange(n) there. Returns (items with no probabilities, records, shifted logits
    s = z - max z with zero probabilities clamped at LOG_TINY, s at the labels); items have no probabilities when
    a score is NaN or +inf, or all are -inf (a single -inf is a probability of 0), and then the rest is None.

    With e = exp(s) and n = sum_k e_k (p = e / n, log p = s - log n), each record comes from row sums, without
    the N x C matrices of p and log p: the top class has s = 0, so its probability is exactly 1 / n; -log p_y =
    log n - s_y; the entropy -sum p log p = log n - sum_k e_k s_k / n; sum p^2 = sum_k e_k^2 / n^2.
    """
    finite = bool(xp.isfinite(scores).all())
    if not finite:
        n_nonfinite = int((xp.isnan(scores).any(axis=1) | xp.isposinf(scores).any(axis=1)
                           | xp.isneginf(scores).all(axis=1)).sum())
        if n_nonfinite:
            return n_nonfinite, None, None, None
    s = scores - row_max(scores, xp)[:, None]
    e = xp.exp(s)
    norm = row_sum(e, xp)
    log_norm = xp.log(norm)
    pred = s.argmax(axis=1)
    true_gap = s[at, labels]
    # s * e is NaN where a probability is exactly 0 (s = -inf); p log p is 0 there
    e_s = row_sum(e * (s if finite else xp.where(e > 0, s, 0.0)), xp)
    records = {"pred": pred, "confidence": 1.0 / norm, "nll": log_norm - true_gap,
               # one class: the max over no other class is -inf, so the margin is +inf
               "margin": true_gap - row_max(_without_labels(s, labels, at, xp), xp),
               "entropy": log_norm - e_s / norm,
               "sum_sq_prob": row_sum(e * e, xp) / (norm * norm)}
    if not finite:   # probabilities of exactly 0: clamped, so the logits (and the temperature fit) stay finite
        s = s.clip(min=LOG_TINY)
        true_gap = s[at, labels]
    centred = s - (row_sum(s, xp) / s.shape[1])[:, None]
    records["logit_norm"] = xp.sqrt(row_sum(centred * centred, xp))
    return 0, records, s, true_gap


def _without_labels(s, labels, at, xp):
    """A copy of s with -inf at each row's label (for the largest other score)."""
    others = s.clone() if xp is not np else s.copy()
    others[at, labels] = -xp.inf
    return others


def reduce_outputs(outputs: np.ndarray, labels: np.ndarray, item_weights: np.ndarray, kind: str = "logits", *,
                   groups: np.ndarray | None = None) -> tuple[EpochRecords | None, int]:
    """Reduce the model outputs (N, C) of the counted items to per-item scalars (score_rows) and the cross-fitted
    temperature scaling (folds by `groups`, default one per item), and count the items with no probabilities;
    records are None when there are any.

    outputs are logits, log-probabilities or probabilities (`kind`); each block of rows (row_blocks) is taken to
    float64 and reduced there, so every temporary stays small; the one N x C array made is the max-shifted
    matrix the temperature fit passes over several times."""
    n, n_classes = outputs.shape
    scalars = {name: np.empty(n) for name in ITEM_SCALARS if not name.startswith("scaled_")}
    scalars["pred"] = np.empty(n, dtype=np.int64)
    shifted, true_gap = np.empty((n, n_classes)), np.empty(n)
    n_nonfinite = 0
    for rows in row_blocks(n, n_classes):
        scores = outputs[rows].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "probs":
                np.log(scores, out=scores)
            bad, records, block_shifted, block_gap = score_rows(scores, labels[rows], np.arange(len(scores)), np)
        n_nonfinite += bad
        if n_nonfinite:    # the epoch is left out; later blocks are only counted
            continue
        shifted[rows], true_gap[rows] = block_shifted, block_gap
        for name, values in records.items():
            scalars[name][rows] = values
    if n_nonfinite:
        return None, n_nonfinite
    fit = crossfit_temperature(ShiftedLogits(shifted, true_gap), item_weights, own_groups(groups, n))
    return EpochRecords(n_classes=n_classes, temperature=fit.temperature, scaled_loss=fit.scaled_loss,
                        scaled_nll=fit.scaled_nll, scaled_confidence=fit.scaled_confidence, **scalars), 0


def own_groups(groups: np.ndarray | None, n: int) -> np.ndarray:
    """The items' groups, or each item its own group when none are named."""
    return np.arange(n) if groups is None else groups


class HostOutputs:
    """Where an accumulator keeps a batch's counted output rows (numpy, on the host) and how it reduces them.
    evaluate.device_reduce.DeviceOutputs is the same for outputs left on a GPU."""

    @staticmethod
    def keep(outputs: np.ndarray, counted: np.ndarray, owned: bool = False) -> np.ndarray:
        """The counted rows (N, C), as a copy (the caller's array may be reused) unless the caller gave its array
        up (`owned`: a predictions file's outputs, read for this epoch alone), which is then kept as it is when
        every row counts."""
        if counted.all():
            rows = outputs.reshape(-1, outputs.shape[-1])
            return rows if owned else rows.copy()
        return outputs[counted]

    @staticmethod
    def join(parts: list[np.ndarray]) -> np.ndarray:
        """The batches' rows as one array (one batch, e.g. a predictions file, as it is: no copy)."""
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    reduce = staticmethod(reduce_outputs)


@dataclass
class OutputsAccumulator:
    """Collects one epoch's counted items batch by batch, then reduces them to EpochRecords.

    Items count where mask != 0 and label != ignore_index; outputs are (..., C), labels and mask (...).
    Outputs are kept as the model gave them (float32 for float16/bfloat16) by `store`, on the host unless it
    is a DeviceOutputs, and go to float64 when the epoch is reduced, off the thread that runs the forward passes.
    """

    class_weights: np.ndarray | None
    ignore_index: int
    source: str
    store: HostOutputs = field(default_factory=HostOutputs)
    _outputs: list = field(default_factory=list)
    _labels: list = field(default_factory=list)
    _ids: list = field(default_factory=list)
    _groups: list = field(default_factory=list)
    _hashes: list = field(default_factory=list)
    _n_seen: int = 0
    _group_names: dict = field(default_factory=dict)
    _ids_given: bool | None = None                     # whether the data names its items (known from the 1st batch)
    _sizes: dict = field(default_factory=lambda: {"counted": [], "masked": [], "rows": []})

    @property
    def batch_sizes(self) -> BatchSizes:
        """The batches added so far (counted items, masked-in positions, rows)."""
        return BatchSizes(**{name: tuple(values) for name, values in self._sizes.items()})

    def add(self, outputs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None,
            ids: list | np.ndarray | None = None, groups: np.ndarray | None = None,
            input_hashes: np.ndarray | None = None, owned: bool = False) -> None:
        """Add one batch: class scores (B, C) or (B, T, C) and labels (B,) or (B, T); `input_hashes` one per
        position of the labels (flattened), when the inputs are hashed; `owned`: the caller will not touch `outputs`
        again (HostOutputs.keep keeps it without a copy)."""
        labels = np.asarray(labels)
        if outputs.shape[:-1] != labels.shape:
            raise DataError(f"{self.source}: outputs of shape {tuple(outputs.shape)} do not fit labels of "
                            f"shape {tuple(labels.shape)} (expected outputs = labels' shape + (classes,))")
        if mask is not None and np.asarray(mask).shape != labels.shape:
            raise DataError(f"{self.source}: mask of shape {tuple(np.asarray(mask).shape)} does not match "
                            f"labels of shape {tuple(labels.shape)}")
        if labels.dtype.kind == "b" or labels.dtype.kind not in "iuf":
            raise DataError(f"{self.source}: labels must be integer class indices, got dtype {labels.dtype}")
        if labels.dtype.kind == "f":
            if not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
                odd = labels[~np.isfinite(labels) | (labels != np.round(labels))][:3].tolist()
                raise DataError(f"{self.source}: labels must be integer class indices, got values such as "
                                f"{odd} (soft or one-hot labels are not supported)")
            labels = labels.astype(np.int64)
        counted = labels != self.ignore_index
        if mask is not None:
            counted &= np.asarray(mask) != 0
        n_classes = outputs.shape[-1]
        bad = counted & ((labels < 0) | (labels >= n_classes))
        if bad.any():
            values = ", ".join(str(v) for v in sorted(set(labels[bad].tolist()))[:5])
            raise DataError(f"{self.source}: {int(bad.sum())} counted label(s) outside [0, {n_classes}) "
                            f"(values {values}); the model outputs {n_classes} classes, and only "
                            f"ignore_index ({self.ignore_index}) or a mask of 0 may mark items that do not count")
        self._sizes["counted"].append(int(counted.sum()))
        self._sizes["masked"].append(int(counted.sum()) if mask is None else int(np.count_nonzero(mask)))
        self._sizes["rows"].append(int(labels.shape[0]) if labels.ndim else 1)
        batch_ids, batch_groups = self._item_keys(labels.shape, ids, groups, counted)
        self._outputs.append(self.store.keep(outputs, counted, owned))
        self._labels.append(labels[counted].astype(np.int64))
        self._ids.append(batch_ids[counted])
        self._groups.append(batch_groups[counted])
        if input_hashes is not None:
            self._hashes.append(input_hashes[counted.reshape(-1)])

    def _item_keys(self, shape: tuple, ids, groups, counted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ids and groups for every position of a batch: the data's ids when it names its items (one per row, shown
        'id', or 'id:t' for step t of a sequence; or one per step of a sequence, shown as given), else positions.

        A sequence is its own group (a dialogue of utterances), unless the data gives 'groups'.
        """
        if len(shape) not in (1, 2):
            raise DataError(f"{self.source}: labels of shape {tuple(shape)}; expected (B,) or (B, T)")
        n = shape[0]
        batch = len(self._sizes["rows"])          # this batch's number, from 1 (its sizes are recorded already)
        if self._ids_given is None:
            self._ids_given = ids is not None
        elif self._ids_given != (ids is not None):
            given, missing = (batch, 1) if ids is not None else (1, batch)
            raise DataError(f"{self.source}: batch {missing} has no item ids but batch {given} has them; give ids "
                            f"for every batch ({ID_SOURCES}) or for none")
        if ids is None:
            item_ids = _position_ids(self._n_seen, n, shape[1] if len(shape) == 2 else None)
        else:
            item_ids = self._given_ids(ids, shape, counted, batch)
        group = self._group_codes(groups, n) if groups is not None else \
            np.arange(self._n_seen, self._n_seen + n, dtype=np.int64)
        self._n_seen += n
        return item_ids, group if len(shape) == 1 else np.broadcast_to(group[:, None], shape)

    def _given_ids(self, ids, shape: tuple, counted: np.ndarray, batch: int) -> np.ndarray:
        """The data's ids of one batch as strings, one per position: per row (a sequence's id gets ':t' for step t),
        or, for sequences, per step (nested lists, shown as given); a counted item without an id (None) is an error."""
        rows = list(ids)
        if len(rows) != shape[0]:
            raise DataError(f"{self.source}: a batch has {len(rows)} ids for {shape[0]} items")
        per_step = len(shape) == 2 and bool(rows) and isinstance(rows[0], (list, tuple, np.ndarray))
        if per_step and any(len(row) != shape[1] for row in rows):
            raise DataError(f"{self.source}: batch {batch}: per-step ids of lengths {sorted({len(r) for r in rows})} "
                            f"for labels of shape {tuple(shape)}; give one id per sequence ({shape[0]},) or one per "
                            f"step {tuple(shape)}")
        values = np.empty(shape if per_step else (shape[0],), dtype=object)
        for index, row in enumerate(rows):      # one by one: an id may itself be a tuple
            values[index] = list(row) if per_step else row
        needed = counted if per_step or len(shape) == 1 else counted.any(axis=1)
        missing = np.argwhere(np.equal(values, None) & needed)
        if len(missing):
            raise DataError(f"{self.source}: batch {batch}: the item at position "
                            f"{':'.join(str(int(i)) for i in missing[0])} has no id (None); every counted item "
                            "needs one")
        text = np.array([str(v) for v in values.ravel()]).reshape(values.shape)
        return text if per_step or len(shape) == 1 else _step_ids(text, shape[1])

    def _group_codes(self, groups, n: int) -> np.ndarray:
        """A batch's groups as int64 codes: integers as they are; other values (e.g. dialogue names) numbered in
        order of first appearance, so the same data gives the same codes at every epoch."""
        values = np.asarray(groups)
        if values.shape != (n,):
            raise DataError(f"{self.source}: groups of shape {values.shape} for {n} items; expected one group per "
                            f"item, shape ({n},)")
        if values.dtype.kind in "iu":
            return values.astype(np.int64)
        return np.array([self._group_names.setdefault(str(v), len(self._group_names)) for v in values], dtype=np.int64)

    def finish(self, kind: str = "logits") -> tuple[ItemTable, EpochRecords]:
        """Items and records of the epoch; `kind` says what the outputs are (logits, log_probs or probs)."""
        if not self._labels or sum(len(x) for x in self._labels) == 0:
            raise DataError(f"{self.source}: no items count (every label is masked out or equals ignore_index)")
        outputs = self.store.join(self._outputs)
        labels = np.concatenate(self._labels)
        n_classes = outputs.shape[1]
        weights = np.ones(n_classes) if self.class_weights is None else np.asarray(self.class_weights, dtype=np.float64)
        if len(weights) != n_classes:
            raise DataError(f"{self.source}: outputs have {n_classes} classes but {len(weights)} class weights were given")
        hashes = np.concatenate(self._hashes) if self._hashes and len(self._hashes) == len(self._labels) else None
        items = ItemTable(labels=labels, ids=np.concatenate(self._ids), groups=np.concatenate(self._groups),
                          input_hashes=hashes)
        if self._ids_given:
            _check_unique(items.ids, self.source)
        records, n_nonfinite = self.store.reduce(outputs, labels, weights[labels], kind, groups=items.groups)
        if n_nonfinite:
            raise NonFiniteOutputsError(f"{self.source}: {n_nonfinite} of {len(labels)} counted items have NaN "
                                        "or inf outputs", n_nonfinite=n_nonfinite, n_counted=len(labels))
        return items, records


def _check_unique(ids: np.ndarray, source: str) -> None:
    """Every counted item's id names it alone (the data's own ids: positions are unique by construction)."""
    values, counts = np.unique(ids, return_counts=True)
    if len(values) < len(ids):
        first = int(np.argmax(counts > 1))
        repeated = int((counts > 1).sum())
        raise DataError(f"{source}: item id {str(values[first])!r} names {int(counts[first])} counted items"
                        + (f" ({repeated} ids repeat)" if repeated > 1 else "")
                        + "; ids must be unique (two sequences with the same id?)")


def _step_ids(base: np.ndarray, steps: int) -> np.ndarray:
    """'id:t' for every step t of every sequence id."""
    return np.char.add(np.char.add(base.astype(str)[:, None], ":"), _decimal(np.arange(steps))[None, :])


def _decimal(values: np.ndarray) -> np.ndarray:
    """Non-negative integers as decimal strings no wider than the longest (astype(str) gives 21 characters each,
    four times the cache's bytes for ids of 20,000 items)."""
    return values.astype(f"U{len(str(values.max(initial=0)))}")


@lru_cache(maxsize=1024)
def _position_ids(start: int, n: int, steps: int | None) -> np.ndarray:
    """Default ids of a batch from its position in the data (read-only, shared by every epoch of a run:
    making the strings costs more than a small model's forward pass on the same batch)."""
    base = _decimal(np.arange(start, start + n))
    ids = base if steps is None else _step_ids(base, steps)
    ids.flags.writeable = False
    return ids
