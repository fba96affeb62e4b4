"""Builders for constructed runs: per-item records and RunAnalysis objects without torch models."""
from __future__ import annotations

import numpy as np

from postmortem.analyze.run import RunAnalysis, analyze_epochs
from postmortem.evaluate.records import EpochRecords, reduce_outputs
from postmortem.evaluate.runner import EvaluatedEpoch


def make_records(labels, pred, nll, *, n_classes: int | None = None, confidence=None, margin=None, logit_norm=None,
                 entropy=None, temperature: float = 1.0, scaled_nll=None, class_weights=None) -> EpochRecords:
    """Records from chosen per-item scalars; what is not given follows from p(y) = exp(-nll).

    Defaults treat a wrong item as putting all mass p(y) on its label and 1 - p(y) on its prediction,
    and a correct item as spreading 1 - p(y) evenly over the other classes. scaled_nll defaults to nll
    itself (no calibration gap), and the scaled confidence to the confidence.
    """
    labels, pred, nll = np.asarray(labels), np.asarray(pred), np.asarray(nll, dtype=np.float64)
    n_classes = n_classes or int(max(labels.max(), pred.max())) + 1
    p_true = np.exp(-nll)
    correct = pred == labels
    runner_up = np.where(correct, (1 - p_true) / max(n_classes - 1, 1), 1 - p_true)
    confidence = np.where(correct, p_true, 1 - p_true) if confidence is None else np.asarray(confidence, float)
    weights = np.ones(n_classes) if class_weights is None else np.asarray(class_weights, float)
    item_weights = weights[labels]
    return EpochRecords(
        n_classes=n_classes,
        pred=pred.astype(np.int64),
        confidence=confidence,
        nll=nll,
        margin=np.log(p_true) - np.log(np.where(correct, runner_up, confidence)) if margin is None
        else np.asarray(margin, float),
        logit_norm=np.ones(len(labels)) if logit_norm is None else np.asarray(logit_norm, float),
        entropy=np.zeros(len(labels)) if entropy is None else np.asarray(entropy, float),
        sum_sq_prob=p_true ** 2 + (1 - p_true) ** 2,
        scaled_nll=(scaled := nll if scaled_nll is None else np.asarray(scaled_nll, float)),
        scaled_confidence=confidence,
        temperature=temperature,
        scaled_loss=float(item_weights @ scaled / item_weights.sum()),
    )


def records_from_logits(logits, labels, class_weights=None) -> EpochRecords:
    """Records as the evaluation stage makes them, temperature fit included."""
    logits = np.asarray(logits, dtype=np.float64)
    weights = np.ones(logits.shape[1]) if class_weights is None else np.asarray(class_weights, float)
    records, _ = reduce_outputs(logits, np.asarray(labels), weights[np.asarray(labels)])
    return records


def evaluated(records: EpochRecords, epoch: int) -> EvaluatedEpoch:
    return EvaluatedEpoch(checkpoint=f"epoch_{epoch}.pt", path=f"epoch_{epoch}.pt", sha256="", epoch=epoch,
                          output_kind="logits", records=records, from_cache=False)


def analysis_of(labels, epoch_records: list[EpochRecords], class_weights=None, class_names=None, ids=None,
                groups=None) -> RunAnalysis:
    """RunAnalysis of records given in training order (epochs numbered from 1)."""
    labels = np.asarray(labels)
    n_classes = epoch_records[0].n_classes
    weights = np.ones(n_classes) if class_weights is None else np.asarray(class_weights, float)
    names = tuple(class_names or (f"c{k}" for k in range(n_classes)))
    return analyze_epochs(labels, [evaluated(r, e + 1) for e, r in enumerate(epoch_records)], names, weights,
                          ids=None if ids is None else np.asarray(ids),
                          groups=None if groups is None else np.asarray(groups))


def base_logits(n_items: int, n_classes: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels and logits separation * onehot(y) + N(0, 1) noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_items) % n_classes
    logits = rng.normal(size=(n_items, n_classes))
    logits[np.arange(n_items), labels] += separation
    return labels, logits


def overconfident_run(n_items: int = 1200, n_classes: int = 4, seed: int = 0) -> tuple[np.ndarray, list[EpochRecords]]:
    """Two noisy early epochs, then the same logits scaled up 1x, 2x, 3x, 4x: decisions fixed, confidence grows.

    The loss is lowest at epoch 3 (scale 1, near calibrated), accuracy holds from there on, and the fitted
    temperature follows the scale: the classic NLL overfitting of Guo et al. (2017).
    """
    labels, logits = base_logits(n_items, n_classes, 2.0, seed)
    rng = np.random.default_rng(seed + 1)
    early = [0.7 * (logits + rng.normal(scale=1.5, size=logits.shape)) for _ in range(2)]
    return labels, [records_from_logits(z, labels) for z in early + [s * logits for s in (1.0, 2.0, 3.0, 4.0)]]


def degrading_run(n_items: int = 1200, n_classes: int = 4, seed: int = 0) -> tuple[np.ndarray, list[EpochRecords]]:
    """The logits lose signal after epoch 2 (noise added, never rescaled): a genuinely worse model."""
    labels, logits = base_logits(n_items, n_classes, 3.0, seed)
    rng = np.random.default_rng(seed + 1)
    noise = rng.normal(size=logits.shape)
    return labels, [records_from_logits(logits + level * noise, labels) for level in (1.0, 0.0, 1.5, 2.5, 3.5)]


def validation_label_noise_run(n_items: int = 2000, n_classes: int = 5, seed: int = 0):
    """The overconfident run's model (softmax(3 x) is the exact posterior of x = 3 onehot(y) + N(0, 1)), scaled up
    epoch by epoch, scored against labels of which 15% of classes 0 and 1 were replaced by another class: the
    model is right on those items and grows more confident there. Returns (labels, records, flipped indices)."""
    labels, logits = base_logits(n_items, n_classes, 3.0, seed)
    rng = np.random.default_rng(seed + 1)
    flipped = np.flatnonzero((labels < 2) & (rng.random(n_items) < 0.15))
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1 + rng.integers(0, n_classes - 1, len(flipped))) % n_classes
    early = [0.5 * (logits + rng.normal(scale=1.5, size=logits.shape)) for _ in range(2)]
    records = [records_from_logits(z, noisy) for z in early + [s * logits for s in (0.7, 1.0, 1.5, 2.0, 2.5)]]
    return noisy, records, flipped
