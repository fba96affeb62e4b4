"""The report's figures as inline SVG, drawn from numbers computed in analyze/ with the kit in render/svg.py.

Every class keeps one colour in every figure (Okabe-Ito, colour-blind safe), bands and bars carry hatching
and lines differ in dash and marker, so the report still reads when printed in grey. Above
class_rows.MAX_LISTED_CLASSES classes, the per-class bars and bands show the classes that carry the most and sum
the others into one (grey), and the heat maps fold as the epoch view's matrix does (epoch_view.matrix_fold): a
1,000-class loss-share figure was 0.67 MB of 1,000 bands, and a heat map of 1,000 rows has under a pixel per row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..analyze.decomposition import TRANSITIONS
from ..diagnose import FigureAnchor
from .class_rows import MAX_LISTED_CLASSES, class_rows, folded_label
from .epoch_view import MatrixFold, matrix_fold
from .svg import (FONT_SIZE, INK, MUTED, Axes, Canvas, LegendEntry, clip_text, colour_map, hex_colour, legend,
                  nice_ticks, text_width)

__all__ = ["Figure", "class_colours", "render_figures", "OKABE_ITO", "HATCHES"]

# Okabe & Ito's colour-blind-safe palette; beyond 8 classes, evenly spaced colours from cividis.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
LOSS_COLOUR, ACCURACY_COLOUR, SCALED_COLOUR, TRAIN_COLOUR = "#D55E00", "#0072B2", "#009E73", "#7f7f7f"
TRANSITION_STYLE = {   # colour and hatch per transition group (correct/wrong before -> after)
    "correct->correct": ("#56B4E9", ""),
    "correct->wrong": ("#D55E00", "xx"),
    "wrong->correct": ("#009E73", ".."),
    "wrong->wrong": ("#CC79A7", "//"),
}
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")
ANNOTATE_MAX_CLASSES = 12     # matrices name their classes and print their counts up to this many classes
WIDTH = 760.0                 # every figure's width in SVG units; the page scales it to its column
DASHED, DOTTED, DASH_DOT = "6 3", "2 2.5", "7 3 1.5 3"
LR_COLOUR = "#CC79A7"
LR_EVENT_FILLS = {"drop": "#e9e9e9", "restart": "#f5e4ee", "warmup": "#f5e4ee"}   # falls grey, rises a pink tint
LR_DASHES = ("", DASHED, DOTTED, DASH_DOT)
LR_PANEL_HEIGHT = 130.0        # the learning-rate panel under the loss curve, when the checkpoints saved a learning rate
LR_MAX_LINES = 6               # param groups drawn (those whose learning rates differ)
LR_MAX_LABELS = 12             # events labelled in the panel (all are shaded)
LR_EVENT_WORDS = {"drop": "drop", "restart": "restart", "warmup": "warm-up"}
OTHER_COLOUR = "#b0b0b0"      # the band or bar of the classes summed into one


@dataclass(frozen=True)
class Figure:
    """One figure: its anchor id, title, caption and an inline data: URI."""

    id: str
    title: str
    caption: str
    data_uri: str


def class_colours(n_classes: int) -> list[str]:
    """One colour per class, the same in every figure."""
    if n_classes <= len(OKABE_ITO):
        return list(OKABE_ITO[:n_classes])
    return [hex_colour(rgb) for rgb in colour_map("cividis", np.linspace(0.0, 1.0, n_classes))]


def _tint(colour: str, strength: float) -> str:
    """`colour` laid over white at `strength` (an opaque stand-in for transparency, which print handles poorly)."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    return hex_colour(np.rint(255 - strength * (255 - rgb)))


def _scale(*arrays, include: float | None = None) -> tuple[tuple[float, float], list[float]]:
    """Axis limits and round-number ticks for the finite values of the arrays. With `include` (e.g. 0 for
    shares and rates) the axis reaches that value and ends on ticks; else it spans the data with a 5% margin
    and the ticks fall inside, as a line chart wants."""
    values = np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in arrays])
    values = values[np.isfinite(values)]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if include is not None:
        ticks = nice_ticks(min(low, include), max(high, include), 5)
        return (ticks[0], ticks[-1]), ticks
    pad = (high - low) * 0.05 or max(abs(high) * 0.05, 0.05)
    low, high = low - pad, high + pad
    ticks = [t for t in nice_ticks(low, high, 6) if low <= t <= high]
    return (low, high), ticks


