"""A small SVG kit for the report's figures: a canvas, axes with round-number ticks, legends, colour maps,
and heat maps as one PNG inside the SVG.

Why not matplotlib: on a 30-epoch run its import and layout took 0.9-1.8 s of a 2.4-3.5 s report, more than
evaluating the run, for figures that are lines, bands and rectangles, which SVG states directly. Text stays
text (small, selectable, printed sharp); a heat map is one nearest-neighbour PNG, so its size does not grow
with the number of cells.
"""
from __future__ import annotations

import base64
import math
import struct
import zlib
from dataclasses import dataclass
from html import escape
from typing import Iterable, Sequence

import numpy as np

__all__ = ["FONT_SIZE", "INK", "MUTED", "Canvas", "Axes", "nice_ticks", "tick_labels", "text_width", "clip_text",
           "colour_map", "hex_colour", "png_bytes", "LegendEntry", "legend"]

FONT = "DejaVu Sans, Helvetica Neue, Arial, sans-serif"
FONT_SIZE = 11
INK, MUTED, GRID = "#1b1b1b", "#5f6368", "#e6e6e6"
CHAR_EM = 0.6          # average advance of a DejaVu Sans glyph in em: layout estimates only
HATCH_INK = "rgba(255,255,255,0.8)"

# Colour maps as nine evenly spaced anchors of matplotlib's maps, interpolated linearly: the sequential ones come
# within 2/255 of matplotlib's everywhere, the diverging PuOr and cividis within 20/255 (tests/test_report_figures.py).
COLOUR_MAPS = {
    "blues": ("#f7fbff", "#deebf7", "#c6dbef", "#9dcae1", "#6aaed6", "#4191c6", "#2070b4", "#08509b", "#08306b"),
    "greys": ("#ffffff", "#f0f0f0", "#d9d9d9", "#bdbdbd", "#959595", "#727272", "#515151", "#242424", "#000000"),
    "oranges": ("#fff5eb", "#fee6ce", "#fdd0a2", "#fdae6a", "#fd8c3b", "#f16813", "#d84801", "#a53603", "#7f2704"),
    "puor": ("#7f3b08", "#be630a", "#ef9e3c", "#fed7a2", "#f6f6f7", "#cecde4", "#988dbe", "#5d3790", "#2d004b"),
    "cividis": ("#00224e", "#1a386f", "#434e6c", "#61656f", "#7d7c78", "#9b9476", "#bcae6c", "#dec958", "#fee838"),
}

# Hatch patterns (8 x 8 tiles) drawn over a band's colour, so bands stay apart when printed in grey.
HATCH_PATHS = {
    "//": "M-2,2 l4,-4 M0,8 l8,-8 M6,10 l4,-4",
    "\\\\": "M-2,6 l4,4 M0,0 l8,8 M6,-2 l4,4",
    "xx": "M0,0 l8,8 M0,8 l8,-8",
    "++": "M4,0 v8 M0,4 h8",
    "--": "M0,4 h8",
}
HATCH_DOTS = {"..": 1.1, "oo": 2.0}


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def colour_map(name: str, values: np.ndarray | float) -> np.ndarray:
    """RGB (uint8, trailing axis of 3) of `values` in [0, 1] on the named colour map; NaN maps to white."""
    anchors = np.array([_hex_rgb(c) for c in COLOUR_MAPS[name]], dtype=np.float64)
    t = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, 1.0)
    grid = np.linspace(0.0, 1.0, len(anchors))
    rgb = np.stack([np.interp(t, grid, anchors[:, k]) for k in range(3)], axis=-1)
    rgb[np.isnan(np.asarray(values, dtype=np.float64))] = 255.0
    return np.rint(rgb).astype(np.uint8)


