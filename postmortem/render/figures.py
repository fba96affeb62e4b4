"""Figures as inline images: numbers computed in analyze/, drawn here on Axes handed in (Agg, no pyplot).

Line and bar charts are SVG (vector, small); heat maps are PNG inside the figure, so files stay small.
Every class keeps one colour in every figure (Okabe-Ito, colour-blind safe) and bands carry hatching,
so the report still reads when printed in grey.
"""
from __future__ import annotations

import base64
import io
import multiprocessing
import sys
from dataclasses import dataclass

import numpy as np

__all__ = ["Figure", "class_colours", "render_figures", "draw_curves", "draw_loss_shares",
           "draw_confidence_heatmap", "draw_decomposition", "draw_confusions", "draw_flow",
           "draw_reliability", "draw_calibration", "draw_logits"]

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
ANNOTATE_MAX_CLASSES = 12


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
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["cividis"]
    return [to_hex(cmap(i / max(n_classes - 1, 1))) for i in range(n_classes)]


# Text stays text in the SVG (smaller and faster than glyph paths); fixed margins instead of a layout engine,
# which cost half of each figure's drawing time.
SVG_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "postmortem", "font.size": 8}   # fixed salt: same figure, same bytes
MARGINS = {"left": 0.1, "right": 0.9, "bottom": 0.16, "top": 0.9, "wspace": 0.3}


def _new_figure(width: float, height: float, **margins: float):
    from matplotlib.figure import Figure as MplFigure

    figure = MplFigure(figsize=(width, height))
    figure.subplots_adjust(**{**MARGINS, **margins})
    return figure


def plain_text(label: object) -> str:
    """A user's label as literal text: matplotlib would read '$...$' as math."""
    return str(label).replace("$", r"\$")


def _to_data_uri(figure) -> str:
    from matplotlib import rc_context

    buffer = io.BytesIO()
    with rc_context(SVG_STYLE):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _epoch_ticks(ax, epochs: np.ndarray) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    ax.set_xlabel("epoch")


def draw_curves(ax, epochs: np.ndarray, losses: np.ndarray, accuracies: np.ndarray, best_loss: int,
                best_accuracy: int, train_log=None, log_key: str = "epoch") -> None:
    """Validation loss (left axis) and accuracy (right axis) per epoch, best epochs marked; logged curves grey.

    `log_key` is the training log's column that matches the checkpoints' numbers (epoch, or step for
    checkpoints saved by global step).
    """
    ax.plot(epochs, losses, color=LOSS_COLOUR, marker="o", markersize=3, label="validation loss (recomputed)")
    if train_log is not None and log_key in train_log:
        for column, style, label in (("train_loss", ":", "training loss (log)"), ("val_loss", "--", "validation loss (log)")):
            if column in train_log and train_log[column].notna().any():
                rows = train_log[train_log[column].notna() & train_log[log_key].notna()]
                ax.plot(rows[log_key], rows[column], color=TRAIN_COLOUR, linestyle=style, label=label)
    ax.set_ylabel("loss (weighted NLL, nats)", color=LOSS_COLOUR)
    ax.axvline(epochs[best_loss], color=LOSS_COLOUR, linestyle="--", linewidth=1)
    ax.annotate(f"lowest loss\nepoch {epochs[best_loss]}", (epochs[best_loss], losses[best_loss]),
                textcoords="offset points", xytext=(6, 10), fontsize=8, color=LOSS_COLOUR)
    _epoch_ticks(ax, epochs)
    twin = ax.twinx()
    twin.plot(epochs, accuracies * 100, color=ACCURACY_COLOUR, marker="s", markersize=3, linestyle="-.",
              label="validation accuracy")
    twin.set_ylabel("accuracy (%)", color=ACCURACY_COLOUR)
    twin.axvline(epochs[best_accuracy], color=ACCURACY_COLOUR, linestyle=":", linewidth=1)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper center", fontsize=7, frameon=False, ncols=2)