def _epoch_axis(epochs: np.ndarray) -> tuple[tuple[float, float], list[float], list[str]]:
    """x limits (a little past the first and last checkpoint), integer ticks and their labels."""
    low, high = float(epochs.min()), float(epochs.max())
    pad = max((high - low) * 0.03, 0.5)
    ticks = [t for t in nice_ticks(low, high, 8, integer=True) if low <= t <= high] or [low]
    return (low - pad, high + pad), ticks, [f"{int(t)}" for t in ticks]


def _plot_box(top: float, height: float, left: float = 64.0, right: float = 64.0) -> tuple[float, float, float, float]:
    return left, top, WIDTH - left - right, height - top - 46.0


def _learning_rate_axis(series) -> tuple[np.ndarray, tuple[float, float], list[float], list[str], bool]:
    """The learning rates as plotted (log10 when they span a factor of 10), the axis limits, ticks and labels, and
    whether the scale is logarithmic."""
    rates = series.rates
    log = series.spans_decades
    if log:
        plotted = np.where(rates > 0, np.log10(np.where(rates > 0, rates, 1.0)), np.nan)
        low, high = float(np.nanmin(plotted)), float(np.nanmax(plotted))
        ticks = [float(k) for k in range(int(np.floor(low)), int(np.ceil(high)) + 1)]
        return plotted, (ticks[0], ticks[-1] if ticks[-1] > ticks[0] else ticks[0] + 1), ticks, \
            [f"1e{int(k)}" for k in ticks], True
    limits, ticks = _scale(rates, include=0.0)
    return rates, limits, ticks, [f"{t:.3g}" for t in ticks], False


def _distinct_groups(rates: np.ndarray) -> list[int]:
    """The param groups whose lr series differ (the first of each set of identical ones), at most LR_MAX_LINES."""
    kept: list[int] = []
    for g in range(rates.shape[1]):
        if not any(np.array_equal(rates[:, g], rates[:, k], equal_nan=True) for k in kept):
            kept.append(g)
    return kept[:LR_MAX_LINES]


