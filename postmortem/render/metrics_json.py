"""metrics.json, schema_version 1 (documented in README.md)."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["SCHEMA_VERSION", "metrics_document"]

SCHEMA_VERSION = 1


def _number(value: float | None) -> float | None:
    """JSON has no NaN or inf: such values, and undefined ones, are written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def metrics_document(analysis, findings: list[dict[str, Any]], skipped: list, extra_epoch_fields=None) -> dict[str, Any]:
    """The metrics.json content: per-epoch metrics, best epoch, findings and skipped checkpoints."""
    epochs = []
    for view in analysis.epochs:
        m = view.metrics
        entry = {
            "checkpoint": view.checkpoint,
            "epoch": int(view.epoch),
            "n_samples": m.n_samples,
            "loss": _number(m.loss),
            "accuracy": _number(m.accuracy),
            "ece": _number(m.ece),
            "brier": _number(m.brier),
            "mean_confidence": _number(m.mean_confidence),
            "temperature": _number(view.temperature),
            "scaled_loss": _number(view.scaled_loss),
            "confusion_matrix": [[int(x) for x in row] for row in m.confusion],
            "per_class": {
                name: {"support": c.support, "loss": _number(c.loss), "loss_share": _number(c.loss_share),
                       "precision": _number(c.precision), "recall": _number(c.recall)}
                for name, c in zip(analysis.classes, m.per_class)
            },
        }
        epochs.append(entry)
    return {
        "schema_version": SCHEMA_VERSION,
        "classes": list(analysis.classes),
        "epochs": epochs,
        "best_epoch": int(analysis.epochs[analysis.best_loss_index].epoch),
        "findings": findings,
        "skipped": [{"checkpoint": s.checkpoint, "error": s.error} for s in skipped],
    }