def draw_loss_shares(ax, epochs: np.ndarray, shares: np.ndarray, classes, colours: list[str]) -> None:
    """Stacked per-class loss shares: the stack's height is the epoch's loss."""
    polys = ax.stackplot(epochs, shares.T, labels=classes, colors=colours, alpha=0.9, edgecolor="white", linewidth=0.5)
    for i, poly in enumerate(polys):
        poly.set_hatch(HATCHES[i % len(HATCHES)])
    _epoch_ticks(ax, epochs)
    ax.set_ylabel("loss share (nats)")
    if len(classes) <= 20:
        ax.legend(loc="upper right", fontsize=7, frameon=False, ncols=min(len(classes), 4), reverse=True)


def draw_confidence_heatmap(ax, epochs: np.ndarray, histograms: np.ndarray, title: str) -> None:
    """Fraction of an epoch's predictions per confidence bin, one row per epoch."""
    totals = histograms.sum(axis=1, keepdims=True)
    fractions = np.divide(histograms, totals, out=np.zeros(histograms.shape), where=totals > 0)
    image = ax.imshow(fractions, aspect="auto", cmap="Greys", vmin=0, vmax=max(fractions.max(), 1e-9),
                      extent=(0, 1, len(epochs) - 0.5, -0.5), interpolation="nearest")
    step = max(1, len(epochs) // 12)
    ax.set_yticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("epoch")
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, label="fraction of items", shrink=0.8)


def draw_decomposition(ax, decomposition, classes, transitions) -> None:
    """Each class's part of the loss change, split by transition group (stacked, signed bars)."""
    table = decomposition.by_class_transition
    y = np.arange(len(classes))
    positive, negative = np.zeros(len(classes)), np.zeros(len(classes))
    for t, name in enumerate(transitions):
        colour, hatch = TRANSITION_STYLE[name]
        values = table[:, t]
        left = np.where(values >= 0, positive, negative)
        ax.barh(y, values, left=left, color=colour, hatch=hatch, edgecolor="white", linewidth=0.5, label=name)
        positive += np.clip(values, 0, None)
        negative += np.clip(values, None, 0)
    ax.axvline(0, color="#1b1b1b", linewidth=0.8)
    ax.set_yticks(y, list(classes), fontsize=7 if len(classes) > 12 else 8)
    ax.invert_yaxis()
    ax.set_xlabel("part of the loss change (nats)")
    ax.legend(fontsize=7, frameon=False, loc="lower right")


def _matrix(ax, values: np.ndarray, classes, title: str, cmap: str, vmin: float, vmax: float, counts=None) -> None:
    ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    n = len(classes)
    labels = list(classes) if n <= ANNOTATE_MAX_CLASSES else [str(i + 1) for i in range(n)]
    step = 1 if n <= 25 else max(1, n // 20)
    ax.set_xticks(range(0, n, step), labels[::step], rotation=90, fontsize=6)
    ax.set_yticks(range(0, n, step), labels[::step], fontsize=6)
    if counts is not None and n <= ANNOTATE_MAX_CLASSES:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{counts[i, j]:+d}" if cmap == "PuOr" else str(counts[i, j]), ha="center",
                            va="center", fontsize=6, color="white" if abs(values[i, j]) > 0.6 * vmax else "#1b1b1b")


def draw_confusions(axes, best, last, classes, best_epoch: int, last_epoch: int) -> None:
    """Row-normalised confusion matrices at the best and last epochs, and their difference (last - best)."""
    def normalised(m):
        rows = m.sum(axis=1, keepdims=True)
        return np.divide(m, rows, out=np.zeros(m.shape), where=rows > 0)

    _matrix(axes[0], normalised(best), classes, f"epoch {best_epoch} (lowest loss)", "Blues", 0, 1, best)
    _matrix(axes[1], normalised(last), classes, f"epoch {last_epoch} (last)", "Blues", 0, 1, last)
    diff = normalised(last) - normalised(best)
    limit = max(float(np.abs(diff).max()), 1e-9)
    _matrix(axes[2], diff, classes, "difference (last - best)", "PuOr", -limit, limit, last - best)
    for ax in axes:
        ax.set_xlabel("predicted", fontsize=7)
    axes[0].set_ylabel("true class", fontsize=7)