def _curves(analysis, epochs: np.ndarray, train_log, lr_events: Sequence = ()) -> Figure:
    losses, accuracy = analysis.losses, analysis.accuracies * 100
    best, best_accuracy = analysis.best_loss_index, analysis.best_accuracy_index
    series = analysis.learning_rates
    with_lr = series.known
    logged = []
    if train_log is not None and train_log.key in train_log.table:
        table = train_log.table
        for column, dash, label in (("train_loss", DOTTED, "training loss (log)"),
                                    ("val_loss", DASHED, "validation loss (log)")):
            if column in table:
                rows = table[[train_log.key, column]].dropna().to_numpy(dtype=np.float64)
                if len(rows):
                    logged.append((rows[:, 0], rows[:, 1], dash, label))
    groups = _distinct_groups(series.rates) if with_lr else []
    canvas = Canvas(WIDTH, 320 + (LR_PANEL_HEIGHT if with_lr else 0))
    entries = [LegendEntry("validation loss (recomputed)", LOSS_COLOUR, marker="o")]
    entries += [LegendEntry(label, TRAIN_COLOUR, dash=dash) for _, _, dash, label in logged]
    entries += [LegendEntry("validation accuracy", ACCURACY_COLOUR, dash=DASH_DOT, marker="s")]
    entries += [LegendEntry("learning rate" + (f", param group {g + 1}" if len(groups) > 1 else "") + " (lower panel)",
                            LR_COLOUR, dash=LR_DASHES[i % len(LR_DASHES)], marker="^") for i, g in enumerate(groups)]
    kinds = {event.kind.value for event in lr_events} if with_lr else set()
    entries += [LegendEntry(label, LR_EVENT_FILLS[kind], box=True) for kind, label in
                (("drop", "LR fell (between checkpoints)"), ("restart", "LR rose (between checkpoints)"))
                if kind in kinds or (kind == "restart" and "warmup" in kinds)]
    top = 14 + legend(canvas, entries, 64, 6, WIDTH - 128)
    xlim, xticks, xlabels = _epoch_axis(epochs)
    loss_limits, loss_ticks = _scale(losses, *[ys for _, ys, _, _ in logged])
    accuracy_limits, accuracy_ticks = _scale(accuracy)
    box = _plot_box(top, 320) if not with_lr else (64.0, top, WIDTH - 128.0, 320.0 - top - 24.0)
    left = Axes(canvas, box, xlim, loss_limits)
    right = Axes(canvas, box, xlim, accuracy_limits)
    lower_box = (64.0, 310.0, WIDTH - 128.0, LR_PANEL_HEIGHT - 36.0)
    for event in lr_events if with_lr else ():    # under everything else: where the lr changed
        x0, x1 = float(left.x(event.from_epoch)), float(left.x(event.to_epoch))
        for panel_top, panel_height in ((box[1], box[3]), (lower_box[1], lower_box[3])):
            canvas.rect(x0, panel_top, x1 - x0, panel_height, LR_EVENT_FILLS[event.kind.value])
    left.y_axis(loss_ticks, "loss (weighted NLL, nats)", colour=LOSS_COLOUR, grid=True)
    right.y_axis(accuracy_ticks, "accuracy (%)", side="right", colour=ACCURACY_COLOUR)
    left.x_axis(xticks, "" if with_lr else "epoch", [""] * len(xticks) if with_lr else xlabels)
    left.vline(epochs[best], LOSS_COLOUR, DASHED)
    right.vline(epochs[best_accuracy], ACCURACY_COLOUR, DOTTED)
    for xs, ys, dash, _ in logged:
        left.line(xs, ys, TRAIN_COLOUR, 1.3, dash)
    left.line(epochs, losses, LOSS_COLOUR, marker="o")
    right.line(epochs, accuracy, ACCURACY_COLOUR, dash=DASH_DOT, marker="s")
    x = float(left.x(epochs[best]))
    anchor, shift = ("end", -5) if x > left.left + 0.75 * left.width else ("start", 5)
    canvas.text(x + shift, left.top + 14, f"lowest loss, epoch {epochs[best]}", FONT_SIZE - 1, anchor, LOSS_COLOUR)
    left.frame()
    caption = ("Loss (left axis) and accuracy (right axis) per checkpoint; dashed lines mark the lowest loss and "
               "highest accuracy." + (" Grey: curves from the training log." if logged else ""))
    if with_lr:
        _learning_rate_panel(canvas, lower_box, xlim, series, groups, lr_events, epochs, (xticks, xlabels))
        caption += (" Lower panel: the learning rate each checkpoint saved" + (" (log scale)" if series.spans_decades
                                                                                 else "")
                    + ("; shaded: where it changed between two checkpoints (a drop, a rise after a decline, a "
                       "warm-up)." if lr_events else "."))
    return Figure(FigureAnchor.CURVES.value, "Validation loss and accuracy" + (", and the learning rate" if with_lr
                                                                                else ""), caption, canvas.data_uri())


def _learning_rate_panel(canvas: Canvas, box, xlim, series, groups: list[int], lr_events: Sequence,
                         epochs: np.ndarray, x_ticks: tuple[list[float], list[str]]) -> None:
    """The learning rate below the loss curve, on its own axis (log10 when it spans decades), events labelled."""
    plotted, limits, ticks, labels, log = _learning_rate_axis(series)
    ax = Axes(canvas, box, xlim, limits)
    ax.y_axis(ticks, "learning rate" + (" (log)" if log else ""), labels, colour=LR_COLOUR, grid=True)
    ax.x_axis(x_ticks[0], "epoch", x_ticks[1])
    for i, g in enumerate(groups):
        ax.line(epochs, plotted[:, g], LR_COLOUR, 1.4, LR_DASHES[i % len(LR_DASHES)], marker="^")
    for event in list(lr_events)[:LR_MAX_LABELS]:
        middle = float(ax.x((event.from_epoch + event.to_epoch) / 2))
        canvas.text(middle, ax.top + 10, LR_EVENT_WORDS[event.kind.value], FONT_SIZE - 2, "middle", MUTED)
    ax.frame()


