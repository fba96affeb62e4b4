"""Issue 12: the per-epoch view with a slider. Its data travels once as JSON in the page, its own script draws it,
and it works offline in headless Chromium: #epoch=first/last/N, arrow keys, links, the counts/row toggle, the
fold above 20 classes, hostile class names kept inert, and a page that fetches nothing."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from html import unescape
from pathlib import Path

import numpy as np
import pytest

from _chromium import Chromium
from _prediction_runs import predictions_run
from postmortem.analyze.metrics import ConfusionCounts
from postmortem.cli import main
from postmortem.render.epoch_view import FOLD_ABOVE, MatrixFold
from postmortem.render.html import json_island

HOSTILE = ["</script><script>alert(1)</script>", "<!--x", "a\u2028b&c", '"><img src=x onerror=alert(2)>']


def _report(root: Path, epochs: int, items: int, classes: int, *options: str) -> Path:
    out = root / "out"
    # logits that sharpen and drift with the epoch, so every epoch's matrix and histograms differ
    preds = predictions_run(root, epochs, items, classes, noise=0.6, margin=lambda epoch: 0.4 * epoch,
                            scale=lambda epoch: 0.6 + 0.2 * epoch)
    assert main(["report", str(root), "--predictions", str(preds), "--out",
                 str(out), "--no-pdf", "--quiet", *options]) == 0
    return out


def _island(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="epoch-data">(.*?)</script>', html, re.S)
    assert match, "no epoch data in the page"
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Chromium.start(tmp_path_factory.mktemp("chromium-profile")) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def six_epochs(tmp_path_factory) -> Path:
    return _report(tmp_path_factory.mktemp("six"), 6, 400, 4)


DRAWN_MATRIX = """[...document.querySelectorAll('#ev-confusion tr')].slice(1).map(
    tr => [...tr.querySelectorAll('td')].map(td => td.textContent === '' ? 0 : Number(td.textContent)))"""


def _state(page) -> dict:
    return page.evaluate("({epoch: Number(document.getElementById('epoch-view').dataset.epoch), hash: location.hash, "
                         f"title: document.getElementById('ev-title').textContent, matrix: {DRAWN_MATRIX}, "
                         "slider: Number(document.getElementById('ev-slider').value)})")


def test_first_and_last_epoch_open_from_the_address_and_differ_where_the_data_differ(browser, six_epochs):
    metrics = json.loads((six_epochs / "metrics.json").read_text())
    url = (six_epochs / "report.html").as_uri()
    shots = {}
    for name, index in (("first", 0), ("last", -1)):
        page = browser.open(f"{url}#epoch={name}")
        state = _state(page)
        epoch = metrics["epochs"][index]
        assert state["epoch"] == epoch["epoch"] and f"Epoch {epoch['epoch']} " in state["title"]
        assert state["matrix"] == epoch["confusion_matrix"]
        assert page.evaluate("document.getElementById('epoch-view').getBoundingClientRect().top") < 900, \
            "the view opened by the address is scrolled into sight"
        shots[name] = page.screenshot("#epoch-view")
        assert page.problems() == []
    assert metrics["epochs"][0]["confusion_matrix"] != metrics["epochs"][-1]["confusion_matrix"]
    assert shots["first"] != shots["last"]
    first, last = _pixels(shots["first"]), _pixels(shots["last"])
    assert first.shape == last.shape and first.std() > 10
    assert (np.abs(first.astype(int) - last.astype(int)).max(axis=-1) > 40).mean() > 0.005, \
        "the two epochs' views look alike"


def _pixels(png: bytes) -> np.ndarray:
    from matplotlib.image import imread
    import io

    return (imread(io.BytesIO(png), format="png")[..., :3] * 255).astype(np.uint8)


def test_arrow_keys_step_through_every_epoch_and_the_address_follows(browser, six_epochs):
    metrics = json.loads((six_epochs / "metrics.json").read_text())
    page = browser.open((six_epochs / "report.html").as_uri() + "#epoch=last")
    page.evaluate("document.body.focus()")
    for index in reversed(range(len(metrics["epochs"]))):
        state = _state(page)
        epoch = metrics["epochs"][index]
        assert state["slider"] == index and state["epoch"] == epoch["epoch"]
        assert state["matrix"] == epoch["confusion_matrix"], f"epoch {epoch['epoch']}"
        if index < len(metrics["epochs"]) - 1:
            assert state["hash"] == f"#epoch={epoch['epoch']}"
        page.key("ArrowLeft", 37)
    assert _state(page)["epoch"] == metrics["epochs"][0]["epoch"]          # stops at the first
    page.key("ArrowRight", 39)
    assert _state(page)["epoch"] == metrics["epochs"][1]["epoch"]
    assert page.problems() == []


def test_links_and_numbers_in_the_address_choose_the_epoch(browser, six_epochs):
    metrics = json.loads((six_epochs / "metrics.json").read_text())
    page = browser.open((six_epochs / "report.html").as_uri() + "#epoch=3")
    assert _state(page)["epoch"] == 3
    page.evaluate("document.querySelector('a[href=\"#epoch=5\"]').click()")    # the epoch summary table's link
    state = _state(page)
    assert state["epoch"] == 5 and state["matrix"] == metrics["epochs"][4]["confusion_matrix"]
    page.evaluate("document.getElementById('ev-next').click()")
    assert _state(page)["epoch"] == 6
    page.evaluate("document.querySelector('input[value=rows]').click()")
    rows = page.evaluate("""[...document.querySelectorAll('#ev-confusion tr')].slice(1).map(tr =>
        [...tr.querySelectorAll('td')].reduce((s, td) => s + (td.textContent ? Number(td.textContent) : 0), 0))""")
    assert all(abs(r - 100) < 4 for r in rows), f"row-normalised rows should sum to 100%: {rows}"
    assert page.problems() == []


SHOWN = "(s => [...document.querySelectorAll(s)].map(e => getComputedStyle(e).display !== 'none' && !e.hidden))"


def test_without_javascript_and_in_print_the_key_epochs_are_shown_instead(browser, six_epochs):
    key = [f"epoch-{i}" for i in (1, 6)]            # first and last, at least
    page = browser.open((six_epochs / "report.html").as_uri(), scripts=False)
    assert page.evaluate(f"{SHOWN}('#epoch-view')") == [False]
    assert page.evaluate(f"{SHOWN}('.static-epochs')") == [True]
    assert all(page.evaluate(f"!!document.getElementById('{k}')") for k in key)
    page = browser.open((six_epochs / "report.html").as_uri())
    assert page.evaluate(f"{SHOWN}('#epoch-view')") == [True] and page.evaluate(f"{SHOWN}('.static-epochs')") == [False]
    page.media("print")
    assert page.evaluate(f"{SHOWN}('#epoch-view')") == [False] and page.evaluate(f"{SHOWN}('.static-epochs')") == [True]
    assert page.problems() == []


def test_the_page_fetches_nothing_and_its_policy_forbids_it(browser, six_epochs):
    hits = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(2)
    port = server.getsockname()[1]

    def accept() -> None:
        try:
            hits.append(server.accept()[0])
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    page = browser.open((six_epochs / "report.html").as_uri())
    assert all(url.startswith(("file:", "data:")) for url in page.requests()), page.requests()
    assert page.problems() == []
    refused = page.evaluate(f"fetch('http://127.0.0.1:{port}/x').then(() => 'fetched', () => 'refused')")
    page.evaluate(f"(() => {{ const i = document.createElement('img'); i.src = 'http://127.0.0.1:{port}/y.png'; "
                  "document.body.appendChild(i); })()")
    thread.join()
    server.close()
    assert refused == "refused" and hits == []
    assert any("Content Security Policy" in problem for problem in page.problems())


def test_the_policy_allows_exactly_the_page_script(six_epochs):
    html = (six_epochs / "report.html").read_text(encoding="utf-8")
    policy = unescape(re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html).group(1))
    assert "default-src 'none'" in policy and "connect-src" not in policy
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy


def test_hostile_class_names_stay_data(browser, tmp_path):
    out = _report(tmp_path, 3, 120, 4, "--class-names", ",".join(HOSTILE))
    html = (out / "report.html").read_text(encoding="utf-8")
    island = re.search(r'id="epoch-data">(.*?)</script>', html, re.S).group(1)
    assert not set(island) & {"<", ">", "&", "\u2028", "\u2029"}
    assert _island(html)["classes"] == HOSTILE
    page = browser.open((out / "report.html").as_uri())
    assert page.evaluate("document.scripts.length") == 2
    assert page.evaluate("document.querySelectorAll('img:not([src^=\"data:\"])').length") == 0
    heads = page.evaluate("[...document.querySelectorAll('#ev-confusion th')].map(th => th.textContent)")
    assert [f"{i + 1} {name}" for i, name in enumerate(HOSTILE)] == heads[1 + len(HOSTILE):]
    names = page.evaluate("[...document.querySelectorAll('#ev-classes tbody td:first-child')].map(td => td.textContent)")
    assert [name.split(" ", 1)[1] for name in names] == HOSTILE
    assert page.problems() == []


def test_above_twenty_classes_the_matrix_folds_the_classes_with_little_loss(browser, tmp_path):
    out = _report(tmp_path, 4, 1500, 50)
    metrics = json.loads((out / "metrics.json").read_text())
    data = _island((out / "report.html").read_text(encoding="utf-8"))
    labels = data["matrix"]["labels"]
    assert len(labels) == FOLD_ABOVE and labels[-1] == f"other ({50 - FOLD_ABOVE + 1} classes)"
    mean_share = np.mean([[e["per_class"][c]["loss_share"] for c in metrics["classes"]] for e in metrics["epochs"]], 0)
    top = {metrics["classes"][c] for c in np.argsort(-mean_share)[:FOLD_ABOVE - 1]}
    assert set(labels[:-1]) == top
    page = browser.open((out / "report.html").as_uri() + "#epoch=last")
    drawn = np.array(_state(page)["matrix"])
    full = np.array(metrics["epochs"][-1]["confusion_matrix"])
    assert drawn.shape == (FOLD_ABOVE, FOLD_ABOVE) and drawn.sum() == full.sum()
    shown = [metrics["classes"].index(name) for name in labels[:-1]]
    assert (drawn[:-1, :-1] == full[np.ix_(shown, shown)]).all()
    assert page.evaluate("document.querySelectorAll('#ev-classes tbody tr').length") == 50
    assert page.problems() == []


def test_json_island_escapes_what_could_end_a_script():
    value = {"names": HOSTILE + ["</SCRIPT >", "\u2029"], "n": [1, None, 0.5]}
    text = str(json_island(value))
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(text) == value


def test_fold_keeps_every_item():
    rng = np.random.default_rng(1)
    matrix = rng.integers(0, 9, size=(30, 30))
    fold = MatrixFold(tuple(int(c) for c in np.sort(rng.choice(30, 19, replace=False))), 11)
    rows, columns = np.nonzero(matrix)
    folded = fold.apply(ConfusionCounts(30, rows, columns, matrix[rows, columns]))
    assert folded.shape == (20, 20) and folded.sum() == matrix.sum()
    kept = list(fold.shown)
    assert (folded[:-1, :-1] == matrix[np.ix_(kept, kept)]).all()
    rest = [c for c in range(30) if c not in kept]
    assert folded[-1, -1] == matrix[np.ix_(rest, rest)].sum()
    assert (folded[:-1, -1] == matrix[np.ix_(kept, rest)].sum(axis=1)).all()
