"""Issue 2, bad input: a bad checkpoint in a series is skipped and reported (exit 0); unusable input
exits 2 with one line `postmortem: error: ...` naming the file, and no traceback.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from _core_runs import (BuiltRun, assert_metrics_match, build_mlp_run, parse_html, report_ok, run_cli,
                        run_module, snapshot)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A good 6-epoch run to copy from (building it once)."""
    root = tmp_path_factory.mktemp("errors")
    return build_mlp_run(root, "series", epochs=6, steps=3)


def copy_run(series: BuiltRun, tmp_path, name="run") -> BuiltRun:
    path = tmp_path / name
    shutil.copytree(series.path, path)
    options = [str(path / "val.pt") if o == str(series.path / "val.pt") else o for o in series.options]
    return BuiltRun(path, options, series.classes, series.weights, list(series.expected), dict(series.extra))


def assert_one_error_line(result, *must_name: str) -> str:
    assert result.rc == 2, f"exit {result.rc}, expected 2; stderr:\n{result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("postmortem: error: "), line
    assert "Traceback" not in result.stderr
    for name in must_name:
        assert name in line, f"the message does not name {name!r}: {line}"
    return line


# ----------------------------------------------------------------------------- skipped checkpoints
def test_bad_checkpoints_are_skipped_and_reported(series, tmp_path):
    run = copy_run(series, tmp_path)
    ckpts = run.path / "checkpoints"
    data = (ckpts / "epoch_3.pt").read_bytes()
    (ckpts / "epoch_3.pt").write_bytes(data[: len(data) // 2])                  # truncated
    (ckpts / "epoch_7.pt").write_bytes(b"\x00garbage, not a checkpoint" * 20)    # not a checkpoint at all
    wrong = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in series.extra["states"][1].items()}
    torch.save(wrong, ckpts / "epoch_8.pt")                                      # does not fit the model
    out = tmp_path / "out"

    result = run_cli("report", run.path, "--out", out, "--no-pdf", "--quiet", *run.options)
    report_ok(result)
    metrics = json.loads((out / "metrics.json").read_text())
    skipped = {s["checkpoint"]: s["error"] for s in metrics["skipped"]}
    assert set(skipped) == {"epoch_3.pt", "epoch_7.pt", "epoch_8.pt"}, metrics["skipped"]
    assert all(isinstance(e, str) and e.strip() for e in skipped.values())
    assert "epoch_3.pt" in skipped["epoch_3.pt"]
    run.expected = [e for e in series.expected if e["checkpoint"] != "epoch_3.pt"]
    assert_metrics_match(metrics, run)
    html = (out / "report.html").read_text(encoding="utf-8")
    text = parse_html(html).text()
    for name in skipped:
        assert name in text, f"report.html does not mention the skipped {name}"


def test_every_checkpoint_bad_is_unusable_input(series, tmp_path):
    run = copy_run(series, tmp_path)
    for path in (run.path / "checkpoints").iterdir():
        data = path.read_bytes()
        path.write_bytes(data[:100])
    out = tmp_path / "out"
    result = run_cli("report", run.path, "--out", out, "--no-pdf", *run.options)
    assert_one_error_line(result, "epoch_")
    assert not (out / "metrics.json").exists()


# ----------------------------------------------------------------------------- exit status 2
def test_missing_run_directory(tmp_path):
    missing = tmp_path / "no_such_run"
    result = run_module("report", missing, "--no-pdf")
    assert_one_error_line(result, str(missing))
    assert not missing.exists(), "postmortem created the missing run directory"


def test_missing_data_file(series, tmp_path):
    run = copy_run(series, tmp_path)
    before = snapshot(run.path)
    result = run_cli("report", run.path, "--data", run.path / "nope.pt", "--no-pdf", "--out", tmp_path / "out")
    assert_one_error_line(result, "nope.pt")
    assert snapshot(run.path) == before
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_unreadable_data_file(series, tmp_path):
    run = copy_run(series, tmp_path)
    (run.path / "val.pt").write_bytes(b"this is not a torch file")
    result = run_cli("report", run.path, "--no-pdf", *run.options)
    assert_one_error_line(result, "val.pt")


def test_data_file_without_labels(series, tmp_path):
    run = copy_run(series, tmp_path)
    torch.save({"inputs": series.extra["x_val"]}, run.path / "val.pt")
    result = run_cli("report", run.path, "--no-pdf", *run.options)
    line = assert_one_error_line(result, "val.pt")
    assert "labels" in line


def test_missing_checkpoint_directory(series, tmp_path):
    run = copy_run(series, tmp_path)
    result = run_cli("report", run.path, "--checkpoints", run.path / "elsewhere", "--no-pdf", *run.options)
    assert_one_error_line(result, "elsewhere")


def test_state_dicts_without_a_model(series, tmp_path):
    """Bare state_dicts and no postmortem_spec.py / --model: nothing can be evaluated."""
    run = copy_run(series, tmp_path)
    (run.path / "postmortem_spec.py").unlink()
    result = run_cli("report", run.path, "--no-pdf", *run.options)
    line = assert_one_error_line(result)
    assert "--model" in line or "build_model" in line, line


def test_class_names_that_do_not_fit(series, tmp_path):
    run = copy_run(series, tmp_path)
    result = run_cli("report", run.path, "--no-pdf", "--data", run.path / "val.pt", "--class-names", "a,b")
    assert_one_error_line(result)
