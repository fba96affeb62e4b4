"""Figures as inline SVG: computed elsewhere, drawn here on Axes handed in (Agg, no pyplot state)."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

__all__ = ["Figure", "class_colours", "draw_curves", "draw_loss_shares", "draw_confidence_heatmap", "render_figures"]

# Okabe & Ito's colour-blind-safe palette; beyond 8 classes, evenly spaced colours from cividis.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
LOSS_COLOUR, ACCURACY_COLOUR = "#D55E00", "#0072B2"


@dataclass(frozen=True)
class Figure:
    """One figure: its anchor id, caption and an inline data: URI."""

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


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure as MplFigure

    figure = MplFigure(figsize=(width, height), layout="constrained")
    return figure


def _to_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def draw_curves(ax, epochs: np.ndarray, losses: np.ndarray, accuracies: np.ndarray,
                best_loss: int, best_accuracy: int) -> None:
    """Validation loss (left axis) and accuracy (right axis) per epoch, best epochs marked."""
    ax.plot(epochs, losses, color=LOSS_COLOUR, marker="o", markersize=3, label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (weighted NLL, nats)", color=LOSS_COLOUR)
    ax.axvline(epochs[best_loss], color=LOSS_COLOUR, linestyle="--", linewidth=1)
    ax.annotate(f"lowest loss\nepoch {epochs[best_loss]}", (epochs[best_loss], losses[best_loss]),
                textcoords="offset points", xytext=(6, 10), fontsize=8, color=LOSS_COLOUR)
    twin = ax.twinx()
    twin.plot(epochs, accuracies * 100, color=ACCURACY_COLOUR, marker="s", markersize=3, linestyle="-.",
              label="validation accuracy")
    twin.set_ylabel("accuracy (%)", color=ACCURACY_COLOUR)
    twin.axvline(epochs[best_accuracy], color=ACCURACY_COLOUR, linestyle=":", linewidth=1)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper center", fontsize=8, frameon=False, ncols=2)


def draw_loss_shares(ax, epochs: np.ndarray, shares: np.ndarray, classes: tuple[str, ...], colours: list[str]) -> None:
    """Stacked per-class loss shares: the stack's height is the epoch's loss."""
    hatches = ["", "//", "..", "xx", "\\\\", "++", "oo", "--"]
    polys = ax.stackplot(epochs, shares.T, labels=classes, colors=colours, alpha=0.9, edgecolor="white", linewidth=0.5)
    for i, poly in enumerate(polys):   # hatching keeps classes apart when printed in grey
        poly.set_hatch(hatches[i % len(hatches)])
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss share (nats)")
    ax.legend(loc="upper left", fontsize=7, frameon=False, ncols=min(len(classes), 4), reverse=True)


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


def render_figures(analysis, colours: list[str], class_labels: tuple[str, ...]) -> list[Figure]:
    """The report's figures, in the order they appear."""
    epochs = np.array([e.epoch for e in analysis.epochs])
    figures = []

    figure = _new_figure(7.0, 3.2)
    draw_curves(figure.add_subplot(), epochs, analysis.losses, analysis.accuracies,
                analysis.best_loss_index, analysis.best_accuracy_index)
    figures.append(Figure("fig-curves", "Validation loss and accuracy",
                          "Loss falls, then rises; accuracy is read on the right axis.", _to_data_uri(figure)))

    figure = _new_figure(7.0, 3.2)
    draw_loss_shares(figure.add_subplot(), epochs, analysis.loss_shares, class_labels, colours)
    figures.append(Figure("fig-loss-shares", "Loss decomposed by class",
                          "Each band is one class's additive part of the epoch loss; bands sum to the loss.",
                          _to_data_uri(figure)))

    figure = _new_figure(7.0, 1.2 + 0.18 * len(epochs))
    left, right = figure.subplots(1, 2, sharey=True)
    draw_confidence_heatmap(left, epochs, np.array([e.hist_correct for e in analysis.epochs]), "correct predictions")
    draw_confidence_heatmap(right, epochs, np.array([e.hist_wrong for e in analysis.epochs]), "wrong predictions")
    figures.append(Figure("fig-confidence", "Confidence of correct and wrong predictions",
                          "Darker cells hold more of that epoch's correct (left) or wrong (right) predictions.",
                          _to_data_uri(figure)))
    return figures
