"""Template context: plain values for the templates, read from the RenderInput, with no markup built here."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..analyze.decomposition import TRANSITIONS
from ..diagnose import FigureAnchor
from .class_rows import MAX_LISTED_CLASSES, ClassRows, class_rows, folded_label, folded_loss
from .epoch_view import FOLD_ABOVE, epoch_view_data, matrix_fold
from .input import RenderInput
from .training_setup import training_setup_context, training_setup_line

__all__ = ["summary_context", "report_context"]

CONFUSION_RGB = "0, 114, 178"
# The PDF lists at most this many classes per table (those carrying the most loss, largest first, and one row for
# the others); the HTML lists class_rows.MAX_LISTED_CLASSES.
PRINT_MAX_CLASSES = 20
TOP_CONFUSIONS = 8
CONFIDENT_ERROR_ROWS = 25


def _top_confusions(confusion, class_labels) -> list[dict[str, Any]]:
    """The largest off-diagonal cells of a ConfusionCounts: (true class, predicted class, count), largest first
    (ties in row-major order)."""
    off = confusion.off_diagonal()
    top = np.argsort(-off.counts, kind="stable")[:TOP_CONFUSIONS]
    return [{"true": class_labels[int(off.rows[k])], "pred": class_labels[int(off.columns[k])],
             "count": int(off.counts[k])} for k in top]


def _confusion_cells(matrix: np.ndarray) -> list[list[dict[str, Any]]]:
    """Each cell with its shade: the share of its true-class row, so rare classes stay readable."""
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    return [[{"count": int(matrix[i, j]), "alpha": f"{0.08 + 0.85 * share[i, j]:.3f}" if matrix[i, j] else "0",
              "ink": "#fff" if share[i, j] > 0.55 else "#1b1b1b", "rgb": CONFUSION_RGB, "diag": i == j}
             for j in range(matrix.shape[1])] for i in range(matrix.shape[0])]


def _listed(make_row, make_other, values: np.ndarray, limit: int) -> list[dict[str, Any]]:
    """A per-class table's rows (class_rows): make_row(c) for each listed class, and make_other(rows) for the
    folded ones when there are any (the row with "other": True)."""
    rows: ClassRows = class_rows(values, limit)
    listed = [{**make_row(c), "other": False} for c in rows.shown]
    return listed + [{**make_other(rows), "other": True}] if rows.n_folded else listed


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
    FOLD_ABOVE classes, with the largest confusions listed), confidence histograms and per-class table (above
    MAX_LISTED_CLASSES, or PRINT_MAX_CLASSES in print, the classes with the largest loss share and one row for the
    others)."""
    view = inputs.analysis.epochs[index]
    m = view.metrics

    def row(c: int) -> dict[str, Any]:
        k = m.class_metrics(c)
        return {"name": inputs.class_labels[c], "colour": inputs.colours[c], "support": k.support, "loss": k.loss,
                "loss_share": k.loss_share, "precision": k.precision, "recall": k.recall}

    def other(rows: ClassRows) -> dict[str, Any]:
        return {"name": folded_label(rows), "colour": None, "support": int(m.support[rows.folded].sum()),
                "loss": folded_loss(m, rows), "loss_share": float(m.loss_share[rows.folded].sum()),
                "precision": None, "recall": None}

    return {"index": index, "note": note, "epoch": view.epoch, "checkpoint": view.checkpoint, "loss": m.loss,
            "accuracy": m.accuracy, "confusion": _confusion_cells(fold.apply(m.confusion_counts)),
            "top_confusions": _top_confusions(m.confusion_counts, inputs.class_labels) if fold.n_folded else [],
            "hist_correct": _bar_heights(view.hist_correct, scale), "hist_wrong": _bar_heights(view.hist_wrong, scale),
            "n_correct": int(view.hist_correct.sum()), "n_wrong": int(view.hist_wrong.sum()),
            "per_class": _listed(row, other, m.loss_share, MAX_LISTED_CLASSES),
            "per_class_print": _listed(row, other, m.loss_share, PRINT_MAX_CLASSES)}


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
    parts = ledger.class_parts

    def row(c: int) -> dict[str, Any]:
        f, w, part = float(shares.frequency_share[c]), float(shares.weight_share[c]), parts[c]
        return {"name": class_labels[c], "frequency_share": f, "weight_share": w,
                "amplification": w / f if f else None, "loss_change": part.estimate, "loss_change_low": part.low,
                "loss_change_high": part.high}

    def other(rows: ClassRows) -> dict[str, Any]:
        f, w = float(shares.frequency_share[rows.folded].sum()), float(shares.weight_share[rows.folded].sum())
        part, _ = ledger.classes_part(tuple(int(c) for c in rows.folded))
        return {"name": folded_label(rows), "frequency_share": f, "weight_share": w,
                "amplification": w / f if f else None, "loss_change": part.estimate, "loss_change_low": part.low,
                "loss_change_high": part.high}

    estimates = np.array([part.estimate for part in parts])
    grown = [{"true": class_labels[k.true_class], "predicted": class_labels[k.predicted_class],
              "before": k.share_before, "after": k.share_after, "growth_low": k.growth.low,
              "growth_high": k.growth.high, "part": k.part.estimate, "part_low": k.part.low, "part_high": k.part.high}
             for k in ledger.confusions]
    return {
        "grown_confusions": grown,
        "choice": [vars(row) | {"is_current": False} for row in analysis.checkpoint_choice.rows],
        "class_shares": _listed(row, other, estimates, MAX_LISTED_CLASSES),
        "class_shares_print": _listed(row, other, estimates, PRINT_MAX_CLASSES),
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


def _setup_source(inputs: RenderInput) -> str:
    """Where a training setup would be: the checkpoints, or the predictions files."""
    return "predictions files" if dict(inputs.provenance).get("mode") == "predictions" else "checkpoints"


def summary_context(inputs: RenderInput) -> dict[str, Any]:
    """What report.md reads, and the HTML's header: the verdict, the findings, the key epochs and the training
    setup in one line."""
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
        "training_setup_line": training_setup_line(analysis, inputs.lr_events, _setup_source(inputs)),
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
            FigureAnchor.TRAIN_LOG.value: "The training log beside the recomputed loss",
            FigureAnchor.TRAINING.value: "The training subset beside the validation set",
            FigureAnchor.TRAINING_SETUP.value: "Training setup"},
        "anchors": {anchor.name.lower(): anchor.value for anchor in FigureAnchor},
        "train_log": _train_log_context(inputs.train_log),
        "training": _training_context(inputs),
        "train_mode": _train_mode_context(inputs),
        "training_setup": training_setup_context(analysis, inputs.lr_events, _setup_source(inputs)),
        "nonfinite": [{"checkpoint": n.checkpoint, "epoch": n.epoch, "count": n.n_nonfinite, "counted": n.n_counted}
                      for n in inputs.nonfinite],
        "notes": list(inputs.notes),
        "transitions": TRANSITIONS,
        **_evidence_tables(analysis, inputs.comparison.ledger, inputs.class_labels),
        "print_max_classes": PRINT_MAX_CLASSES,
        "max_listed_classes": MAX_LISTED_CLASSES,
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