def draw_flow(ax, flow, classes) -> None:
    """Items whose predicted class changed between two epochs: from (rows) -> to (columns)."""
    moved = flow.counts.copy()
    np.fill_diagonal(moved, 0)
    _matrix(ax, moved, classes, f"predictions that changed class ({int(moved.sum())} items)", "Oranges", 0,
            max(int(moved.max()), 1), moved)
    ax.set_xlabel("predicted at the later epoch", fontsize=7)
    ax.set_ylabel("predicted at the earlier epoch", fontsize=7)


def draw_reliability(ax, diagram, title: str) -> None:
    """Accuracy per confidence bin against the diagonal of perfect calibration; bar width = bin width."""
    edges = diagram.bin_edges
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    filled = diagram.counts > 0
    ax.bar(centres[filled], diagram.accuracy[filled], width=widths[filled], color="#56B4E9", edgecolor="#0072B2",
           linewidth=0.5, label="accuracy in bin")
    ax.plot(diagram.mean_confidence[filled], diagram.mean_confidence[filled], "o", color="#D55E00", markersize=3,
            label="mean confidence in bin")
    ax.plot([0, 1], [0, 1], linestyle="--", color="#7f7f7f", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper left")


def draw_calibration(ax, epochs: np.ndarray, losses: np.ndarray, scaled: np.ndarray, temperatures: np.ndarray,
                     ece: np.ndarray) -> None:
    """Raw loss vs cross-fitted temperature-scaled loss; T and ECE on the right axis."""
    ax.plot(epochs, losses, color=LOSS_COLOUR, marker="o", markersize=3, label="loss")
    ax.plot(epochs, scaled, color=SCALED_COLOUR, marker="^", markersize=3, linestyle="--",
            label="loss after temperature scaling")
    ax.fill_between(epochs, scaled, losses, where=losses >= scaled, color=LOSS_COLOUR, alpha=0.12,
                    label="calibration gap")
    ax.set_ylabel("loss (nats)")
    _epoch_ticks(ax, epochs)
    twin = ax.twinx()
    twin.plot(epochs, temperatures, color="#1b1b1b", linestyle=":", label="fitted temperature T")
    twin.plot(epochs, ece * 10, color=ACCURACY_COLOUR, linestyle="-.", label="ECE x 10")
    twin.set_ylabel("T  /  ECE x 10")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, frameon=False, loc="upper center", ncols=3)


def draw_logits(axes, epochs: np.ndarray, norm_pct: np.ndarray, margin_pct: np.ndarray, flip_rates: np.ndarray) -> None:
    """Percentile bands (10-90, 25-75, median) of centred-logit norm and margin; flip rate between epochs."""
    for ax, pct, label in ((axes[0], norm_pct, "logit norm ||z||"), (axes[1], margin_pct, "margin z_y - max other")):
        ax.fill_between(epochs, pct[:, 0], pct[:, 4], color="#56B4E9", alpha=0.3, label="10-90th percentile")
        ax.fill_between(epochs, pct[:, 1], pct[:, 3], color="#0072B2", alpha=0.4, label="25-75th percentile")
        ax.plot(epochs, pct[:, 2], color="#1b1b1b", label="median")
        ax.set_ylabel(label)
        _epoch_ticks(ax, epochs)
    axes[1].axhline(0, color="#D55E00", linewidth=0.8, linestyle="--")
    axes[0].legend(fontsize=7, frameon=False, loc="upper left")
    axes[2].plot(epochs[1:], flip_rates * 100, color="#CC79A7", marker="o", markersize=3)
    axes[2].set_ylabel("flip rate (% of items)")
    _epoch_ticks(axes[2], epochs)


