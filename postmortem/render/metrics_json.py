"""metrics.json, schema_version 1 (documented in README.md): the contract's fields plus additive extensions."""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

from ..analyze.decomposition import TRANSITIONS
from ..diagnose import finding_to_json, verdict_to_json

__all__ = ["SCHEMA_VERSION", "SPARSE_CONFUSION_ABOVE", "INDENT_BELOW_BYTES", "metrics_document", "metrics_bytes",
           "confusion_entry"]

SCHEMA_VERSION = 1
# Above this many classes an epoch's confusion matrix is written as its nonzero cells ("confusion_matrix_sparse"):
# a dense 1,000 x 1,000 matrix is a million numbers per epoch, of which at most one per item is not 0.
SPARSE_CONFUSION_ABOVE = 100
# metrics.json is indented (one value per line) while its compact form is under this many bytes, and compact (one
# line) above: indenting needs json's pure-Python encoder, which took 36 s for 80 MB where the compact one is C.
INDENT_BELOW_BYTES = 1_000_000
# Per-epoch extensions read from analysis.epoch_columns(), beside the contract's fields.
EPOCH_TABLE_FIELDS = ("macro_f1_score", "adaptive_calibration_error", "max_calibration_error", "calibration_loss",
                      "median_logit_norm", "median_absolute_margin", "flip_rate")


def _number(value: float | None) -> float | None:
    """JSON has no NaN or inf: such values, and undefined ones, are written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def confusion_entry(confusion) -> dict[str, Any]:
    """An epoch's confusion matrix (analyze.metrics.ConfusionCounts; rows true class, columns predicted) as
    metrics.json writes it: the whole matrix as "confusion_matrix" ([[int]]) up to SPARSE_CONFUSION_ABOVE classes;
    above, its nonzero cells in row-major order as "confusion_matrix_sparse" (shape, rows, columns, counts), which
    scipy.sparse.coo_matrix((counts, (rows, columns)), shape) turns back into the matrix."""
    n = confusion.n_classes
    if n <= SPARSE_CONFUSION_ABOVE:
        return {"confusion_matrix": confusion.dense().tolist()}
    return {"confusion_matrix_sparse": {"shape": [n, n], "rows": confusion.rows.tolist(),
                                        "columns": confusion.columns.tolist(), "counts": confusion.counts.tolist()}}


def _numbers(values: np.ndarray) -> list[float | None]:
    """Per-class values for JSON: floats, null where NaN or infinite (as _number)."""
    return [x if math.isfinite(x) else None for x in np.asarray(values, dtype=np.float64).tolist()]


def _per_class(classes, m) -> dict[str, dict[str, Any]]:
    """An epoch's per-class table (EpochMetrics' arrays, converted once per column rather than once per value)."""
    columns = zip(m.support.tolist(), _numbers(m.class_loss), _numbers(m.loss_share), _numbers(m.precision),
                  _numbers(m.recall))
    return {name: {"support": support, "loss": loss, "loss_share": share, "precision": precision, "recall": recall}
            for name, (support, loss, share, precision, recall) in zip(classes, columns)}


def metrics_bytes(document: dict[str, Any]) -> bytes:
    """metrics.json's bytes: indented while small enough to read by eye (INDENT_BELOW_BYTES), else compact."""
    compact = json.dumps(document, separators=(",", ":"))
    return (compact if len(compact) >= INDENT_BELOW_BYTES else json.dumps(document, indent=1)).encode()


def _decomposition(d, views, classes) -> dict[str, Any]:
    return {"from_epoch": int(views[d.from_index].epoch), "to_epoch": int(views[d.to_index].epoch),
            "loss_change": _number(d.loss_change),
            "by_transition": {t: _number(v) for t, v in zip(TRANSITIONS, d.by_transition)},
            "by_class": {name: {t: _number(v) for t, v in zip(TRANSITIONS, row)}
                         for name, row in zip(classes, d.by_class_transition)},
            "top_1_percent_share": _number(d.top_1_percent_share),
            "top_5_percent_share": _number(d.top_5_percent_share)}


def _interval(interval) -> dict[str, float | None]:
    return {"estimate": _number(interval.estimate), "low": _number(interval.low), "high": _number(interval.high)}


