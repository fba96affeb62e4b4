"""Per-item records: what one checkpoint's outputs reduce to, and all that later stages read."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .temperature import crossfit_temperature
from ..errors import DataError, NonFiniteOutputsError

__all__ = ["ItemTable", "EpochRecords", "OutputsAccumulator", "log_softmax64", "counted_rows", "detect_output_kind", "reduce_log_probs"]

ITEM_SCALARS = ("pred", "confidence", "nll", "margin", "logit_norm", "entropy", "sum_sq_prob")


@dataclass(frozen=True)
class ItemTable:
    """The counted validation items, the same for every epoch: labels, ids and groups (e.g. a dialogue)."""

    labels: np.ndarray          # int64, in [0, C)
    ids: np.ndarray             # str
    groups: np.ndarray          # int64; an item's own index when the data names no groups

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class EpochRecords:
    """One epoch's per-item scalars (float64 unless noted), and its temperature-scaling fit.

    pred (int64) argmax class; confidence max probability; nll -log p[y]; margin z_y - max_{k!=y} z_k;
    logit_norm ||z|| of centred logits z; entropy -sum p log p; sum_sq_prob sum p^2 (for Brier);
    temperature T fitted on all items and scaled_loss the cross-fitted weighted NLL after scaling.
    """

    n_classes: int
    pred: np.ndarray
    confidence: np.ndarray
    nll: np.ndarray
    margin: np.ndarray
    logit_norm: np.ndarray
    entropy: np.ndarray
    sum_sq_prob: np.ndarray
    temperature: float
    scaled_loss: float

    @property
    def p_true(self) -> np.ndarray:
        return np.exp(-self.nll)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ITEM_SCALARS}


def log_softmax64(scores: np.ndarray) -> np.ndarray:
    """float64 log-softmax of logits or log-probabilities (which it renormalises) along the last axis."""
    values = np.asarray(scores, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def counted_rows(outputs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None, ignore_index: int) -> np.ndarray:
    """The (n, C) output rows of the items that count (mask != 0, label != ignore_index); none when the shapes
    disagree (the accumulator reports that). Output kinds are detected on these: padded rows may hold anything."""
    labels = np.asarray(labels)
    if outputs.shape[:-1] != labels.shape:
        return outputs.reshape(-1, outputs.shape[-1])[:0]
    counted = labels != ignore_index
    if mask is not None and np.asarray(mask).shape == labels.shape:
        counted &= np.asarray(mask) != 0
    return outputs[counted]


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


def reduce_log_probs(log_probs: np.ndarray, labels: np.ndarray, item_weights: np.ndarray) -> EpochRecords:
    """Reduce float64 log-probabilities (N, C) of the counted items to per-item scalars."""
    n, n_classes = log_probs.shape
    rows = np.arange(n)
    probs = np.exp(log_probs)
    pred = log_probs.argmax(axis=1)
    true_log_prob = log_probs[rows, labels]
    others = log_probs.copy()
    others[rows, labels] = -np.inf
    centred = log_probs - log_probs.mean(axis=1, keepdims=True) if np.isfinite(log_probs).all() else \
        _centred_with_zero_probs(log_probs)
    fit = crossfit_temperature(centred, labels, item_weights)
    return EpochRecords(
        n_classes=n_classes,
        pred=pred.astype(np.int64),
        confidence=probs[rows, pred],
        nll=-true_log_prob,
        margin=true_log_prob - others.max(axis=1) if n_classes > 1 else np.full(n, np.inf),
        logit_norm=np.linalg.norm(centred, axis=1),
        entropy=-np.where(probs > 0, probs * np.where(probs > 0, log_probs, 0.0), 0.0).sum(axis=1),
        sum_sq_prob=(probs * probs).sum(axis=1),
        temperature=fit.temperature,
        scaled_loss=fit.scaled_loss,
    )


def _centred_with_zero_probs(log_probs: np.ndarray) -> np.ndarray:
    """Centred logits when some probabilities underflowed to exactly 0: clamp at the float64 floor first."""
    floored = np.maximum(log_probs, np.log(np.finfo(np.float64).tiny))
    return floored - floored.mean(axis=1, keepdims=True)


@dataclass
class OutputsAccumulator:
    """Collects one epoch's counted items batch by batch, then reduces them to EpochRecords.

    Items count where mask != 0 and label != ignore_index; outputs are (..., C), labels and mask (...).
    """

    class_weights: np.ndarray | None
    ignore_index: int
    source: str
    _log_probs: list = field(default_factory=list)
    _labels: list = field(default_factory=list)
    _ids: list = field(default_factory=list)
    _groups: list = field(default_factory=list)
    _n_seen: int = 0
    n_nonfinite: int = 0
    batch_counts: list = field(default_factory=list)   # counted items per batch, in order

    def add(self, log_probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None,
            ids: list | np.ndarray | None = None, groups: np.ndarray | None = None,
            nonfinite_rows: np.ndarray | None = None) -> None:
        """Add one batch: float64 log-probabilities (B, C) or (B, T, C) and labels (B,) or (B, T)."""
        labels = np.asarray(labels)
        if log_probs.shape[:-1] != labels.shape:
            raise DataError(f"{self.source}: outputs of shape {tuple(log_probs.shape)} do not fit labels of "
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
        n_classes = log_probs.shape[-1]
        bad = counted & ((labels < 0) | (labels >= n_classes))
        if bad.any():
            values = ", ".join(str(v) for v in sorted(set(labels[bad].tolist()))[:5])
            raise DataError(f"{self.source}: {int(bad.sum())} counted label(s) outside [0, {n_classes}) "
                            f"(values {values}); the model outputs {n_classes} classes, and only "
                            f"ignore_index ({self.ignore_index}) or a mask of 0 may mark items that do not count")
        if nonfinite_rows is not None:
            self.n_nonfinite += int((nonfinite_rows & counted).sum())
        self.batch_counts.append(int(counted.sum()))
        batch_ids, batch_groups = self._item_keys(labels.shape, ids, groups)
        self._log_probs.append(log_probs[counted])
        self._labels.append(labels[counted].astype(np.int64))
        self._ids.append(batch_ids[counted])
        self._groups.append(batch_groups[counted])

    def _item_keys(self, shape: tuple, ids, groups) -> tuple[np.ndarray, np.ndarray]:
        """Ids and groups for every position of a batch: 'id' per item, 'id:t' per step of a sequence.

        A sequence is its own group (a dialogue of utterances), unless the data gives 'groups'.
        """
        if len(shape) not in (1, 2):
            raise DataError(f"{self.source}: labels of shape {tuple(shape)}; expected (B,) or (B, T)")
        n = shape[0]
        base = np.asarray([str(i) for i in (ids if ids is not None else range(self._n_seen, self._n_seen + n))],
                          dtype=object)
        if len(base) != n:
            raise DataError(f"{self.source}: a batch has {len(base)} ids for {n} items")
        group = np.asarray(groups, dtype=np.int64).reshape(n) if groups is not None else \
            np.arange(self._n_seen, self._n_seen + n, dtype=np.int64)
        self._n_seen += n
        if len(shape) == 1:
            return base, group
        steps = np.arange(shape[1]).astype(str)
        item_ids = np.char.add(np.char.add(base.astype(str)[:, None], ":"), steps[None, :])
        return item_ids.astype(object), np.broadcast_to(group[:, None], shape)

    def finish(self) -> tuple[ItemTable, EpochRecords]:
        if not self._labels or sum(len(x) for x in self._labels) == 0:
            raise DataError(f"{self.source}: no items count (every label is masked out or equals ignore_index)")
        if self.n_nonfinite:
            total = sum(self.batch_counts)
            raise NonFiniteOutputsError(f"{self.source}: {self.n_nonfinite} of {total} counted items have NaN "
                                        "or inf outputs", n_nonfinite=self.n_nonfinite, n_counted=total)
        log_probs = np.concatenate(self._log_probs)
        labels = np.concatenate(self._labels)
        n_classes = log_probs.shape[1]
        weights = np.ones(n_classes) if self.class_weights is None else np.asarray(self.class_weights, dtype=np.float64)
        if len(weights) != n_classes:
            raise DataError(f"{self.source}: outputs have {n_classes} classes but {len(weights)} class weights were given")
        items = ItemTable(labels=labels, ids=np.concatenate(self._ids).astype(str),
                          groups=np.concatenate(self._groups).astype(np.int64))
        return items, reduce_log_probs(log_probs, labels, weights[labels])