TRAINING_ROWS = 20       # memorised and leaked items shown in the report (metrics.json lists them all)


def _training_context(inputs: RenderInput) -> dict[str, Any] | None:
    """The training subset beside the validation set: gap per epoch, classes, the compared epochs' label evidence
    and class signals, memorised labels and leakage (None without a subset)."""
    analysis, training = inputs.analysis, inputs.analysis.training
    if training is None:
        return None
    names, side = inputs.class_labels, inputs.comparison.training
    first, last = side.from_index, side.to_index
    val_first, val_last = analysis.epochs[first].metrics, analysis.epochs[last].metrics
    recalls = training.recalls
    classes = [{"name": name, "validation_share": float(v), "training_share": float(t),
                "training_recall_before": recalls[first, k], "training_recall_after": recalls[last, k],
                "validation_recall_before": val_first.per_class[k].recall,
                "validation_recall_after": val_last.per_class[k].recall}
               for k, (name, t, v) in enumerate(zip(names, training.class_share, training.validation_class_share))]
    memorised = training.memorised
    leakage = training.leakage
    return {
        "n_items": training.n_items,
        "from_epoch": analysis.epochs[first].epoch, "to_epoch": analysis.epochs[last].epoch,
        "epochs": [{"epoch": view.epoch, "validation_loss": view.metrics.loss, "training_loss": m.loss,
                    "training_accuracy": m.accuracy, "gap": gap.estimate, "gap_low": gap.low, "gap_high": gap.high}
                   for view, m, gap in zip(analysis.epochs, training.epochs, training.gap)],
        "gap_change": side.gap_change,
        "classes": classes,
        "evidence": [{"pair": f"{names[e.true_class]} → {names[e.predicted_class]}",
                      "labelled": names[e.predicted_class], "placed": names[e.true_class],
                      "train_share": e.train_share, "validation_share": e.validation_share, "excess": e.excess,
                      "n_items": len(e.train_indices)} for e in side.pair_evidence],
        "memorised": {"n_negative": len(memorised.indices), "n_memorised": memorised.n_memorised,
                      "rows": [{"id": str(training.ids[i]), "label": names[training.labels[i]],
                                "competitor": names[memorised.competitor[j]],
                                "aum": float(memorised.area_under_margin[j]),
                                "fit_from": None if memorised.fit_from[j] < 0 else analysis.epochs[memorised.fit_from[j]].epoch,
                                "forgotten": int(memorised.forgetting_events[j])}
                               for j, i in enumerate(memorised.indices[:TRAINING_ROWS])]},
        "leakage": {"n_items": len(leakage.indices), "by_input_hash": len(leakage.by_input_hash),
                    "hashed": leakage.input_hashes_known, "by_outputs": len(leakage.by_outputs),
                    "tolerance": leakage.tolerance,
                    "rows": [{"id": str(analysis.ids[v]), "training_id": str(training.ids[t])}
                             for v, t in list(zip(leakage.indices, leakage.matched_training))[:TRAINING_ROWS]]},
    }