def _decomposition(analysis, class_labels: Sequence[str]) -> Figure:
    d, views = analysis.decomposition, analysis.epochs
    rows = class_rows(d.by_class_transition.sum(axis=1))
    table = d.by_class_transition[list(rows.shown)]
    names = [class_labels[c] for c in rows.shown]
    if rows.n_folded:
        table = np.vstack([table, d.by_class_transition[rows.folded].sum(axis=0)])
        names.append(folded_label(rows))
    n = len(names)
    pitch = float(np.clip(440.0 / max(n, 1), 7.0, 24.0))
    size = min(FONT_SIZE - 1, pitch * 0.85)
    labels = [clip_text(name, 150, size) for name in names]
    left_margin = min(max(text_width(label, size) for label in labels), 150) + 18
    canvas = Canvas(WIDTH, 0)
    top = 12 + legend(canvas, [LegendEntry(name, colour, hatch=hatch, box=True)
                               for name, (colour, hatch) in TRANSITION_STYLE.items()], left_margin, 6,
                      WIDTH - left_margin - 20)
    canvas.height = top + pitch * n + 46
    positive, negative = np.clip(table, 0, None).sum(axis=1), np.clip(table, None, 0).sum(axis=1)
    limits, ticks = _scale(positive, negative, include=0.0)
    ax = Axes(canvas, (left_margin, top, WIDTH - left_margin - 20, pitch * n), limits, (0, 1))
    ax.x_axis(ticks, "part of the loss change (nats)", grid=True)
    above, below = np.zeros(n), np.zeros(n)
    for t, name in enumerate(TRANSITIONS):
        colour, hatch = TRANSITION_STYLE[name]
        for c in range(n):
            value = table[c, t]
            if value == 0:
                continue
            start = above[c] if value > 0 else below[c]
            x0, x1 = float(ax.x(start)), float(ax.x(start + value))
            canvas.rect(x0, top + pitch * (c + 0.14), x1 - x0, pitch * 0.72, colour, hatch, edge="#ffffff")
            if value > 0:
                above[c] += value
            else:
                below[c] += value
    for c, label in enumerate(labels):
        canvas.text(left_margin - 6, top + pitch * (c + 0.5), label, size, "end", baseline="middle")
    ax.vline(0.0, INK, width=1.0)
    ax.frame()
    return Figure(FigureAnchor.DECOMPOSITION.value,
                  f"Where the loss change comes from (epoch {views[d.from_index].epoch} → {views[d.to_index].epoch})",
                  f"Each bar is one true class's exact part of the change dL = {d.loss_change:+.4f}, split by whether "
                  "its items were correct or wrong before and after; the bars sum to dL."
                  + (f" The {len(rows.shown)} classes with the largest part, largest first; the last bar sums the "
                     f"other {rows.n_folded}." if rows.n_folded else ""), canvas.data_uri())


def _loss_shares(analysis, epochs: np.ndarray, class_labels: Sequence[str], colours: Sequence[str]) -> Figure:
    all_shares = analysis.loss_shares
    rows = class_rows(all_shares.mean(axis=0))
    bands = [(c, all_shares[:, c], colours[c], HATCHES[c % len(HATCHES)]) for c in rows.shown]
    if rows.n_folded:   # the listed classes from the bottom, largest first, and the others in one band on top
        bands.append((None, all_shares[:, rows.folded].sum(axis=1), OTHER_COLOUR, ""))
    n = len(class_labels)
    canvas = Canvas(WIDTH, 0)
    entries = [LegendEntry(clip_text(class_labels[c], 120), colours[c], hatch=HATCHES[c % len(HATCHES)], box=True)
               for c in reversed(range(n))] if n <= 20 else []
    top = 14 + (legend(canvas, entries, 64, 6, WIDTH - 84) if entries else 0)
    canvas.height = top + 300
    shares = np.column_stack([values for _, values, _, _ in bands])
    stacked = np.cumsum(shares, axis=1)
    limits, ticks = _scale(stacked[:, -1], include=0.0)
    xlim, xticks, xlabels = _epoch_axis(epochs)
    ax = Axes(canvas, _plot_box(top, canvas.height, right=20), xlim, limits)
    ax.y_axis(ticks, "loss share (nats)")
    ax.x_axis(xticks, "epoch", xlabels)
    for k, (_, _, colour, hatch) in enumerate(bands):
        ax.band(epochs, stacked[:, k] - shares[:, k], stacked[:, k], colour, hatch=hatch, edge="#ffffff")
    ax.frame()
    folded = (f" The {len(rows.shown)} classes with the largest mean share, largest at the bottom; the grey band on "
              f"top sums the other {rows.n_folded}." if rows.n_folded else "")
    return Figure(FigureAnchor.LOSS_SHARES.value, "Loss decomposed by class",
                  "Each band is one class's additive part of the epoch loss (Σ over its items of w[y]·NLL / Σ w[y]); "
                  "bands sum to the loss." + ("" if entries else " Colours run from dark (first class) to yellow "
                                              "(last).") + folded, canvas.data_uri())