def _attribution(ledger, classes) -> dict[str, Any]:
    """The attribution ledger of the comparison: every part of dL with its interval on the same resamples."""
    confusions = [{"true_class": classes[k.true_class], "predicted_class": classes[k.predicted_class],
                   "share_before": _number(k.share_before), "share_after": _number(k.share_after),
                   "growth": _interval(k.growth), "part": _interval(k.part), "share": _interval(k.share)}
                  for k in ledger.confusions]
    flagged = ledger.flagged()
    return {
        "loss_change": _interval(ledger.loss_change),
        "scaled_loss_change": _interval(ledger.scaled_loss_change),
        "unweighted_loss_change": _interval(ledger.unweighted_loss_change),
        "calibration_part": _interval(ledger.calibration_part),
        "class_weight_part": _interval(ledger.class_weight_part),
        "by_class": {name: _interval(i) for name, i in zip(classes, ledger.class_parts)},
        "by_transition": {t: _interval(i) for t, i in zip(TRANSITIONS, ledger.transition_parts)},
        "recall_change": {name: None if i is None else _interval(i) for name, i in zip(classes, ledger.recall_changes)},
        "confusions": confusions,
        "label_error_candidates": {"n_items": int(len(flagged.indices)), "part": _interval(flagged.part),
                                   "share": _interval(flagged.share), "rest_change": _interval(flagged.rest_change)},
        "confident_misses": {classes[m.predicted_class]: {"observed": _number(m.observed),
                                                          "expected": _number(m.expected),
                                                          "excess": _interval(m.excess)}
                             for m in ledger.confident_misses},
    }


def _training(analysis, comparison, max_listed: int) -> dict[str, Any] | None:
    """The training subset: per epoch its loss, accuracy, per-class numbers and the gap; class shares; the
    comparison's training side; memorised labels (the first `max_listed`); leakage (every flagged item)."""
    training = analysis.training
    if training is None:
        return None
    classes, views = analysis.classes, analysis.epochs
    epochs = [{"epoch": int(view.epoch), "loss": _number(m.loss), "accuracy": _number(m.accuracy),
               "gap": _interval(gap),
               "per_class": {name: {"support": k.support, "loss": _number(k.loss), "recall": _number(k.recall)}
                             for name, k in zip(classes, m.per_class)}}
              for view, m, gap in zip(views, training.epochs, training.gap)]
    memorised = training.memorised
    listed = range(min(len(memorised.indices), max_listed))
    leakage = training.leakage
    flagged = leakage.indices
    side = comparison.training
    document = {
        "n_items": training.n_items,
        "epochs": epochs,
        "class_shares": {name: {"training_share": _number(t), "validation_share": _number(v)}
                         for name, t, v in zip(classes, training.class_share, training.validation_class_share)},
        "memorised_labels": {
            "n_negative_aum": int(len(memorised.indices)), "n_memorised": memorised.n_memorised,
            "items": [{"id": str(training.ids[memorised.indices[i]]), "label": classes[training.labels[memorised.indices[i]]],
                       "competitor": classes[memorised.competitor[i]],
                       "area_under_margin": _number(memorised.area_under_margin[i]),
                       "fit_from_epoch": None if memorised.fit_from[i] < 0 else int(views[memorised.fit_from[i]].epoch),
                       "forgetting_events": int(memorised.forgetting_events[i])} for i in listed]},
        "leakage": {"n_items": int(len(flagged)),
                    "by_input_hash": int(len(leakage.by_input_hash)) if leakage.input_hashes_known else None,
                    "by_outputs": int(len(leakage.by_outputs)), "tolerance": leakage.tolerance,
                    "item_ids": [str(analysis.ids[i]) for i in flagged],
                    "matched_training_ids": [str(training.ids[i]) for i in leakage.matched_training]},
    }
    if side is not None:
        document["comparison"] = {
            "from_epoch": int(views[side.from_index].epoch), "to_epoch": int(views[side.to_index].epoch),
            "gap_before": _interval(side.gap_before), "gap_after": _interval(side.gap_after),
            "gap_change": _interval(side.gap_change), "train_loss_change": _interval(side.train_loss_change),
            "label_evidence": [{"true_class": classes[e.true_class], "predicted_class": classes[e.predicted_class],
                                "train_share": _number(e.train_share), "validation_share": _number(e.validation_share),
                                "excess": _interval(e.excess),
                                "item_ids": [str(training.ids[i]) for i in e.train_indices[:max_listed]]}
                               for e in side.pair_evidence],
            "class_signals": [{"true_class": classes[g.true_class],
                               "predicted_class": None if g.predicted_class is None else classes[g.predicted_class],
                               "recall_before": _number(g.recall_before), "recall_after": _number(g.recall_after),
                               "recall_change": _interval(g.recall_change),
                               "drift_before": _number(g.drift_before), "drift_after": _number(g.drift_after),
                               "drift_change": None if g.drift_change is None else _interval(g.drift_change)}
                              for g in side.signals]}
    return document


