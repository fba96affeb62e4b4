"""--train-log end to end: the logged curve is overlaid, compared, and a mismatch becomes a finding."""
from __future__ import annotations

import numpy as np

from _fixtures_inputs import make_run, reference_loss, report, validation_tensors
from test_report_render import parse

WEIGHTS = "1.0,3.0,0.5"


def _log(path, values):
    path.write_text("epoch,train_loss,val_loss\n" + "".join(f"{i + 1},0.9,{v!r}\n" for i, v in enumerate(values)))
    return path


def test_a_log_of_batch_means_is_a_finding_with_its_table(tmp_path):
    run, models = make_run(tmp_path, n_epochs=3)
    x, y = validation_tensors()
    weights = [float(w) for w in WEIGHTS.split(",")]
    logged = [float(np.mean([reference_loss(m, x[i:i + 16], y[i:i + 16], weights) for i in range(0, len(y), 16)]))
              for m in models]
    log = _log(tmp_path / "log.csv", logged)
    code, _, metrics = report(run, "--data", str(run / "val.pt"), "--class-weights", WEIGHTS, "--batch-size", "16",
                              "--train-log", str(log))
    assert code == 0
    finding = next(f for f in metrics["findings"] if f["id"] == "logged_loss_mismatch")
    recomputed = [e["loss"] for e in metrics["epochs"]]
    worst = max(abs(a - b) / b for a, b in zip(logged, recomputed))
    assert abs(finding["evidence"]["max_relative_difference"] - worst) < 1e-9
    assert finding["thresholds"]["max_relative_difference"] == 1e-3
    assert "per-batch mean" in finding["summary"]
    assert finding["figure"] == "fig-train-log"
    page = parse(tmp_path / "report" / "report.html")
    assert "fig-train-log" in page.ids and "finding-logged_loss_mismatch" in page.ids
    text = " ".join(page.text)
    assert f"{logged[0]:.4f}" in text and f"{recomputed[0]:.4f}" in text


def test_an_exact_log_agrees_and_raises_no_finding(tmp_path):
    run, models = make_run(tmp_path, n_epochs=3)
    x, y = validation_tensors()
    weights = [float(w) for w in WEIGHTS.split(",")]
    log = _log(tmp_path / "log.csv", [reference_loss(m, x, y, weights) for m in models])
    code, _, metrics = report(run, "--data", str(run / "val.pt"), "--class-weights", WEIGHTS,
                              "--train-log", str(log))
    assert code == 0
    assert "logged_loss_mismatch" not in [f["id"] for f in metrics["findings"]]
    text = " ".join(parse(tmp_path / "report" / "report.html").text)
    assert "agrees with the recomputed one" in text


def test_the_logged_curves_are_drawn_on_the_loss_figure(tmp_path):
    import base64

    run, models = make_run(tmp_path, n_epochs=3)
    log = _log(tmp_path / "log.csv", [0.5, 0.4, 0.45])
    assert report(run, "--data", str(run / "val.pt"), "--train-log", str(log))[0] == 0
    page = parse(tmp_path / "report" / "report.html")
    curves = next(img["src"] for img in page.images if img.get("alt") == "Validation loss and accuracy")
    svg = base64.b64decode(curves.split(",", 1)[1]).decode()
    assert "training loss (log)" in svg and "validation loss (log)" in svg