def _calibration(analysis, epochs: np.ndarray) -> Figure:
    views = analysis.epochs
    losses = analysis.losses
    scaled = np.array([v.scaled_loss for v in views])
    temperature = np.array([v.temperature for v in views])
    ece10 = 10 * np.array([v.calibration.expected_calibration_error for v in views])
    gap = _tint(LOSS_COLOUR, 0.18)
    canvas = Canvas(WIDTH, 320)
    top = 14 + legend(canvas, [LegendEntry("loss", LOSS_COLOUR, marker="o"),
                               LegendEntry("loss after temperature scaling", SCALED_COLOUR, dash=DASHED, marker="^"),
                               LegendEntry("calibration gap", gap, box=True),
                               LegendEntry("fitted temperature T", INK, dash=DOTTED),
                               LegendEntry("ECE × 10", ACCURACY_COLOUR, dash=DASH_DOT)], 64, 6, WIDTH - 128)
    xlim, xticks, xlabels = _epoch_axis(epochs)
    (loss_limits, loss_ticks), (right_limits, right_ticks) = _scale(losses, scaled), _scale(temperature, ece10)
    box = _plot_box(top, 320)
    left = Axes(canvas, box, xlim, loss_limits)
    right = Axes(canvas, box, xlim, right_limits)
    left.y_axis(loss_ticks, "loss (nats)", grid=True)
    right.y_axis(right_ticks, "T  /  ECE × 10", side="right")
    left.x_axis(xticks, "epoch", xlabels)
    left.band(epochs, scaled, np.maximum(losses, scaled), gap)
    right.line(epochs, temperature, INK, 1.3, DOTTED)
    right.line(epochs, ece10, ACCURACY_COLOUR, 1.3, DASH_DOT)
    left.line(epochs, losses, LOSS_COLOUR, marker="o")
    left.line(epochs, scaled, SCALED_COLOUR, dash=DASHED, marker="^")
    left.frame()
    return Figure(FigureAnchor.CALIBRATION.value, "Raw vs temperature-scaled loss",
                  "Temperature scaling (T fitted per epoch, loss cross-fitted on two halves) removes miscalibration "
                  "but cannot change a single prediction: the gap between the curves is calibration, the scaled "
                  "curve is discrimination.", canvas.data_uri())


def _reliability_panel(canvas: Canvas, box, diagram, title: str, y_labels: bool) -> None:
    ax = Axes(canvas, box, (0.0, 1.0), (0.0, 1.0))
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ax.y_axis(ticks, "accuracy" if y_labels else "", None if y_labels else [""] * 6, grid=True)
    ax.x_axis(ticks, "confidence (max probability)", grid=True)
    edges = diagram.bin_edges
    for k in np.flatnonzero(diagram.counts > 0):
        x0, x1 = float(ax.x(edges[k])), float(ax.x(edges[k + 1]))
        y = float(ax.y(diagram.accuracy[k]))
        canvas.rect(x0, y, x1 - x0, ax.bottom - y, "#56B4E9", edge="#0072B2")
    canvas.line(float(ax.x(0)), float(ax.y(0)), float(ax.x(1)), float(ax.y(1)), TRAIN_COLOUR, 1.0, DASHED)
    filled = diagram.counts > 0
    for c in diagram.mean_confidence[filled]:
        canvas.marker(float(ax.x(c)), float(ax.y(c)), "o", LOSS_COLOUR, 2.6)
    canvas.text(ax.left + ax.width / 2, ax.top - 6, title, FONT_SIZE, "middle")
    ax.frame()


