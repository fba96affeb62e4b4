"""Template context: plain values for the templates, read from the RenderInput, with no markup built here."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..analyze.decomposition import TRANSITIONS
from ..diagnose import FigureAnchor
from .epoch_view import FOLD_ABOVE, epoch_view_data, matrix_fold
from .input import RenderInput

__all__ = ["summary_context", "report_context"]

CONFUSION_RGB = "0, 114, 178"
# The PDF lists at most this many classes per table (those carrying the most loss); the HTML lists all.
PRINT_MAX_CLASSES = 20
TOP_CONFUSIONS = 8
CONFIDENT_ERROR_ROWS = 25


def _top_confusions(matrix: np.ndarray, class_labels) -> list[dict[str, Any]]:
    """The largest off-diagonal cells: (true class, predicted class, count), largest first."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:TOP_CONFUSIONS]
    pairs = [np.unravel_index(i, off.shape) for i in flat]
    return [{"true": class_labels[t], "pred": class_labels[p], "count": int(off[t, p])} for t, p in pairs if off[t, p]]


def _confusion_cells(matrix: np.ndarray) -> list[list[dict[str, Any]]]:
    """Each cell with its shade: the share of its true-class row, so rare classes stay readable."""
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    return [[{"count": int(matrix[i, j]), "alpha": f"{0.08 + 0.85 * share[i, j]:.3f}" if matrix[i, j] else "0",
              "ink": "#fff" if share[i, j] > 0.55 else "#1b1b1b", "rgb": CONFUSION_RGB, "diag": i == j}
             for j in range(matrix.shape[1])] for i in range(matrix.shape[0])]


def _largest(rows: list[dict[str, Any]], size) -> list[dict[str, Any]]:
    """The PRINT_MAX_CLASSES rows with the largest |size|, kept in class order (all rows when fewer)."""
    if len(rows) <= PRINT_MAX_CLASSES:
        return rows
    keep = set(sorted(range(len(rows)), key=lambda i: -abs(size(rows[i]) or 0.0))[:PRINT_MAX_CLASSES])
    return [row for i, row in enumerate(rows) if i in keep]


def _bar_heights(counts: np.ndarray, scale: int) -> list[str]:
    return [f"{100 * c / scale:.1f}" if scale else "0" for c in counts]


def _key_epochs(analysis) -> dict[int, str]:
    """Epoch index -> why it matters: the first, the lowest-loss, the highest-accuracy and the last epoch."""
    last = len(analysis.epochs) - 1
    notes = {0: "first", analysis.best_loss_index: "lowest loss", last: "last"}
    if analysis.best_accuracy_index not in notes:
        notes[analysis.best_accuracy_index] = "highest accuracy"
    elif analysis.best_accuracy_index == analysis.best_loss_index:
        notes[analysis.best_loss_index] = "lowest loss, highest accuracy"
    return dict(sorted(notes.items()))


def _epoch_rows(inputs: RenderInput) -> list[dict[str, Any]]:
    """One row per epoch for the summary and provenance tables."""
    analysis = inputs.analysis
    return [{"index": index, "checkpoint": view.checkpoint, "epoch": view.epoch, "loss": view.metrics.loss,
             "accuracy": view.metrics.accuracy, "ece": view.calibration.expected_calibration_error,
             "brier": view.calibration.brier_loss, "mean_confidence": view.calibration.mean_confidence,
             "temperature": view.temperature,
             "scaled_loss": view.scaled_loss, "is_best_loss": index == analysis.best_loss_index,
             "sha256": row.sha256, "output_kind": row.output_kind}
            for index, (view, row) in enumerate(zip(analysis.epochs, inputs.checkpoints))]