def render_figures(analysis, colours: list[str], class_labels, train_log=None, log_key: str = "epoch",
                   processes: int = 1) -> list[Figure]:
    """The report's figures, in the order they appear; ids are what findings link to.

    With processes > 1 on Linux they are drawn by that many forked processes: matplotlib's drawing is Python
    code holding the GIL, so threads would not help, and a fork shares the analysis and the imported matplotlib
    without pickling or re-importing them (macOS has fork, but Python calls it unsafe there; Windows has none)."""
    plans = _figure_plans(analysis, colours, class_labels, train_log, log_key)
    if processes > 1 and sys.platform.startswith("linux"):
        return _draw_forked(plans, processes)
    return [plan() for plan in plans]


_PLANS: list = []   # the figure plans of the current _draw_forked call, inherited by its forked workers


def _draw_plan(index: int) -> Figure:
    return _PLANS[index]()


def _draw_forked(plans: list, processes: int) -> list[Figure]:
    import importlib
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    for module in ("matplotlib.figure", "matplotlib.backends.backend_svg"):   # imported once here, not in each worker
        importlib.import_module(module)
    global _PLANS
    _PLANS = plans
    try:
        with ProcessPoolExecutor(min(processes, len(plans)), mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_draw_plan, range(len(plans))))
    except (OSError, BrokenProcessPool):   # no fork allowed here, or a worker died: draw them in this process
        return [plan() for plan in plans]
    finally:
        _PLANS = []