def _train_mode(analysis, modes) -> dict[str, Any] | None:
    """Train mode against eval mode at the compared epochs (None when not measured)."""
    if modes is None:
        return None
    return {"epochs": [{"epoch": int(analysis.epochs[m.epoch_index].epoch), "layers": m.layers,
                        "eval_loss": _number(m.eval_loss),
                        "train_mode_losses": [_number(v) for v in m.train_mode_losses],
                        "recalibrated_loss": _number(m.recalibrated_loss)} for m in modes.epochs],
            "recalibration_removes": None if modes.recalibration_removes is None else _interval(modes.recalibration_removes),
            "recalibration_share": None if modes.recalibration_share is None else _interval(modes.recalibration_share)}


def metrics_document(analysis, diagnosis, skipped: list, max_listed: int, unread: Sequence = ()) -> dict[str, Any]:
    """The metrics.json content: per-epoch metrics, best epoch, findings, skipped checkpoints, the verdict, and the
    analyses behind it; `max_listed` bounds the training subset's listed memorised items; `unread` (files of the
    checkpoint folders not read) as 'not_read' when there are any."""
    columns = analysis.epoch_columns()
    previous = [None] + list(analysis.step_decompositions)
    epochs = []
    for index, view in enumerate(analysis.epochs):
        m, c = view.metrics, view.calibration
        entry = {
            "checkpoint": view.checkpoint,
            "epoch": int(view.epoch),
            "n_samples": m.n_samples,
            "loss": _number(m.loss),
            "accuracy": _number(m.accuracy),
            "ece": _number(c.expected_calibration_error),
            "brier": _number(c.brier_loss),
            "mean_confidence": _number(c.mean_confidence),
            "temperature": _number(view.temperature),
            "scaled_loss": _number(view.scaled_loss),
            **{name: _number(float(columns[name][index])) for name in EPOCH_TABLE_FIELDS},
            "mean_confidence_correct": _number(c.mean_confidence_correct),
            "mean_confidence_wrong": _number(c.mean_confidence_wrong),
            **confusion_entry(m.confusion_counts),
            "per_class": _per_class(analysis.classes, m),
            "change_from_previous": None if previous[index] is None else {
                "loss_change": _number(previous[index].loss_change),
                "by_transition": {t: _number(v) for t, v in zip(TRANSITIONS, previous[index].by_transition)}},
            "training_setup": None if analysis.training_setups[index] is None else
            analysis.training_setups[index].to_json(),
        }
        epochs.append(entry)
    ledger = diagnosis.comparison.ledger
    totals = ledger.totals
    return {
        "schema_version": SCHEMA_VERSION,
        "classes": list(analysis.classes),
        "epochs": epochs,
        "best_epoch": int(analysis.epochs[analysis.best_loss_index].epoch),
        "findings": [finding_to_json(f) for f in diagnosis.findings],
        "skipped": [{"checkpoint": s.checkpoint, "error": s.error, **({"epoch": s.epoch} if s.epoch is not None else {})}
                    for s in skipped],
        **({"not_read": [{"file": u.name, "reason": u.reason} for u in unread]} if unread else {}),
        "verdict": verdict_to_json(diagnosis.verdict),
        "decomposition": _decomposition(analysis.decomposition, analysis.epochs, analysis.classes),
        "bootstrap": {"from_epoch": int(analysis.epochs[ledger.from_index].epoch),
                      "to_epoch": int(analysis.epochs[ledger.to_index].epoch), "n_resamples": totals.n_resamples,
                      "confidence_level": totals.confidence_level, "resampled_unit": totals.resampled_unit,
                      "n_units": totals.n_units,
                      **{name: _interval(i) for name, i in (("loss_change", ledger.loss_change),
                                                            ("accuracy_change", ledger.accuracy_change),
                                                            ("macro_f1_change", ledger.macro_f1_change))}},
        "attribution": _attribution(ledger, analysis.classes),
        "checkpoint_choice": [{"criterion": r.criterion, "epoch": int(r.epoch), "checkpoint": r.checkpoint}
                              for r in analysis.checkpoint_choice.rows],
        "class_shares": {name: {"frequency_share": _number(f), "weight_share": _number(w)}
                         for name, f, w in zip(analysis.classes, analysis.class_shares.frequency_share,
                                               analysis.class_shares.weight_share)},
        "lr_events": [{"kind": e.kind.value, "from_epoch": e.from_epoch, "to_epoch": e.to_epoch,
                       "lr_before": list(e.lr_before), "lr_after": list(e.lr_after),
                       "relative_change": _number(e.relative_change), "groups": list(e.groups)}
                      for e in diagnosis.lr_events],
        "training": _training(analysis, diagnosis.comparison, max_listed),
        "train_mode": _train_mode(analysis, diagnosis.comparison.modes),
    }
