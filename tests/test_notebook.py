"""Issue 17, item 2: `postmortem.report(run, **options)` for notebooks, on the real sample run.

The inline view is parsed back with html.parser: its iframe's srcdoc must be report.html exactly as written, and
nothing in the view may point at the network. `.metrics` and `.epochs` are checked against metrics.json on disk.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

import postmortem
from postmortem.errors import ConfigError

SAMPLE = Path(__file__).resolve().parent.parent / "sample_runs" / "digits_mlp"


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("notebook") / "digits_mlp"
    shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("postmortem-report"))
    return run


@pytest.fixture(scope="module")
def result(sample_run) -> postmortem.Report:
    return postmortem.report(sample_run, quiet=True)


class _Elements(HTMLParser):
    """Every start tag with its attributes (values unescaped by the parser, as a browser reads them)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parsed(markup: str) -> _Elements:
    parser = _Elements()
    parser.feed(markup)
    parser.close()
    return parser


NETWORK = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
FETCHING_ATTRIBUTES = ("src", "href", "srcset", "poster", "data", "action", "formaction")


def test_report_writes_the_report_and_reads_it_back(result, sample_run):
    out = sample_run / "postmortem-report"
    assert result.out_dir == out
    assert {p.name for p in result.files} == {"metrics.json", "report.html", "report.md"}   # no PDF unless asked
    assert not (out / "report.pdf").exists()
    on_disk = json.loads((out / "metrics.json").read_text())
    assert result.metrics == on_disk
    assert result.verdict == on_disk["verdict"]
    assert result.verdict["primary_cause"] == "calibration"          # the sample's verdict (README)
    assert len(repr(result)) < 1000                                   # the HTML and metrics stay out of it


def test_repr_html_holds_report_html_exactly_and_fetches_nothing(result, sample_run):
    view = result._repr_html_()
    parsed = _parsed(view)
    frames = [attrs for tag, attrs in parsed.elements if tag == "iframe"]
    assert len(frames) == 1
    written = (sample_run / "postmortem-report" / "report.html").read_text(encoding="utf-8")
    assert frames[0]["srcdoc"] == written
    assert "src" not in frames[0]
    assert "calibration" in "".join(parsed.text)                      # the heading names the primary cause
    inner = _parsed(frames[0]["srcdoc"])
    for tag, attrs in parsed.elements + inner.elements:
        for name in FETCHING_ATTRIBUTES:
            value = attrs.get(name)
            assert value is None or not NETWORK.match(value), (tag, name, value)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", written)      # nor a stylesheet
    assert not re.search(r"@import", written)


def test_epochs_are_metrics_json_numbers_one_row_per_epoch(result):
    table = result.epochs
    epochs = result.metrics["epochs"]
    assert len(table) == len(epochs) == 20
    assert {"epoch", "loss", "accuracy", "macro_f1_score", "temperature", "scaled_loss", "ece", "brier",
            "loss_change"} <= set(table.columns)
    for row, entry in zip(table.to_dict("records"), epochs):
        for column, value in row.items():
            expected = entry["change_from_previous"]["loss_change"] if column == "loss_change" and \
                entry["change_from_previous"] else entry.get(column)
            if expected is None:
                assert value is None or (isinstance(value, float) and math.isnan(value)), (column, value)
            else:
                assert value == expected, (entry["epoch"], column)
    assert table["epoch"].tolist() == list(range(1, 21))
    assert table["loss_change"].iloc[1:].tolist() == pytest.approx(table["loss"].diff().iloc[1:].tolist(), abs=1e-12)


def test_options_win_over_the_file_and_the_pdf_is_written_when_asked(result, sample_run, tmp_path):
    # The first report's evaluation cache (OUT/cache) goes along: only the PDF is new work here.
    shutil.copytree(result.out_dir / "cache", tmp_path / "out" / "cache")
    result = postmortem.report(sample_run, out=tmp_path / "out", no_pdf=False, title="notebook run", quiet=True)
    assert {p.name for p in result.files} == {"metrics.json", "report.html", "report.md", "report.pdf"}
    assert (tmp_path / "out" / "report.pdf").read_bytes().startswith(b"%PDF-")
    assert "notebook run" in result.html
    assert "postmortem report " + str(sample_run) + " --out " in result.html   # the provenance's command line


def test_an_unknown_option_is_one_line_naming_the_closest(sample_run):
    with pytest.raises(ConfigError, match=r"^postmortem.report: unknown option 'class_weight'; did you mean "
                                          r"'class_weights'\?$"):
        postmortem.report(sample_run, class_weight=[1.0])
