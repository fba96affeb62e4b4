"""The report people read (issue 4): structure, figures, PDF pages, markdown, redaction, escaping, offline."""
from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from _prediction_runs import predictions_run
from postmortem.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_runs" / "digits_mlp"


class Page(HTMLParser):
    """Collects ids, figures, images, links, scripts and the visible text of an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.figures: list[str] = []
        self.images: list[dict] = []
        self.links: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "figure":
            self.figures.append(attrs.get("id", ""))
        if tag == "img":
            self.images.append(attrs)
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag in ("style", "script"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.text.append(data.strip())


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory) -> Path:
    """The bundled digits_mlp sample, reported once with its PDF (copied: nothing under sample_runs is written)."""
    run = tmp_path_factory.mktemp("runs") / "digits_mlp"
    shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("postmortem-report"))
    out = run.parent / "report"
    assert main(["report", str(run), "--out", str(out), "--quiet"]) == 0
    return out


def test_html_has_every_section_figure_and_working_link(sample_report):
    page = parse(sample_report / "report.html")
    for section in ("verdict", "findings", "fig-choice", "evidence", "fig-confident-errors", "epochs", "detail",
                    "provenance"):
        assert section in page.ids, section
    expected_figures = {"fig-curves", "fig-decomposition", "fig-loss-shares", "fig-calibration", "fig-reliability",
                        "fig-confidence", "fig-confusion", "fig-flow", "fig-logits"}
    assert expected_figures <= set(page.figures)
    for image in page.images:                       # self-contained: every image inline
        assert image["src"].startswith("data:image/"), image["src"][:40]
        assert image.get("alt")
    epochs = {f"#epoch={e['epoch']}" for e in json.loads((sample_report / "metrics.json").read_text())["epochs"]}
    for link in page.links:      # every internal link lands on an element of the page, or opens an epoch in the view
        assert link.startswith("#"), link
        assert link[1:] in page.ids or link in epochs, link
    metrics = json.loads((sample_report / "metrics.json").read_text())
    assert metrics["findings"], "the sample run shows the phenomenon, so findings must fire"
    for finding in metrics["findings"]:
        assert f"finding-{finding['id']}" in page.ids
        assert finding["figure"] in page.ids, finding["id"]


def test_verdict_and_top_finding_come_first(sample_report):
    page = parse(sample_report / "report.html")
    text = " ".join(page.text)
    top = json.loads((sample_report / "metrics.json").read_text())["findings"][0]
    first_screen = text[:2500]
    assert "What happened?" in first_screen
    assert "model or something else?" in first_screen.lower() and "What to try?" in first_screen
    evidence = text.index("Evidence", text.index("Provenance"))        # past the contents, which end with Provenance
    assert top["title"] in text[:evidence], "top finding must precede the evidence sections"
    assert text.index("Verdict") < text.index("Findings") < text.index("Per-epoch detail") < text.index("Provenance")


def test_provenance_lists_versions_hashes_and_assumptions(sample_report):
    import hashlib

    import torch

    text = " ".join(parse(sample_report / "report.html").text)
    assert "postmortem report" in text and torch.__version__ in text
    first = SAMPLE / "checkpoints" / "epoch_1.pt"
    assert hashlib.sha256(first.read_bytes()).hexdigest()[:16] in text
    assert "outputs assumed" in text and "logits" in text


def test_pdf_pages_are_numbered_headed_and_not_blank(sample_report, tmp_path):
    from pypdf import PdfReader

    pdf = sample_report / "report.pdf"
    reader = PdfReader(pdf)
    n_pages = len(reader.pages)
    assert n_pages >= 3
    width, height = float(reader.pages[0].mediabox.width), float(reader.pages[0].mediabox.height)
    assert (round(width), round(height)) == (595, 842)            # A4 in points
    second = reader.pages[1].extract_text()
    assert "digits_mlp" in second                                 # run name in the page header
    assert f"page 2 of {n_pages}" in second
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed; scripts/system-deps.sh installs it")
    subprocess.run(["pdftoppm", "-r", "20", "-gray", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.pgm"))
    assert len(pages) == n_pages
    for page in pages:
        pixels = _read_pgm(page)
        assert (pixels < 200).mean() > 0.005, f"{page.name} is blank"


def _read_pgm(path: Path) -> np.ndarray:
    """A binary PGM (P5) as a uint8 array."""
    data = path.read_bytes()
    header = data.split(maxsplit=4)
    assert header[0] == b"P5"
    width, height = int(header[1]), int(header[2])
    return np.frombuffer(data[-width * height:], dtype=np.uint8).reshape(height, width)


def test_markdown_summary_has_verdict_findings_and_key_epochs(sample_report):
    md = (sample_report / "report.md").read_text()
    metrics = json.loads((sample_report / "metrics.json").read_text())
    assert md.startswith("## postmortem:")
    assert "**What happened?**" in md
    best = metrics["best_epoch"]
    assert f"| {best} |" in md and "lowest loss" in md
    assert len(md) < 10_000


def test_letter_paper(tmp_path):
    from pypdf import PdfReader

    run = tmp_path / "digits_mlp"
    shutil.copytree(SAMPLE, run)
    out = tmp_path / "out"
    assert main(["report", str(run), "--out", str(out), "--quiet", "--paper", "letter"]) == 0
    box = PdfReader(out / "report.pdf").pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (612, 792)


def test_html_stays_under_5_mb_for_100_epochs_and_50_classes(tmp_path):
    preds = predictions_run(tmp_path, epochs=100, items=1500, classes=50)
    out = tmp_path / "out"
    assert main(["report", str(tmp_path), "--predictions", str(preds), "--out", str(out), "--no-pdf", "--quiet"]) == 0
    size = (out / "report.html").stat().st_size
    assert size < 5 * 1024 * 1024, f"report.html is {size / 1e6:.1f} MB"
    data = _epoch_data(out / "report.html")                            # every epoch still has its detail
    assert len(data["epochs"]) == len(data["matrix"]["counts"]) == len(data["perClass"]["share"]) == 100
    assert all(len(shares) == 50 for shares in data["perClass"]["share"])


HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror=alert(2)>', "a|b*c_[d](e)"]


def _epoch_data(path: Path) -> dict:
    """The epoch view's JSON, read back from the page."""
    text, opening = path.read_text(encoding="utf-8"), '<script type="application/json" id="epoch-data">'
    start = text.index(opening) + len(opening)
    return json.loads(text[start:text.index("</script>", start)])