def _reliability(analysis) -> Figure:
    views = analysis.epochs
    best, last = analysis.best_loss_index, len(views) - 1
    canvas = Canvas(WIDTH, 340)
    top = 30 + legend(canvas, [LegendEntry("accuracy in bin", "#56B4E9", box=True),
                               LegendEntry("mean confidence in bin", LOSS_COLOUR, marker="o", line=False),
                               LegendEntry("perfect calibration", TRAIN_COLOUR, dash=DASHED)], 60, 6, WIDTH - 80)
    width = (WIDTH - 60 - 20 - 30) / 2
    height = 340 - top - 46
    _reliability_panel(canvas, (60, top, width, height), views[best].calibration.reliability,
                       f"epoch {views[best].epoch} (lowest loss)", True)
    _reliability_panel(canvas, (60 + width + 30, top, width, height), views[last].calibration.reliability,
                       f"epoch {views[last].epoch} (last)", False)
    return Figure(FigureAnchor.RELIABILITY.value, "Reliability diagrams",
                  "Accuracy against confidence in 15 equal-width bins; bars below the diagonal are overconfident.",
                  canvas.data_uri())


def _confidence(analysis, epochs: np.ndarray) -> Figure:
    views = analysis.epochs
    n = len(views)
    pitch = float(np.clip(420.0 / n, 3.0, 16.0))
    canvas = Canvas(WIDTH, 36 + pitch * n + 46)
    width = (WIDTH - 56 - 40 - 2 * 56) / 2
    step = max(1, int(np.ceil(14 / pitch)))     # a label every 14 units at least
    for panel, (histograms, title) in enumerate(((np.array([v.hist_correct for v in views]), "correct predictions"),
                                                 (np.array([v.hist_wrong for v in views]), "wrong predictions"))):
        totals = histograms.sum(axis=1, keepdims=True)
        fractions = np.divide(histograms, totals, out=np.zeros(histograms.shape), where=totals > 0)
        top_value = max(float(fractions.max()), 1e-9)
        left = 56 + panel * (width + 96)
        ax = Axes(canvas, (left, 36, width, pitch * n), (0.0, 1.0), (n, 0))
        canvas.raster(left, 36, width, pitch * n, colour_map("greys", fractions / top_value))
        ax.x_axis([0.0, 0.25, 0.5, 0.75, 1.0], "confidence (max probability)")
        for i in range(0, n, step):
            canvas.text(left - 6, 36 + pitch * (i + 0.5), str(epochs[i]), FONT_SIZE - 1, "end", baseline="middle")
        canvas.text(left + width / 2, 28, title, FONT_SIZE, "middle")
        bar_left = left + width + 10
        canvas.raster(bar_left, 36, 10, pitch * n, colour_map("greys", np.linspace(1, 0, 64))[:, None, :])
        canvas.text(bar_left + 14, 36, f"{top_value:.0%}", FONT_SIZE - 2, baseline="hanging", colour=MUTED)
        canvas.text(bar_left + 14, 36 + pitch * n, "0%", FONT_SIZE - 2, colour=MUTED)
        ax.frame()
    canvas.text(16, 36 + pitch * n / 2, "epoch", FONT_SIZE - 1, "middle", rotate=-90, baseline="middle")
    return Figure(FigureAnchor.CONFIDENCE.value, "Confidence of correct and wrong predictions, every epoch",
                  "One row per epoch: darker cells hold more of that epoch's correct (left) or wrong (right) "
                  "predictions (the scale beside each panel runs from 0 to its darkest cell).", canvas.data_uri())


def _matrix_labels(class_labels: Sequence[str]) -> list[str]:
    if len(class_labels) <= ANNOTATE_MAX_CLASSES:
        return [clip_text(name, 90, FONT_SIZE - 2) for name in class_labels]
    return [str(i + 1) for i in range(len(class_labels))]


def _matrix(canvas: Canvas, left: float, top: float, side: float, rgb: np.ndarray, labels: Sequence[str],
            title: str, counts: np.ndarray | None, dark: np.ndarray, y_labels: bool, signed: bool = False) -> None:
    """One heat map: the cells, the class labels (every k-th past 25 classes), and counts up to 12 classes."""
    n = len(labels)
    pitch = side / n
    canvas.raster(left, top, side, side, rgb)
    size = FONT_SIZE - 2
    step = 1 if n <= 25 else int(np.ceil(n / 20))
    for i in range(0, n, step):
        centre = pitch * (i + 0.5)
        if y_labels:
            canvas.text(left - 5, top + centre, labels[i], size, "end", baseline="middle")
        canvas.text(left + centre, top + side + 5, labels[i], size, "end", rotate=-90, baseline="middle")
    if counts is not None and n <= ANNOTATE_MAX_CLASSES:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    text = f"{counts[i, j]:+d}".replace("-", "−") if signed else str(counts[i, j])
                    canvas.text(left + pitch * (j + 0.5), top + pitch * (i + 0.5), text, min(9.0, pitch * 0.38),
                                "middle", "#ffffff" if dark[i, j] else INK, baseline="middle")
    canvas.text(left + side / 2, top - 7, title, FONT_SIZE - 1, "middle")
    Axes(canvas, (left, top, side, side), (0, 1), (0, 1)).frame()


