"""A re-render with nothing changed reads the cache alone: no torch import and no user code when the data is a
file, the model's source a .py file and every checkpoint cached; any changed byte of those is evaluated again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _core_runs import PROJECT, build_mlp_run, build_tagging_run, report_ok, run_cli
from postmortem.evaluate.cache import recall_data, remember_data

# A fresh process (as a user's re-render is) that says whether writing the report imported torch.
REPORT_AND_SAY_IF_TORCH = """
import sys
from postmortem.cli import main
rc = main(sys.argv[1:])
print("torch imported:", "torch" in sys.modules)
sys.exit(rc)
"""


def _report_in_fresh_process(*args) -> bool:
    """Runs `postmortem report ARGS --no-pdf --quiet`; True when it imported torch."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "POSTMORTEM_DEBUG")}
    proc = subprocess.run([sys.executable, "-c", REPORT_AND_SAY_IF_TORCH, "report", *map(str, args), "--no-pdf",
                           "--quiet"], cwd=PROJECT, env={**env, "PYTHONPATH": str(PROJECT)}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().endswith("torch imported: True")


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _first_report(tmp_path):
    built = build_mlp_run(tmp_path, epochs=4)
    out = tmp_path / "report"
    report_ok(run_cli("report", built.path, *built.options, "--out", out, "--no-pdf", "--quiet"))
    return built, out


def test_a_rerender_with_nothing_changed_reads_only_the_cache(tmp_path):
    built, out = _first_report(tmp_path)
    first = _metrics(out)
    assert not _report_in_fresh_process(built.path, *built.options, "--out", out)
    assert _metrics(out) == first                           # the same numbers, to the last digit
    html = (out / "report.html").read_text()
    assert "0 / 4" in html                                  # provenance: evaluated / from cache


def test_a_changed_data_file_is_read_and_evaluated_again(tmp_path):
    built, out = _first_report(tmp_path)
    before = _metrics(out)
    data = torch.load(built.path / "val.pt", weights_only=True)
    data["labels"][0] = (data["labels"][0] + 1) % 3         # one label changed
    torch.save(data, built.path / "val.pt")
    assert _report_in_fresh_process(built.path, *built.options, "--out", out)
    assert _metrics(out)["epochs"][0]["loss"] != before["epochs"][0]["loss"]


def test_a_changed_spec_or_checkpoint_is_evaluated_again(tmp_path):
    built, out = _first_report(tmp_path)
    spec = built.path / "postmortem_spec.py"
    spec.write_text(spec.read_text() + "\n# edited\n")       # the model's source changed: its sha256 is in the key
    assert _report_in_fresh_process(built.path, *built.options, "--out", out)
    assert not _report_in_fresh_process(built.path, *built.options, "--out", out)   # and cached again
    checkpoint = built.path / "checkpoints" / "epoch_2.pt"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({k: v + 0.01 for k, v in state.items()}, checkpoint)
    assert _report_in_fresh_process(built.path, *built.options, "--out", out)


def test_data_from_a_factory_runs_its_code_on_every_report(tmp_path):
    """val_data() may read anything: whether its data changed is known only by running it (and torch with it)."""
    built = build_tagging_run(tmp_path)
    out = tmp_path / "report"
    report_ok(run_cli("report", built.path, *built.options, "--out", out, "--no-pdf", "--quiet"))
    assert _report_in_fresh_process(built.path, *built.options, "--out", out)


def test_a_data_record_that_cannot_be_read_is_a_miss(tmp_path):
    remember_data(tmp_path, "a" * 64, "f" * 64)
    assert recall_data(tmp_path, "a" * 64) == "f" * 64
    assert recall_data(tmp_path, "b" * 64) is None
    next(tmp_path.glob("data-*.json")).write_text("{not json")
    assert recall_data(tmp_path, "a" * 64) is None


def test_source_identity_without_import_is_the_one_an_import_carries(tmp_path):
    """The cache-only path keys entries by source_sha256 (read, not imported); spec_callable's (imported) must agree,
    or a re-render would miss every entry or, worse, find another model's."""
    from postmortem.load.spec import NeedsImport, source_sha256, spec_callable

    spec = tmp_path / "postmortem_spec.py"
    spec.write_text("def build_model():\n    return 1\n")
    other = tmp_path / "models.py"
    other.write_text("def make():\n    return 2\n")
    assert source_sha256(None, spec, "build_model") == spec_callable(None, spec, "build_model", "model").source_sha256
    assert source_sha256(None, spec, "forward") is None is spec_callable(None, spec, "forward", "forward")
    reference = f"{other}:make"
    assert source_sha256(reference, spec, "build_model") == spec_callable(reference, spec, "build_model",
                                                                          "model").source_sha256
    with pytest.raises(NeedsImport):    # a package.module:FUNC reference: its file is known only by importing it
        source_sha256("json:loads", spec, "build_model")
