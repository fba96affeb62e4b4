"""Issue 12: the figures drawn as SVG without matplotlib: well-formed, deterministic, text kept as (escaped)
text, heat maps as exact PNGs, hatching for grey print, and anchors named by diagnose.FigureAnchor."""
from __future__ import annotations

import base64
import struct
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import pytest

from _diagnosis_runs import analysis_of, overconfident_run
from postmortem.diagnose import FigureAnchor
from postmortem.render.figures import class_colours, render_figures
from postmortem.render.svg import colour_map, nice_ticks, png_bytes, tick_labels

SVG = "{http://www.w3.org/2000/svg}"
NAMES = ["<b>cat</b>", "a&b", "$x$", 'say "hi"']


@pytest.fixture(scope="module")
def figures():
    labels, records = overconfident_run(n_items=400)
    analysis = analysis_of(labels, records, class_names=NAMES)
    return render_figures(analysis, class_colours(4), NAMES)


def _svg(figure) -> ET.Element:
    header, payload = figure.data_uri.split(",", 1)
    assert header == "data:image/svg+xml;base64"
    return ET.fromstring(base64.b64decode(payload))


def test_every_figure_is_well_formed_svg_under_its_anchor(figures):
    assert [f.id for f in figures] == [a.value for a in (
        FigureAnchor.CURVES, FigureAnchor.DECOMPOSITION, FigureAnchor.LOSS_SHARES, FigureAnchor.CALIBRATION,
        FigureAnchor.RELIABILITY, FigureAnchor.CONFIDENCE, FigureAnchor.CONFUSION, FigureAnchor.FLOW,
        FigureAnchor.LOGITS)]
    for figure in figures:
        root = _svg(figure)
        assert root.tag == f"{SVG}svg" and float(root.get("width")) == 760
        assert len(root.findall(f".//{SVG}text")) >= 5, figure.id          # axes and legends are text
        for element in root.iter():                                         # nothing outside the file
            href = element.get("href", "")
            assert not href or href.startswith("data:image/png;base64,"), figure.id
        assert figure.title and figure.caption


def test_the_same_input_draws_the_same_bytes(figures):
    labels, records = overconfident_run(n_items=400)
    again = render_figures(analysis_of(labels, records, class_names=NAMES), class_colours(4), NAMES)
    assert again == figures


def test_class_names_are_escaped_text(figures):
    texts = {t.text for f in figures for t in _svg(f).iter(f"{SVG}text")}
    for name in NAMES:
        assert name in texts, name
    assert not any(element.tag in (f"{SVG}b", f"{SVG}script") for f in figures for element in _svg(f).iter())


def test_bands_and_bars_are_hatched_for_grey_print(figures):
    by_id = {f.id: _svg(f) for f in figures}
    for anchor, least in ((FigureAnchor.LOSS_SHARES, 3), (FigureAnchor.DECOMPOSITION, 3)):
        patterns = by_id[anchor.value].findall(f".//{SVG}pattern")
        assert len(patterns) >= least, anchor
    dashes = {line.get("stroke-dasharray") for line in by_id[FigureAnchor.CURVES.value].iter(f"{SVG}polyline")}
    assert len(dashes) >= 2, "loss and accuracy differ by dash, not only by colour"


def _decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    raw = np.frombuffer(zlib.decompress(data[idat + 4:idat + 4 + length]), np.uint8).reshape(height, 1 + 3 * width)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, 3)


def test_heat_maps_are_exact_pngs():
    rgb = colour_map("blues", np.linspace(0, 1, 12).reshape(3, 4))
    assert (_decode_png(png_bytes(rgb)) == rgb).all()
    assert colour_map("blues", np.array([0.0, 1.0])).tolist() == [[247, 251, 255], [8, 48, 107]]
    assert colour_map("greys", np.array([np.nan])).tolist() == [[255, 255, 255]]


def test_ticks_are_round_numbers_covering_the_data():
    assert nice_ticks(0.49, 1.83) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert nice_ticks(0.42, 1.9, 6) == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert nice_ticks(1, 20, 8, integer=True) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert nice_ticks(-0.062, 0.071)[0] <= -0.062 and nice_ticks(-0.062, 0.071)[-1] >= 0.071
    assert tick_labels([-0.05, 0.0, 0.05]) == ["−0.05", "0.00", "0.05"]
    assert 3.0 in nice_ticks(3.0, 3.0) and len(nice_ticks(3.0, 3.0)) > 2     # a constant still gets an axis


def test_many_classes_and_epochs_stay_small():
    """100 epochs x 50 classes: heat maps are one PNG each, so no figure grows with cells x elements."""
    rng = np.random.default_rng(0)
    from _diagnosis_runs import records_from_logits

    labels = rng.integers(0, 50, 800)
    base = rng.normal(size=(800, 50))
    records = []
    for epoch in range(100):
        logits = base + rng.normal(scale=0.3, size=base.shape)
        logits[np.arange(800), labels] += 0.02 * epoch
        records.append(records_from_logits(logits, labels))
    names = [f"class {i}" for i in range(50)]
    drawn = render_figures(analysis_of(labels, records, class_names=names), class_colours(50), names)
    sizes = {f.id: len(f.data_uri) for f in drawn}
    assert max(sizes.values()) < 400_000, sizes


@pytest.mark.parametrize("name, reference, tolerance", [("blues", "Blues", 2), ("greys", "Greys", 2),
                                                        ("oranges", "Oranges", 2), ("puor", "PuOr", 20),
                                                        ("cividis", "cividis", 20)])
def test_colour_maps_follow_matplotlibs(name, reference, tolerance):
    """The figures' colour maps against matplotlib's own, at 201 points (RGB in 0-255)."""
    import matplotlib

    t = np.linspace(0.0, 1.0, 201)
    expected = np.rint(matplotlib.colormaps[reference](t)[:, :3] * 255)
    assert np.abs(colour_map(name, t).astype(int) - expected).max() <= tolerance