def _key_detail(inputs: RenderInput, index: int, note: str, fold, scale: int) -> dict[str, Any]:
    """One key epoch's static detail (print, and readers without JavaScript): confusion matrix (folded above
    FOLD_ABOVE classes, with the largest confusions listed), confidence histograms and per-class table."""
    view = inputs.analysis.epochs[index]
    m = view.metrics
    rows = [{"name": name, "colour": colour, "support": c.support, "loss": c.loss, "loss_share": c.loss_share,
             "precision": c.precision, "recall": c.recall}
            for name, colour, c in zip(inputs.class_labels, inputs.colours, m.per_class)]
    return {"index": index, "note": note, "epoch": view.epoch, "checkpoint": view.checkpoint, "loss": m.loss,
            "accuracy": m.accuracy, "confusion": _confusion_cells(fold.apply(m.confusion)),
            "top_confusions": _top_confusions(m.confusion, inputs.class_labels) if fold.n_folded else [],
            "hist_correct": _bar_heights(view.hist_correct, scale), "hist_wrong": _bar_heights(view.hist_wrong, scale),
            "n_correct": int(view.hist_correct.sum()), "n_wrong": int(view.hist_wrong.sum()),
            "per_class": rows, "per_class_print": _largest(rows, lambda row: row["loss_share"])}


VERDICT_QUESTIONS = (("what_happened", "What happened?"), ("model_or_else", "Is it the model or something else?"),
                     ("what_to_try", "What to try?"))


def _verdict_context(verdict) -> dict[str, Any]:
    """The verdict's sentences under their questions, and every assessed cause with its share and role."""
    roles = {verdict.primary_cause: "primary"} | {c: "contributing" for c in verdict.contributing_causes}
    causes = [{"id": a.cause.value, "name": a.cause.value.replace("_", " "), "share": a.share,
               "role": roles.get(a.cause, "not counted"), "facts": a.facts} for a in verdict.assessments]
    causes.sort(key=lambda row: ("primary", "contributing", "not counted").index(row["role"]))
    return {"status": verdict.status.value, "primary": verdict.primary_cause.value if verdict.primary_cause else None,
            "contributing": [c.value for c in verdict.contributing_causes], "classes": list(verdict.classes),
            "answers": [{"question": q, "text": getattr(verdict.sentences, key)} for key, q in VERDICT_QUESTIONS],
            "causes": causes}


def _evidence_tables(analysis, ledger, class_labels) -> dict[str, Any]:
    """The tables beside the figures: which checkpoint to pick, class weight shares, confident errors, CIs."""
    d, b, shares = analysis.decomposition, ledger, analysis.class_shares
    class_rows = [{"name": name, "frequency_share": float(f), "weight_share": float(w),
                   "amplification": float(w / f) if f else None, "loss_change": part.estimate,
                   "loss_change_low": part.low, "loss_change_high": part.high}
                  for name, f, w, part in zip(class_labels, shares.frequency_share, shares.weight_share,
                                              ledger.class_parts)]
    return {
        "choice": [vars(row) | {"is_current": False} for row in analysis.checkpoint_choice.rows],
        "class_shares": class_rows,
        "class_shares_print": _largest(class_rows, lambda row: row["loss_change"]),
        "confident_errors": [vars(row) for row in analysis.confident_errors[:CONFIDENT_ERROR_ROWS]],
        "n_confident_errors": len(analysis.confident_errors),
        "bootstrap": {"from_epoch": analysis.epochs[b.from_index].epoch, "to_epoch": analysis.epochs[b.to_index].epoch,
                      "n_resamples": b.totals.n_resamples, "level": b.totals.confidence_level,
                      "unit": b.totals.resampled_unit, "n_units": b.totals.n_units,
                      "rows": [{"name": name, "estimate": i.estimate, "low": i.low, "high": i.high,
                                "excludes_zero": i.excludes_zero}
                               for name, i in (("loss", b.loss_change),
                                               ("loss after temperature scaling", b.scaled_loss_change),
                                               ("unweighted loss", b.unweighted_loss_change),
                                               ("accuracy", b.accuracy_change), ("macro F1", b.macro_f1_change))]},
        "decomposition": {"from_epoch": analysis.epochs[d.from_index].epoch, "to_epoch": analysis.epochs[d.to_index].epoch,
                          "loss_change": d.loss_change, "by_transition": [float(x) for x in d.by_transition],
                          "by_transition_intervals": [{"low": i.low, "high": i.high} for i in b.transition_parts],
                          "top_1": d.top_1_percent_share, "top_5": d.top_5_percent_share},
    }