def hex_colour(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an (H, W, 3) uint8 array (no filtering: flat cells compress to almost nothing)."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


def text_width(text: str, size: float = FONT_SIZE) -> float:
    """Estimated width of `text` in user units (no font metrics needed: used for margins only)."""
    return len(text) * size * CHAR_EM


def clip_text(text: str, width: float, size: float = FONT_SIZE) -> str:
    """`text`, cut with an ellipsis to fit about `width` user units."""
    room = max(int(width / (size * CHAR_EM)), 2)
    return text if len(text) <= room else text[:room - 1] + "…"


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round-number ticks covering [low, high]: the first at or below low, the last at or above high."""
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = 0.0, 1.0
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    if integer:
        step = max(1.0, round(step))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Tick values as text with as many decimals as their step needs; a true minus sign."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * max(step, 1.0)), 6)
    return [f"{t:.{decimals}f}".replace("-", "−") for t in ticks]


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _points(xs: Iterable[float], ys: Iterable[float]) -> str:
    return " ".join(f"{_number(x)},{_number(y)}" for x, y in zip(xs, ys))


class Canvas:
    """An SVG document being drawn: elements in order, plus the hatch patterns they use."""

    def __init__(self, width: float, height: float) -> None:
        self.width, self.height = width, height
        self._patterns: dict[tuple[str, str], str] = {}
        self._defs: list[str] = []
        self._body: list[str] = []

    def paint(self, colour: str, hatch: str = "") -> str:
        """A fill value: the colour, or a pattern of the hatch drawn over it (defined once per document)."""
        if not hatch:
            return colour
        if (colour, hatch) not in self._patterns:
            key = f"h{len(self._patterns)}"
            if hatch in HATCH_DOTS:
                r = HATCH_DOTS[hatch]
                marks = (f'<circle cx="2" cy="2" r="{r}" fill="{HATCH_INK}"/><circle cx="6" cy="6" r="{r}" '
                         f'fill="{HATCH_INK}"/>' if hatch == ".." else
                         f'<circle cx="4" cy="4" r="{r}" fill="none" stroke="{HATCH_INK}" stroke-width="0.9"/>')
            else:
                marks = f'<path d="{HATCH_PATHS[hatch]}" stroke="{HATCH_INK}" stroke-width="1.1"/>'
            self._patterns[(colour, hatch)] = key
            self._defs.append(f'<pattern id="{key}" width="8" height="8" patternUnits="userSpaceOnUse">'
                              f'<rect width="8" height="8" fill="{colour}"/>{marks}</pattern>')
        return f"url(#{self._patterns[(colour, hatch)]})"

    def add(self, markup: str) -> None:
        self._body.append(markup)

    def line(self, x1: float, y1: float, x2: float, y2: float, colour: str = INK, width: float = 1.0,
             dash: str = "") -> None:
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{_number(x1)}" y1="{_number(y1)}" x2="{_number(x2)}" y2="{_number(y2)}" '
                 f'stroke="{colour}" stroke-width="{width}"{dashes}/>')

    def polyline(self, xs, ys, colour: str, width: float = 1.5, dash: str = "") -> None:
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<polyline points="{_points(xs, ys)}" fill="none" stroke="{colour}" stroke-width="{width}" '
                 f'stroke-linejoin="round"{dashes}/>')

    def polygon(self, xs, ys, colour: str, hatch: str = "", edge: str = "") -> None:
        stroke = f' stroke="{edge}" stroke-width="0.6"' if edge else ""
        self.add(f'<polygon points="{_points(xs, ys)}" fill="{self.paint(colour, hatch)}"{stroke}/>')

    def rect(self, x: float, y: float, width: float, height: float, colour: str, hatch: str = "",
             edge: str = "") -> None:
        if width < 0:
            x, width = x + width, -width
        if height < 0:
            y, height = y + height, -height
        stroke = f' stroke="{edge}" stroke-width="0.6"' if edge else ""
        self.add(f'<rect x="{_number(x)}" y="{_number(y)}" width="{_number(width)}" height="{_number(height)}" '
                 f'fill="{self.paint(colour, hatch)}"{stroke}/>')

    def marker(self, x: float, y: float, shape: str, colour: str, size: float = 3.0) -> None:
        """A point marker: 'o' circle, 's' square, '^' triangle."""
        if shape == "s":
            self.rect(x - size, y - size, 2 * size, 2 * size, colour)
        elif shape == "^":
            self.polygon([x - size, x, x + size], [y + size, y - size, y + size], colour)
        else:
            self.add(f'<circle cx="{_number(x)}" cy="{_number(y)}" r="{size}" fill="{colour}"/>')

    def text(self, x: float, y: float, text: str, size: float = FONT_SIZE, anchor: str = "start",
             colour: str = INK, rotate: float = 0, baseline: str = "") -> None:
        """Text as text; `text` is escaped (class names are user input). `baseline`: "middle" centres it on y,
        "hanging" puts its top at y (set as dy, which every SVG renderer honours)."""
        turn = f' transform="rotate({rotate} {_number(x)} {_number(y)})"' if rotate else ""
        shift = {"middle": f' dy="{_number(size * 0.35)}"', "hanging": f' dy="{_number(size * 0.8)}"'}.get(baseline, "")
        self.add(f'<text x="{_number(x)}" y="{_number(y)}"{shift} font-size="{_number(size)}" text-anchor="{anchor}" '
                 f'fill="{colour}"{turn}>{escape(text, quote=False)}</text>')

    def raster(self, x: float, y: float, width: float, height: float, rgb: np.ndarray) -> None:
        """An (rows, cols, 3) uint8 image stretched over the box, cells kept sharp (upsampled, pixelated)."""
        rows, cols, _ = rgb.shape
        factor = max(1, min(12, int(math.ceil(2 * min(width / cols, height / rows)))))
        big = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
        uri = "data:image/png;base64," + base64.b64encode(png_bytes(big)).decode("ascii")
        self.add(f'<image x="{_number(x)}" y="{_number(y)}" width="{_number(width)}" height="{_number(height)}" '
                 f'preserveAspectRatio="none" style="image-rendering:pixelated" href="{uri}"/>')

    def svg(self) -> str:
        defs = f"<defs>{''.join(self._defs)}</defs>" if self._defs else ""
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_number(self.width)} {_number(self.height)}" '
                f'width="{_number(self.width)}" height="{_number(self.height)}" font-family="{FONT}">'
                f'<rect width="100%" height="100%" fill="#fff"/>{defs}{"".join(self._body)}</svg>')

    def data_uri(self) -> str:
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg().encode("utf-8")).decode("ascii")


class Axes:
    """A plot box on a canvas that maps data coordinates to the canvas (y grows upwards)."""

    def __init__(self, canvas: Canvas, box: tuple[float, float, float, float], xlim: tuple[float, float],
                 ylim: tuple[float, float]) -> None:
        self.canvas = canvas
        self.left, self.top, self.width, self.height = box
        self.xlim, self.ylim = xlim, ylim

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def x(self, value):
        low, high = self.xlim
        return self.left + (np.asarray(value, dtype=np.float64) - low) / ((high - low) or 1.0) * self.width

    def y(self, value):
        low, high = self.ylim
        return self.bottom - (np.asarray(value, dtype=np.float64) - low) / ((high - low) or 1.0) * self.height

    def frame(self) -> None:
        self.canvas.add(f'<rect x="{_number(self.left)}" y="{_number(self.top)}" width="{_number(self.width)}" '
                        f'height="{_number(self.height)}" fill="none" stroke="{MUTED}" stroke-width="0.8"/>')

    def x_axis(self, ticks: Sequence[float], title: str = "", labels: Sequence[str] | None = None,
               grid: bool = False) -> None:
        size = FONT_SIZE - 1
        labels = tick_labels(ticks) if labels is None else labels
        for tick, label in zip(ticks, labels):
            x = float(self.x(tick))
            if grid:
                self.canvas.line(x, self.top, x, self.bottom, GRID, 0.8)
            self.canvas.line(x, self.bottom, x, self.bottom + 4, MUTED, 0.8)
            self.canvas.text(x, self.bottom + 6, label, size, "middle", baseline="hanging")
        if title:
            self.canvas.text(self.left + self.width / 2, self.bottom + 8 + 2 * size, title, size, "middle",
                             baseline="hanging")

    def y_axis(self, ticks: Sequence[float], title: str = "", labels: Sequence[str] | None = None,
               side: str = "left", colour: str = INK, grid: bool = False) -> None:
        size = FONT_SIZE - 1
        labels = tick_labels(ticks) if labels is None else labels
        edge, out = (self.left, -1) if side == "left" else (self.right, 1)
        widest = 0.0
        for tick, label in zip(ticks, labels):
            y = float(self.y(tick))
            if grid:
                self.canvas.line(self.left, y, self.right, y, GRID, 0.8)
            self.canvas.line(edge, y, edge + 4 * out, y, MUTED, 0.8)
            self.canvas.text(edge + 6 * out, y, label, size, "end" if side == "left" else "start", colour,
                             baseline="middle")
            widest = max(widest, text_width(label, size))
        if title:
            x = edge + out * (widest + 10 + size / 2)
            self.canvas.text(x, self.top + self.height / 2, title, size, "middle", colour,
                             rotate=-90 if side == "left" else 90, baseline="middle")

    def line(self, xs, ys, colour: str, width: float = 1.6, dash: str = "", marker: str = "") -> None:
        """A line through the finite points (a NaN breaks it), with an optional marker at each point."""
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        finite = np.isfinite(xs) & np.isfinite(ys)
        breaks = np.flatnonzero(~finite)
        for run in np.split(np.arange(len(xs)), breaks):
            run = run[finite[run]]
            if len(run) > 1:
                self.canvas.polyline(self.x(xs[run]), self.y(ys[run]), colour, width, dash)
        if marker:
            for x, y in zip(self.x(xs[finite]), self.y(ys[finite])):
                self.canvas.marker(float(x), float(y), marker, colour, 2.6)

    def band(self, xs, low, high, colour: str, hatch: str = "", edge: str = "") -> None:
        """The area between two curves over the same x values."""
        xs = np.asarray(xs, dtype=np.float64)
        px = np.concatenate([self.x(xs), self.x(xs[::-1])])
        py = np.concatenate([self.y(np.asarray(high)), self.y(np.asarray(low)[::-1])])
        self.canvas.polygon(px, py, colour, hatch, edge)

    def vline(self, x: float, colour: str, dash: str = "", width: float = 1.0) -> None:
        px = float(self.x(x))
        self.canvas.line(px, self.top, px, self.bottom, colour, width, dash)

    def hline(self, y: float, colour: str, dash: str = "", width: float = 1.0) -> None:
        py = float(self.y(y))
        self.canvas.line(self.left, py, self.right, py, colour, width, dash)


@dataclass(frozen=True)
class LegendEntry:
    """One legend item: a label and how its swatch is drawn (a line, a marker, both, or a filled box)."""

    label: str
    colour: str
    dash: str = ""
    marker: str = ""
    hatch: str = ""
    box: bool = False
    line: bool = True


def legend(canvas: Canvas, entries: Sequence[LegendEntry], left: float, top: float, width: float) -> float:
    """Entries left to right, wrapping within `width`; returns the height used."""
    size = FONT_SIZE - 1
    x, y, row = left, top, size + 6
    for entry in entries:
        needed = 26 + text_width(entry.label, size) + 14
        if x > left and x + needed > left + width:
            x, y = left, y + row
        middle = y + row / 2
        if entry.box:
            canvas.rect(x, middle - 5, 20, 10, entry.colour, entry.hatch, edge="#ffffff")
        else:
            if entry.line:
                canvas.line(x, middle, x + 20, middle, entry.colour, 1.6, entry.dash)
            if entry.marker:
                canvas.marker(x + 10, middle, entry.marker, entry.colour, 2.6)
        canvas.text(x + 26, middle, entry.label, size, baseline="middle")
        x += needed
    return y + row - top