def _hostile_run(root: Path) -> Path:
    preds = predictions_run(root, epochs=4, items=90, classes=3)
    for path in preds.iterdir():
        content = dict(np.load(path))
        content["ids"] = np.array([HOSTILE[i % 3] + f"#{i}" for i in range(90)])
        np.savez(path, **content)
    return preds


def test_user_controlled_names_are_escaped_everywhere(tmp_path):
    preds = _hostile_run(tmp_path)
    out = tmp_path / "out"
    assert main(["report", str(tmp_path), "--predictions", str(preds), "--out", str(out), "--quiet",
                 "--class-names", ",".join(HOSTILE).replace("|b*", "b*")]) == 0
    page = parse(out / "report.html")
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]       # the epoch view's data and its own code
    assert scripts == [{"type": "application/json", "id": "epoch-data"}, {}]
    assert _epoch_data(out / "report.html")["classes"] == ",".join(HOSTILE).replace("|b*", "b*").split(",")
    assert not any("onerror" in attrs for _, attrs in page.tags)
    assert not any(tag == "img" and attrs.get("src") == "x" for tag, attrs in page.tags)
    assert any("<script>alert(1)</script>" in t for t in page.text)      # shown as text, not run
    md = (out / "report.md").read_text()
    assert "<script>" not in md and "<img" not in md
    from pypdf import PdfReader
    pdf_text = "".join(p.extract_text() for p in PdfReader(out / "report.pdf").pages)
    assert "<script>alert(1)</script>" in pdf_text                        # printed literally


def test_redact_hides_class_names_and_ids_everywhere(tmp_path):
    preds = _hostile_run(tmp_path)
    (tmp_path / "postmortem.toml").write_text('class-names = ["secret_cat", "secret_dog", "secret_eel"]\n')
    out = tmp_path / "out"
    assert main(["report", str(tmp_path), "--predictions", str(preds), "--out", str(out), "--quiet", "--redact"]) == 0
    from pypdf import PdfReader
    texts = {"html": (out / "report.html").read_text(), "md": (out / "report.md").read_text(),
             "json": (out / "metrics.json").read_text(),
             "pdf": "".join(p.extract_text() for p in PdfReader(out / "report.pdf").pages)}
    for where, text in texts.items():
        assert "secret_" not in text, where
        assert "onerror" not in text and "alert(" not in text, where
    assert json.loads(texts["json"])["classes"] == ["class 1", "class 2", "class 3"]


def test_pdf_renderer_fetches_nothing():
    """An external image in the HTML is refused: a loopback server sees no connection."""
    from postmortem.render.pdf import pdf_bytes

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    hits = []

    def accept() -> None:
        try:
            connection, _ = server.accept()
            hits.append(connection)
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    pdf = pdf_bytes(f'<html><body><p>x</p><img src="http://127.0.0.1:{port}/a.png">'
                    f'<link rel="stylesheet" href="http://127.0.0.1:{port}/a.css"></body></html>')
    thread.join()
    server.close()
    assert pdf.startswith(b"%PDF")
    assert hits == []


