"""Issue 18: a report at ImageNet's class count (1,000) and a tagging vocabulary's (10,000), in the time and the
size it takes at 20 classes: metrics.json compact and its confusion matrices sparse above 100 classes, the
numbers still exact against torch and scikit-learn."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, f1_score

from _chromium import Chromium
from _core_runs import epoch_mismatches, reference_epoch
from _prediction_runs import predictions_run
from postmortem.analyze.metrics import ConfusionCounts
from postmortem.cli import main
from postmortem.render.class_rows import MAX_LISTED_CLASSES
from postmortem.render.metrics_json import INDENT_BELOW_BYTES, SPARSE_CONFUSION_ABOVE, confusion_entry, metrics_bytes


def test_metrics_json_is_indented_while_small_and_compact_above():
    small = {"schema_version": 1, "epochs": [{"loss": 0.5, "per_class": {"a": {"support": 3}}}]}
    assert metrics_bytes(small) == json.dumps(small, indent=1).encode()
    large = {"schema_version": 1, "values": list(range(INDENT_BELOW_BYTES // 4))}
    written = metrics_bytes(large)
    assert b"\n" not in written and json.loads(written) == large
    assert len(written) < len(json.dumps(large, indent=1))


def test_confusion_matrix_is_dense_up_to_100_classes_and_its_nonzero_cells_above():
    rng = np.random.default_rng(0)
    for n_classes in (3, SPARSE_CONFUSION_ABOVE, SPARSE_CONFUSION_ABOVE + 1, 1000):
        labels, pred = rng.integers(0, n_classes, 500), rng.integers(0, n_classes, 500)
        expected = confusion_matrix(labels, pred, labels=list(range(n_classes)))
        entry = json.loads(json.dumps(confusion_entry(ConfusionCounts.of(labels, pred, n_classes))))
        if n_classes <= SPARSE_CONFUSION_ABOVE:
            assert entry == {"confusion_matrix": expected.tolist()}
            continue
        cells = entry["confusion_matrix_sparse"]
        assert set(entry) == {"confusion_matrix_sparse"} and cells["shape"] == [n_classes, n_classes]
        assert len(cells["counts"]) == np.count_nonzero(expected) and min(cells["counts"]) > 0
        assert sorted(zip(cells["rows"], cells["columns"])) == list(zip(cells["rows"], cells["columns"]))
        rebuilt = scipy.sparse.coo_matrix((cells["counts"], (cells["rows"], cells["columns"])), cells["shape"])
        np.testing.assert_array_equal(rebuilt.toarray(), expected)


def _sparse_to_dense(epoch: dict) -> list[list[int]]:
    cells = epoch["confusion_matrix_sparse"]
    return scipy.sparse.coo_matrix((cells["counts"], (cells["rows"], cells["columns"])), cells["shape"]).toarray().tolist()


@pytest.fixture(scope="module")
def thousand_classes(tmp_path_factory) -> SimpleNamespace:
    """3 epochs x 1,500 items x 1,000 classes of float32 logits growing overconfident, so that the loss rises
    (a few items per class, many classes never predicted), reported once without the PDF."""
    root = tmp_path_factory.mktemp("thousand")
    preds = predictions_run(root, 3, 1500, 1000, noise=1.0, margin=lambda epoch: 3.5, scale=lambda epoch: 1.5 * epoch)
    out = root / "out"
    assert main(["report", str(root), "--predictions", str(preds), "--out", str(out), "--no-pdf", "--quiet"]) == 0
    return SimpleNamespace(preds=preds, out=out, metrics=json.loads((out / "metrics.json").read_text()),
                           html=(out / "report.html").read_text(encoding="utf-8"))


def test_a_thousand_classes_are_exact_against_torch_and_scikit_learn(thousand_classes):
    """Every contract field of every epoch (loss, accuracy, ECE, Brier, mean confidence, the confusion matrix from
    its sparse cells, every class's support, loss, loss share, precision and recall) against torch's nll_loss and
    scikit-learn on the same float64 log-softmax, and macro F1 and the fitted temperature besides."""
    from scipy.optimize import minimize_scalar

    metrics, classes = thousand_classes.metrics, [str(c) for c in range(1000)]
    assert metrics["classes"] == classes and metrics["verdict"]["status"] == "rise"
    for epoch, got in zip((1, 2, 3), metrics["epochs"]):
        with np.load(thousand_classes.preds / f"epoch_{epoch}.npz") as archive:
            logits, labels = torch.from_numpy(archive["outputs"]).double(), torch.from_numpy(archive["labels"])
        log_probs = F.log_softmax(logits, dim=1)
        expected = reference_epoch(epoch, f"epoch_{epoch}.npz", log_probs, labels, classes, None)
        assert "confusion_matrix" not in got
        problems = epoch_mismatches({**got, "confusion_matrix": _sparse_to_dense(got)}, expected)
        assert not problems, "\n".join(problems[:10])
        pred = log_probs.argmax(dim=1).numpy()
        present = np.unique(labels.numpy())
        assert got["macro_f1_score"] == pytest.approx(
            f1_score(labels.numpy(), pred, labels=present, average="macro", zero_division=0), rel=1e-12)

        def loss(log_t: float) -> float:
            return F.cross_entropy(logits / np.exp(log_t), labels).item()
        fitted = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                                 options={"xatol": 1e-10}).x
        assert got["temperature"] == pytest.approx(np.exp(fitted), rel=1e-7)


def test_a_thousand_classes_fold_the_per_class_tables_and_stay_small(thousand_classes):
    """report.html lists the 50 classes with the largest loss share of each key epoch (largest first) and one row
    for the other 950; the class-share table the 50 with the largest part of dL; the figures fold likewise."""
    html, metrics = thousand_classes.html, thousand_classes.metrics
    assert len(html.encode()) < 400_000
    last = metrics["epochs"][-1]
    shares = {name: c["loss_share"] for name, c in last["per_class"].items()}
    expected = sorted(shares, key=lambda name: -shares[name])[:MAX_LISTED_CLASSES]
    section = html[html.index(f'<div class="epoch" id="epoch-{len(metrics["epochs"])}">'):]
    start = section.index("<th>class (the 50 with the largest loss share")
    table = section[start:section.index("</table>", start)]
    names = re.findall(r"<tr(?: class=\"other\")?><td>(?:<span[^>]*>■</span> )?([^<]+)</td>", table)
    assert names == expected + ["other (950 classes)"]
    other = re.search(r'<tr class="other"><td>other \(950 classes\)</td><td>([\d,]+)</td><td>([\d.]+)</td>'
                      r"<td>([\d.]+)</td>", table)
    folded = [c for name, c in last["per_class"].items() if name not in expected]
    assert int(other.group(1).replace(",", "")) == sum(c["support"] for c in folded)
    assert float(other.group(3)) == pytest.approx(sum(c["loss_share"] for c in folded), abs=5e-5)
    with_items = [c for c in folded if c["support"]]
    assert float(other.group(2)) == pytest.approx(
        sum(c["loss"] * c["support"] for c in with_items) / sum(c["support"] for c in with_items), abs=5e-5)
    assert "The 50 classes with the largest part of dL, largest first; the other 950 are summed" in html
    grown = html[html.index("<h3>The confusions that grew most"):]
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td><td>", grown[:grown.index("</table>")])
    assert rows == [(k["true_class"], k["predicted_class"]) for k in metrics["attribution"]["confusions"]]
    assert 0 < len(rows) <= 10
    assert "the grey band on top sums the other 950" in html and "the last bar sums the other 950" in html


def test_the_epoch_view_lists_each_epochs_largest_loss_shares(thousand_classes, tmp_path):
    """In the browser, at every epoch, the per-class table shows that epoch's 50 largest loss shares in order, with
    metrics.json's numbers, and the other 950 classes in its last row."""
    metrics = thousand_classes.metrics
    with Chromium.start(tmp_path / "profile") as browser:
        for index, epoch in enumerate(metrics["epochs"]):
            page = browser.open((thousand_classes.out / "report.html").as_uri() + f"#epoch={epoch['epoch']}")
            rows = page.evaluate("[...document.querySelectorAll('#ev-classes tbody tr')].map("
                                 "tr => [...tr.querySelectorAll('td')].map(td => td.textContent))")
            shares = {name: c["loss_share"] for name, c in epoch["per_class"].items()}
            expected = sorted(shares, key=lambda name: -shares[name])[:MAX_LISTED_CLASSES]
            assert [row[0].split(" ", 1)[1] for row in rows[:-1]] == expected, index
            for row, name in zip(rows, expected):
                assert float(row[3]) == pytest.approx(shares[name], abs=5e-5)
                assert int(row[1].replace(",", "")) == epoch["per_class"][name]["support"]
            assert rows[-1][0] == "other (950 classes)"
            assert int(rows[-1][1].replace(",", "")) == sum(
                c["support"] for name, c in epoch["per_class"].items() if name not in expected)
            assert page.problems() == []


def test_diagnosis_sentences_name_at_most_ten_classes():
    from postmortem.diagnose.wording import CLASSES_IN_TEXT, listed_text

    names = [f"class{k}" for k in range(140)]
    assert listed_text(names[:CLASSES_IN_TEXT]) == ", ".join(names[:CLASSES_IN_TEXT])
    text = listed_text(names, "; ")
    assert text.startswith("; ".join(names[:CLASSES_IN_TEXT]) + " … and 130 more (140 classes in all")
    assert "class10;" not in text and "class10 " not in text