def summary_context(inputs: RenderInput) -> dict[str, Any]:
    """What report.md reads, and the HTML's header: the verdict, the findings and the key epochs."""
    analysis = inputs.analysis
    rows = _epoch_rows(inputs)
    return {
        "version": __version__,
        "run_name": inputs.run_name,
        "generated": inputs.generated,
        "n_epochs": len(analysis.epochs),
        "n_items": inputs.n_items,
        "classes": list(inputs.class_labels),
        "verdict": _verdict_context(inputs.verdict),
        "findings": [_finding_context(f) for f in inputs.findings],
        "key_epochs": [{**rows[i], "note": note} for i, note in _key_epochs(analysis).items()],
        "skipped": list(inputs.skipped),
        "unread": [{"name": u.name, "reason": u.reason} for u in inputs.unread],
    }


def report_context(inputs: RenderInput, figures: Sequence, for_print: bool) -> dict[str, Any]:
    """Everything report.html.j2 reads; the slider's data only on screen (the PDF shows the key epochs)."""
    analysis = inputs.analysis
    summary = summary_context(inputs)
    fold = matrix_fold(analysis)
    scale = max(max(int(e.hist_correct.max(initial=0)), int(e.hist_wrong.max(initial=0))) for e in analysis.epochs)
    key_epochs = _key_epochs(analysis)
    return {
        **summary,
        "for_print": for_print,
        "paper": inputs.paper,
        "figures": list(figures),
        "figure_titles": {fig.id: fig.title for fig in figures} | {
            FigureAnchor.CONFIDENT_ERRORS.value: "Items that became confidently wrong",
            FigureAnchor.CHOICE.value: "Which checkpoint to pick",
            FigureAnchor.TRAIN_LOG.value: "The training log beside the recomputed loss"},
        "anchors": {anchor.name.lower(): anchor.value for anchor in FigureAnchor},
        "train_log": _train_log_context(inputs.train_log),
        "nonfinite": [{"checkpoint": n.checkpoint, "epoch": n.epoch, "count": n.n_nonfinite, "counted": n.n_counted}
                      for n in inputs.nonfinite],
        "notes": list(inputs.notes),
        "transitions": TRANSITIONS,
        **_evidence_tables(analysis, inputs.comparison.ledger, inputs.class_labels),
        "print_max_classes": PRINT_MAX_CLASSES,
        "epochs": _epoch_rows(inputs),
        "key_details": [_key_detail(inputs, i, note, fold, scale) for i, note in key_epochs.items()],
        "key_indices": list(key_epochs),
        "matrix_labels": fold.labels(inputs.class_labels),
        "n_folded": fold.n_folded,
        "fold_above": FOLD_ABOVE,
        "epoch_view": None if for_print else
        epoch_view_data(analysis, inputs.class_labels, inputs.colours, CONFUSION_RGB),
        "loss_note": "no class weights" if np.allclose(analysis.class_weights, 1.0) else "class weights applied",
        "provenance": [{"name": k, "value": v} for k, v in inputs.provenance],
    }


def _train_log_context(train_log) -> dict[str, Any] | None:
    """Logged vs recomputed validation loss per matched epoch, when a training log was given or found."""
    if train_log is None:
        return None
    reconciliation = train_log.reconciliation
    rows = [] if reconciliation is None else [
        {"key": int(r[reconciliation.key]), "checkpoint": r["checkpoint"], "logged": float(r["logged_val_loss"]),
         "recomputed": float(r["recomputed_loss"]), "difference": float(r["relative_difference"])}
        for _, r in reconciliation.rows.iterrows()]
    return {"source": train_log.source, "key": reconciliation.key if reconciliation else train_log.key,
            "rows": rows, "agrees": reconciliation is not None and reconciliation.agrees,
            "explanation": reconciliation.explanation_text if reconciliation else "the log has no validation loss "
                                                                                   "for these checkpoints"}


def _finding_context(finding) -> dict[str, Any]:
    rows = [{"name": name, "value": _evidence_value(value),
             "threshold": _evidence_value(finding.thresholds[name]) if name in finding.thresholds else ""}
            for name, value in finding.evidence.items()]
    return {"id": finding.id, "severity": finding.severity.value, "title": finding.title, "summary": finding.summary,
            "evidence": finding.evidence, "evidence_rows": rows, "next_steps": list(finding.next_steps),
            "figure": None if finding.figure is None else finding.figure.value}


def _evidence_value(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() and abs(value) < 1e12 else f"{value:.4g}"