def test_html_screenshot_in_headless_chromium(sample_report, tmp_path):
    """The whole page as a reader sees it: drawn, not blank, and without a console error."""
    from _chromium import Chromium

    with Chromium.start(tmp_path / "profile") as browser:
        page = browser.open((sample_report / "report.html").as_uri(), width=1200, height=2000)
        png = page.screenshot()
        assert page.problems() == []
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1000
    assert pixels[..., :3].std() > 0.05, "the screenshot is blank"


def test_a_rerender_draws_the_same_figures_and_redraws_when_the_labels_change(tmp_path):
    """Figures are drawn each time (milliseconds; no cache to go stale) and are the same bytes for the same input."""
    run = tmp_path / "digits_mlp"
    shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("postmortem-report"))
    out = tmp_path / "out"
    assert main(["report", str(run), "--out", str(out), "--no-pdf", "--quiet"]) == 0
    first = [img["src"] for img in parse(out / "report.html").images]
    assert main(["report", str(run), "--out", str(out), "--no-pdf", "--quiet"]) == 0
    assert [img["src"] for img in parse(out / "report.html").images] == first
    assert not list((out / "cache").glob("figures-*"))
    assert main(["report", str(run), "--out", str(out), "--no-pdf", "--quiet", "--class-names",
                 "zero,one,two,three,four,five,six,seven,eight,nine"]) == 0    # other labels: other figures
    assert [img["src"] for img in parse(out / "report.html").images] != first


def test_pdf_lists_the_classes_that_carry_the_loss_when_there_are_many(tmp_path):
    from pypdf import PdfReader

    preds = predictions_run(tmp_path, epochs=4, items=600, classes=30)
    names = [f"kind{i:02d}" for i in range(30)]
    out = tmp_path / "out"
    assert main(["report", str(tmp_path), "--predictions", str(preds), "--out", str(out), "--quiet",
                 "--class-names", ",".join(names)]) == 0
    pdf_text = "".join(p.extract_text() for p in PdfReader(out / "report.pdf").pages)
    assert "the 20 with the largest loss share" in pdf_text
    assert "The 20 classes with the largest part of dL (30 in report.html)" in pdf_text
    html_text = " ".join(parse(out / "report.html").text)
    assert all(name in html_text for name in names)                   # the HTML keeps every class
    metrics = json.loads((out / "metrics.json").read_text())
    last = metrics["epochs"][-1]["per_class"]
    top = sorted(names, key=lambda n: -last[n]["loss_share"])[:20]
    assert all(name in pdf_text for name in top)


def test_a_rerender_with_nothing_changed_reuses_the_pdf_and_lays_it_out_again_when_the_report_changes(tmp_path):
    from pypdf import PdfReader

    run = tmp_path / "digits_mlp"
    shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("postmortem-report"))
    out = tmp_path / "out"
    for _ in range(2):    # the first run evaluates, the second reads the evaluation cache: their provenance differs
        assert main(["report", str(run), "--out", str(out), "--quiet"]) == 0
    cached = list((out / "cache").glob("report-*.pdf"))
    assert len(cached) == 1 and cached[0].read_bytes() == (out / "report.pdf").read_bytes()
    stamp = cached[0].stat().st_mtime_ns
    assert main(["report", str(run), "--out", str(out), "--quiet"]) == 0      # nothing changed: not laid out again
    assert cached[0].stat().st_mtime_ns == stamp
    assert (out / "report.pdf").read_bytes() == cached[0].read_bytes()
    cached[0].write_bytes(b"%PDF-1.7 truncated")                                # a corrupt entry is laid out again
    assert main(["report", str(run), "--out", str(out), "--quiet"]) == 0
    assert len(PdfReader(out / "report.pdf").pages) > 1
    assert main(["report", str(run), "--out", str(out), "--quiet", "--title", "another name"]) == 0
    assert "another name" in PdfReader(out / "report.pdf").pages[0].extract_text()
    assert len(list((out / "cache").glob("report-*.pdf"))) == 1


def test_the_pdf_cache_ignores_the_minute_the_report_was_written(tmp_path):
    """Two print HTMLs that differ only in their 'generated' stamp reuse one laid-out PDF (a re-render a minute
    later used to lay the whole report out again); any other difference lays it out anew."""
    from postmortem.pipeline import _cached_pdf

    page = "<html><body><p>postmortem · {stamp}</p><p>{text}</p></body></html>"
    first = _cached_pdf(tmp_path, page.format(stamp="2026-11-29 20:14", text="verdict"), "2026-11-29 20:14")
    entry = next(tmp_path.glob("report-*.pdf"))
    stamp = entry.stat().st_mtime_ns
    again = _cached_pdf(tmp_path, page.format(stamp="2026-11-29 20:15", text="verdict"), "2026-11-29 20:15")
    assert again == first and entry.stat().st_mtime_ns == stamp
    other = _cached_pdf(tmp_path, page.format(stamp="2026-11-29 20:15", text="another verdict"), "2026-11-29 20:15")
    assert other != first and other.startswith(b"%PDF-") and len(list(tmp_path.glob("report-*.pdf"))) == 1