def _row_shares(matrix: np.ndarray) -> np.ndarray:
    rows = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)


def _label_room(labels: Sequence[str]) -> float:
    return min(max(text_width(label, FONT_SIZE - 2) for label in labels), 96) + 10


def _heat_map_fold(analysis, class_labels: Sequence[str]):
    """The classes a heat map shows: all up to MAX_LISTED_CLASSES, else the epoch view's fold (matrix_fold)."""
    n = len(class_labels)
    fold = matrix_fold(analysis) if n > MAX_LISTED_CLASSES else MatrixFold(tuple(range(n)), 0)
    names = fold.labels(class_labels)
    labels = [clip_text(name, 90, FONT_SIZE - 2) for name in names] if fold.n_folded else _matrix_labels(names)
    return fold, labels


def _confusion(analysis, class_labels: Sequence[str]) -> Figure:
    views = analysis.epochs
    best, last = analysis.best_loss_index, len(views) - 1
    fold, labels = _heat_map_fold(analysis, class_labels)
    room = _label_room(labels)
    side = min((WIDTH - room - 20 - 2 * 24) / 3, 240.0)
    canvas = Canvas(WIDTH, 30 + side + room + 28)
    before, after = fold.apply(views[best].metrics.confusion_counts), fold.apply(views[last].metrics.confusion_counts)
    a, b = _row_shares(before), _row_shares(after)
    diff = b - a
    limit = max(float(np.abs(diff).max()), 1e-9)
    panels = ((colour_map("blues", a), before, a > 0.6, f"epoch {views[best].epoch} (lowest loss)", False),
              (colour_map("blues", b), after, b > 0.6, f"epoch {views[last].epoch} (last)", False),
              (colour_map("puor", (diff / limit + 1) / 2), after - before, np.abs(diff) > 0.6 * limit,
               "difference (last − best)", True))
    for k, (rgb, counts, dark, title, signed) in enumerate(panels):
        _matrix(canvas, room + k * (side + 24), 30, side, rgb, labels, title, counts, dark, k == 0, signed)
    canvas.text(room + 1.5 * side + 24, canvas.height - 8, "predicted class", FONT_SIZE - 1, "middle", MUTED)
    return Figure(FigureAnchor.CONFUSION.value, "Confusion matrices at the lowest-loss and last epochs",
                  "Rows are true classes, normalised to sum to 1 (darker: a larger share of the row); numbers are "
                  "item counts (the difference shows count changes)." + _fold_note(fold, len(labels)),
                  canvas.data_uri())


def _fold_note(fold, n_shown: int) -> str:
    if fold.n_folded:
        return (f" The {n_shown - 1} classes with the largest mean loss share (as in the per-epoch view); the other "
                f"{fold.n_folded} are summed into the last row and column.")
    return "" if n_shown <= ANNOTATE_MAX_CLASSES else " Classes are numbered in label order."


def _flow(analysis, class_labels: Sequence[str]) -> Figure:
    flow, views = analysis.flow, analysis.epochs
    fold, labels = _heat_map_fold(analysis, class_labels)
    moved = fold.apply(flow.cells.off_diagonal())
    room = _label_room(labels)
    side = 260.0
    canvas = Canvas(WIDTH, 30 + side + room + 28)
    left = (WIDTH - side) / 2
    peak = max(int(moved.max()), 1)
    _matrix(canvas, left, 30, side, colour_map("oranges", moved / peak), labels,
            f"predictions that changed class ({flow.n_changed} items)", moved, moved > 0.6 * peak, True)
    canvas.text(left + side / 2, canvas.height - 8, f"predicted at epoch {views[flow.to_index].epoch}",
                FONT_SIZE - 1, "middle", MUTED)
    canvas.text(left - room - 8, 30 + side / 2, f"predicted at epoch {views[flow.from_index].epoch}", FONT_SIZE - 1,
                "middle", MUTED, rotate=-90, baseline="middle")
    return Figure(FigureAnchor.FLOW.value, f"Prediction flow, epoch {views[flow.from_index].epoch} → "
                  f"{views[flow.to_index].epoch}",
                  "Items whose predicted class changed: predicted class at the earlier epoch (rows) and at the "
                  "later one (columns); darker: more items." + (_fold_note(fold, len(labels)) if fold.n_folded else ""),
                  canvas.data_uri())