def _train_mode_context(inputs: RenderInput) -> dict[str, Any] | None:
    """Train mode against eval mode at the compared epochs, when measured."""
    modes = inputs.comparison.modes
    if modes is None:
        return None
    return {"rows": [{"epoch": inputs.analysis.epochs[m.epoch_index].epoch, "layers": m.layers or "none",
                      "eval_loss": m.eval_loss, "train_mode_loss": m.train_mode_loss,
                      "spread": m.train_mode_spread, "recalibrated_loss": m.recalibrated_loss}
                     for m in modes.epochs],
            "removes": modes.recalibration_removes, "share": modes.recalibration_share}


def _train_log_context(train_log) -> dict[str, Any] | None:
    """Logged vs recomputed validation loss per matched epoch, when a training log was given or found, with the
    values of the reduction that reproduces the log (`reduction`: its name) when one does."""
    if train_log is None:
        return None
    reconciliation = train_log.reconciliation
    named = None if reconciliation is None or reconciliation.agrees else reconciliation.explanation
    rows = [] if reconciliation is None else [
        {"key": int(r[reconciliation.key]), "checkpoint": r["checkpoint"], "logged": float(r["logged_val_loss"]),
         "recomputed": float(r["recomputed_loss"]), "difference": float(r["relative_difference"]),
         "reduction": None if named is None else float(r[named])}
        for _, r in reconciliation.rows.iterrows()]
    return {"source": train_log.source, "key": reconciliation.key if reconciliation else train_log.key,
            "rows": rows, "agrees": reconciliation is not None and reconciliation.agrees, "reduction": named,
            "explanation": reconciliation.explanation_text if reconciliation else "The log has no validation loss "
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