def _figure_plans(analysis, colours: list[str], class_labels, train_log, log_key: str) -> list:
    """One function per figure, each drawing it and returning a Figure."""
    from ..analyze.decomposition import TRANSITIONS

    class_labels = [plain_text(name) for name in class_labels]
    epochs = np.array([e.epoch for e in analysis.epochs])
    views = analysis.epochs
    best, last = analysis.best_loss_index, len(views) - 1
    side = 2.4 if len(class_labels) <= ANNOTATE_MAX_CLASSES else 3.0

    def curves() -> Figure:
        figure = _new_figure(7.0, 3.2, top=0.86)
        draw_curves(figure.add_subplot(), epochs, analysis.losses, analysis.accuracies, best,
                    analysis.best_accuracy_index, train_log, log_key)
        return Figure("fig-curves", "Validation loss and accuracy",
                      "Loss (left axis) and accuracy (right axis) per checkpoint; dashed lines mark the lowest loss and "
                      "highest accuracy." + (" Grey: curves from the training log." if train_log is not None else ""),
                      _to_data_uri(figure))

    def decomposition() -> Figure:
        d = analysis.decomposition
        height = 1.4 + 0.22 * len(class_labels) if len(class_labels) <= 30 else 8.0
        figure = _new_figure(7.0, height, left=0.2, right=0.97, bottom=0.5 / height, top=1 - 0.15 / height)
        draw_decomposition(figure.add_subplot(), d, class_labels, TRANSITIONS)
        return Figure("fig-decomposition", f"Where the loss change comes from (epoch {views[d.from_index].epoch} → "
                      f"{views[d.to_index].epoch})",
                      f"Each bar is one true class's exact part of the change dL = {d.loss_change:+.4f}, split by whether "
                      "its items were correct or wrong before and after; the bars sum to dL.", _to_data_uri(figure))

    def loss_shares() -> Figure:
        figure = _new_figure(7.0, 3.2, right=0.97)
        draw_loss_shares(figure.add_subplot(), epochs, analysis.loss_shares, class_labels, colours)
        return Figure("fig-loss-shares", "Loss decomposed by class",
                      "Each band is one class's additive part of the epoch loss (Σ over its items of w[y]·NLL / Σ w[y]); "
                      "bands sum to the loss.", _to_data_uri(figure))

    def calibration() -> Figure:
        figure = _new_figure(7.0, 3.2, top=0.86)
        draw_calibration(figure.add_subplot(), epochs, analysis.losses, np.array([v.scaled_loss for v in views]),
                         np.array([v.temperature for v in views]),
                         np.array([v.calibration.expected_calibration_error for v in views]))
        return Figure("fig-calibration", "Raw vs temperature-scaled loss",
                      "Temperature scaling (T fitted per epoch, loss cross-fitted on two halves) removes miscalibration "
                      "but cannot change a single prediction: the gap between the curves is calibration, the scaled "
                      "curve is discrimination.", _to_data_uri(figure))

    def reliability() -> Figure:
        figure = _new_figure(7.0, 3.0, left=0.08, right=0.98, wspace=0.12)
        left, right = figure.subplots(1, 2, sharey=True)
        draw_reliability(left, views[best].calibration.reliability, f"epoch {views[best].epoch} (lowest loss)")
        draw_reliability(right, views[last].calibration.reliability, f"epoch {views[last].epoch} (last)")
        return Figure("fig-reliability", "Reliability diagrams",
                      "Accuracy against confidence in 15 equal-width bins; bars below the diagonal are overconfident.",
                      _to_data_uri(figure))

    def confidence() -> Figure:
        height = 1.2 + 0.18 * len(epochs) if len(epochs) <= 40 else 8.4
        figure = _new_figure(7.0, height, left=0.08, right=0.97, wspace=0.35, bottom=0.5 / height, top=1 - 0.3 / height)
        left, right = figure.subplots(1, 2, sharey=True)
        draw_confidence_heatmap(left, epochs, np.array([v.hist_correct for v in views]), "correct predictions")
        draw_confidence_heatmap(right, epochs, np.array([v.hist_wrong for v in views]), "wrong predictions")
        return Figure("fig-confidence", "Confidence of correct and wrong predictions, every epoch",
                      "One row per epoch: darker cells hold more of that epoch's correct (left) or wrong (right) "
                      "predictions.", _to_data_uri(figure))

    def confusion() -> Figure:
        figure = _new_figure(7.2, side + 0.9, left=0.12, right=0.98, bottom=0.9 / (side + 0.9), top=0.9, wspace=0.45)
        draw_confusions(figure.subplots(1, 3), views[best].metrics.confusion, views[last].metrics.confusion,
                        class_labels, views[best].epoch, views[last].epoch)
        return Figure("fig-confusion", "Confusion matrices at the lowest-loss and last epochs",
                      "Rows are true classes, normalised to sum to 1; numbers are item counts (the difference shows "
                      "count changes).", _to_data_uri(figure))

    def flow() -> Figure:
        figure = _new_figure(4.2, side + 1.0, left=0.3, right=0.95, bottom=1.0 / (side + 1.0), top=0.9)
        draw_flow(figure.add_subplot(), analysis.flow, class_labels)
        return Figure("fig-flow", f"Prediction flow, epoch {views[analysis.flow.from_index].epoch} → "
                      f"{views[analysis.flow.to_index].epoch}",
                      "Items whose predicted class changed: predicted class at the earlier epoch (rows) and at the "
                      "later one (columns).", _to_data_uri(figure))

    def logits() -> Figure:
        figure = _new_figure(7.0, 2.6, left=0.07, right=0.98, wspace=0.45, bottom=0.18)
        draw_logits(figure.subplots(1, 3), epochs, np.array([v.logits.logit_norm_percentiles for v in views]),
                    np.array([v.logits.margin_percentiles for v in views]), analysis.flip_rates)
        return Figure("fig-logits", "Logit norms, margins and flips",
                      "Centred-logit norm and margin z_y - max_other per epoch (bands: 10-90th and 25-75th percentiles); "
                      "flip rate: share of items whose prediction changed since the previous epoch.", _to_data_uri(figure))

    return [curves, decomposition, loss_shares, calibration, reliability, confidence, confusion, flow, logits]
