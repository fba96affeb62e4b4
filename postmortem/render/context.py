"""Template context: plain values for the templates, with no markup built here."""
from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np

from .. import __version__

__all__ = ["report_context"]

CONFUSION_RGB = "0, 114, 178"


def _confusion_cells(matrix: np.ndarray) -> list[list[dict[str, Any]]]:
    """Each cell with its shade: the share of its true-class row, so rare classes stay readable."""
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    return [[{"count": int(matrix[i, j]), "alpha": f"{0.08 + 0.85 * share[i, j]:.3f}" if matrix[i, j] else "0",
              "ink": "#fff" if share[i, j] > 0.55 else "#1b1b1b", "rgb": CONFUSION_RGB, "diag": i == j}
             for j in range(matrix.shape[1])] for i in range(matrix.shape[0])]


def _bar_heights(counts: np.ndarray, scale: int) -> list[str]:
    return [f"{100 * c / scale:.1f}" if scale else "0" for c in counts]


def report_context(*, run_name: str, analysis, evaluation, findings, verdict, figures, colours,
                   class_labels, provenance: list[tuple[str, str]], paper: str = "a4") -> dict[str, Any]:
    """Everything report.html.j2 reads."""
    scale = max(max(int(e.hist_correct.max(initial=0)), int(e.hist_wrong.max(initial=0))) for e in analysis.epochs)
    epochs = []
    for index, (view, evaluated) in enumerate(zip(analysis.epochs, evaluation.epochs)):
        m = view.metrics
        epochs.append({
            "checkpoint": view.checkpoint, "epoch": view.epoch, "loss": m.loss, "accuracy": m.accuracy,
            "ece": m.ece, "brier": m.brier, "mean_confidence": m.mean_confidence,
            "temperature": view.temperature, "scaled_loss": view.scaled_loss,
            "is_best_loss": index == analysis.best_loss_index,
            "confusion": _confusion_cells(m.confusion),
            "hist_correct": _bar_heights(view.hist_correct, scale), "hist_wrong": _bar_heights(view.hist_wrong, scale),
            "n_correct": int(view.hist_correct.sum()), "n_wrong": int(view.hist_wrong.sum()),
            "per_class": [{"name": name, "colour": colour, "support": c.support, "loss": c.loss,
                           "loss_share": c.loss_share, "precision": c.precision, "recall": c.recall}
                          for name, colour, c in zip(class_labels, colours, m.per_class)],
            "sha256": evaluated.sha256[:16], "output_kind": evaluated.output_kind,
        })
    notes = {0: "first", analysis.best_loss_index: "lowest loss", len(epochs) - 1: "last"}
    if analysis.best_accuracy_index not in notes:
        notes[analysis.best_accuracy_index] = "highest accuracy"
    elif analysis.best_accuracy_index == analysis.best_loss_index:
        notes[analysis.best_loss_index] = "lowest loss, highest accuracy"
    key_epochs = [{**epochs[i], "note": note} for i, note in sorted(notes.items())]
    weighted = not np.allclose(analysis.class_weights, 1.0)
    return {
        "version": __version__,
        "run_name": run_name,
        "generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "paper": paper,
        "n_epochs": len(analysis.epochs),
        "n_items": len(evaluation.items),
        "classes": list(class_labels),
        "verdict": verdict,
        "findings": [_finding_context(f) for f in findings],
        "figures": figures,
        "figure_titles": {fig.id: fig.title for fig in figures},
        "epochs": epochs,
        "key_epochs": key_epochs,
        "skipped": evaluation.skipped,
        "loss_note": "class weights applied" if weighted else "no class weights",
        "provenance": [{"name": k, "value": v} for k, v in provenance],
    }


def _finding_context(finding) -> dict[str, Any]:
    rows = [{"name": name, "value": _evidence_value(value),
             "threshold": _evidence_value(finding.thresholds[name]) if name in finding.thresholds else ""}
            for name, value in finding.evidence.items()]
    return {"id": finding.id, "severity": finding.severity.value, "title": finding.title, "summary": finding.summary,
            "evidence": finding.evidence, "evidence_rows": rows, "next_steps": list(finding.next_steps),
            "figure": finding.figure}


def _evidence_value(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() and abs(value) < 1e12 else f"{value:.4g}"
