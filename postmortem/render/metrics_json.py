"""metrics.json, schema_version 1 (documented in README.md): the contract's fields plus additive extensions."""
from __future__ import annotations

import math
from typing import Any, Sequence

from ..analyze.decomposition import TRANSITIONS
from ..diagnose import finding_to_json, verdict_to_json

__all__ = ["SCHEMA_VERSION", "metrics_document"]

SCHEMA_VERSION = 1
# Per-epoch extensions read from analysis.epoch_columns(), beside the contract's fields.
EPOCH_TABLE_FIELDS = ("macro_f1_score", "adaptive_calibration_error", "max_calibration_error", "calibration_loss",
                      "median_logit_norm", "median_absolute_margin", "flip_rate")


def _number(value: float | None) -> float | None:
    """JSON has no NaN or inf: such values, and undefined ones, are written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


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


def metrics_document(analysis, diagnosis, skipped: list, unread: Sequence = ()) -> dict[str, Any]:
    """The metrics.json content: per-epoch metrics, best epoch, findings, skipped checkpoints, the verdict, and the
    analyses behind it; `unread` (files of the checkpoint folders not read) as 'not_read' when there are any."""
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
            "confusion_matrix": [[int(x) for x in row] for row in m.confusion],
            "per_class": {
                name: {"support": k.support, "loss": _number(k.loss), "loss_share": _number(k.loss_share),
                       "precision": _number(k.precision), "recall": _number(k.recall)}
                for name, k in zip(analysis.classes, m.per_class)
            },
            "change_from_previous": None if previous[index] is None else {
                "loss_change": _number(previous[index].loss_change),
                "by_transition": {t: _number(v) for t, v in zip(TRANSITIONS, previous[index].by_transition)}},
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
    }