def _logits(analysis, epochs: np.ndarray) -> Figure:
    views = analysis.epochs
    canvas = Canvas(WIDTH, 290)
    outer, inner = _tint("#56B4E9", 0.45), _tint("#0072B2", 0.5)
    top = 30 + legend(canvas, [LegendEntry("10–90th percentile", outer, box=True),
                               LegendEntry("25–75th percentile", inner, box=True),
                               LegendEntry("median", INK),
                               LegendEntry("flip rate", "#CC79A7", marker="o")], 56, 6, WIDTH - 76)
    xlim, xticks, xlabels = _epoch_axis(epochs)
    xticks, xlabels = xticks[::2] if len(xticks) > 5 else xticks, xlabels[::2] if len(xticks) > 5 else xlabels
    width = (WIDTH - 56 - 20 - 2 * 58) / 3
    height = 290 - top - 46
    for k, (title, percentiles) in enumerate((
            ("logit norm ‖z‖", np.array([v.logits.logit_norm_percentiles for v in views])),
            ("margin z_y − max other", np.array([v.logits.margin_percentiles for v in views])))):
        limits, ticks = _scale(percentiles, include=0.0 if k == 1 else None)
        ax = Axes(canvas, (56 + k * (width + 58), top, width, height), xlim, limits)
        ax.y_axis(ticks, grid=True)
        ax.x_axis(xticks, "epoch", xlabels)
        ax.band(epochs, percentiles[:, 0], percentiles[:, 4], outer)
        ax.band(epochs, percentiles[:, 1], percentiles[:, 3], inner)
        ax.line(epochs, percentiles[:, 2], INK, 1.4)
        if k == 1:
            ax.hline(0.0, LOSS_COLOUR, DASHED, 0.9)
        canvas.text(ax.left + width / 2, top - 7, title, FONT_SIZE - 1, "middle")
        ax.frame()
    flips = analysis.flip_rates * 100
    limits, ticks = _scale(flips, include=0.0)
    ax = Axes(canvas, (56 + 2 * (width + 58), top, width, height), xlim, limits)
    ax.y_axis(ticks, grid=True)
    ax.x_axis(xticks, "epoch", xlabels)
    ax.line(epochs[1:], flips, "#CC79A7", marker="o")
    canvas.text(ax.left + width / 2, top - 7, "flip rate (% of items)", FONT_SIZE - 1, "middle")
    ax.frame()
    return Figure(FigureAnchor.LOGITS.value, "Logit norms, margins and flips",
                  "Centred-logit norm and margin z_y - max_other per epoch (bands: 10-90th and 25-75th percentiles); "
                  "flip rate: share of items whose prediction changed since the previous epoch.", canvas.data_uri())


def render_figures(analysis, colours: Sequence[str], class_labels: Sequence[str], train_log=None,
                   lr_events: Sequence = ()) -> list[Figure]:
    """The report's figures in the order they appear; ids are the anchors findings link to.

    `train_log` (render.input.TrainLogComparison, optional) overlays the logged curves on the loss curve;
    `lr_events` (analyze.schedule.LrEvent, diagnosis.lr_events) are shaded on it beside the learning rate."""
    epochs = np.array([e.epoch for e in analysis.epochs])
    return [_curves(analysis, epochs, train_log, lr_events), _decomposition(analysis, class_labels),
            _loss_shares(analysis, epochs, class_labels, colours), _calibration(analysis, epochs),
            _reliability(analysis), _confidence(analysis, epochs), _confusion(analysis, class_labels),
            _flow(analysis, class_labels), _logits(analysis, epochs)]
