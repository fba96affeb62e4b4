"""Nothing executed, nothing lost: pickled code is never run, user-controlled names are escaped, output
is written atomically, a corrupt cache entry is recomputed, and nothing outside --out is written."""
from __future__ import annotations

import argparse
import html
from pathlib import Path

import numpy as np
import pytest
import torch

from _fixtures_inputs import make_run, no_temp_files, reference_loss, report, snapshot, validation_tensors
from postmortem.cli import main
from postmortem.errors import CheckpointError
from postmortem.load.checkpoint_reader import read_checkpoint
from postmortem.load.discovery import CheckpointFile


class WritesAFile:
    """A pickle payload that, if it ever ran, would create a file (the classic __reduce__ exploit)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').write('code ran')",))


# ----------------------------------------------------------------------------- pickled code
def test_a_checkpoint_whose_pickle_would_run_code_is_read_inertly_and_nothing_runs(tmp_path, capsys):
    """The payload becomes a placeholder beside the weights (tests/test_load_inert_pickle.py has the family)."""
    marker = tmp_path / "pwned.txt"

    def save(model, epoch, path):
        torch.save({"epoch": epoch, "state_dict": model.state_dict(), "extra": WritesAFile(marker)}, path)

    run, models = make_run(tmp_path, n_epochs=2, save=save)
    code, err, metrics = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 0, err
    assert not marker.exists()
    x, y = validation_tensors()
    assert [e["loss"] for e in metrics["epochs"]] == pytest.approx([reference_loss(m, x, y) for m in models], rel=1e-9)


def test_argparse_namespaces_need_no_flag_and_trusting_still_reads_ones_own_files(tmp_path, capsys):
    """argparse.Namespace hyper-parameters (older Lightning runs, timm, torchvision) read as placeholders."""
    def save(model, epoch, path):
        torch.save({"epoch": epoch, "state_dict": model.state_dict(),
                    "hyper_parameters": argparse.Namespace(lr=0.1)}, path)

    run, models = make_run(tmp_path, n_epochs=2, save=save)
    loaded = read_checkpoint(CheckpointFile(run / "checkpoints" / "epoch_1.pt", run / "checkpoints" / "epoch_1.pt"))
    assert loaded.metadata == {"epoch": 1}
    code, err, metrics = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 0, err
    trusted, err, trusted_metrics = report(run, "--data", str(run / "val.pt"), "--trust-checkpoints",
                                           out=tmp_path / "trusted", capsys=capsys)
    assert trusted == 0, err
    assert [e["loss"] for e in trusted_metrics["epochs"]] == [e["loss"] for e in metrics["epochs"]]


class PacksItsWeights(torch.nn.Module):
    """A module that pickles its weights as numpy arrays and rebuilds itself in __setstate__: only its own
    code can turn that state back into parameters."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    def __getstate__(self):
        return {"packed": {k: v.detach().numpy() for k, v in self.body.state_dict().items()}}

    def __setstate__(self, state):
        self.__init__()
        self.body.load_state_dict({k: torch.from_numpy(v) for k, v in state["packed"].items()})


def test_trusting_unpickles_with_code_what_placeholders_cannot_represent(tmp_path, capsys):
    """Without the flag: one line naming the file and the flag; with it, the module's own code rebuilds it."""
    run, models = make_run(tmp_path, n_epochs=2)
    for epoch, trained in enumerate(models, start=1):
        packed = PacksItsWeights()
        packed.body.load_state_dict(trained.body.state_dict())
        torch.save({"epoch": epoch, "model": packed}, run / "checkpoints" / f"epoch_{epoch}.pt")
    path = run / "checkpoints" / "epoch_1.pt"
    with pytest.raises(CheckpointError, match=r"epoch_1\.pt: no state_dict found \(top-level keys: 'epoch', 'model'"):
        read_checkpoint(CheckpointFile(path, path))
    code, err, metrics = report(run, "--data", str(run / "val.pt"), "--trust-checkpoints", capsys=capsys)
    assert code == 0, err
    x, y = validation_tensors()
    assert [e["loss"] for e in metrics["epochs"]] == pytest.approx([reference_loss(m, x, y) for m in models], rel=1e-9)


def test_trusting_via_postmortem_toml(tmp_path):
    from postmortem.config import build_config, read_config_file
    from postmortem.evaluate.runner import evaluate_run

    def save(model, epoch, path):
        torch.save({"epoch": epoch, "state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)

    run, _ = make_run(tmp_path, n_epochs=1, save=save)
    (run / "postmortem.toml").write_text('data = "val.pt"\ntrust-checkpoints = true\n')
    config = build_config(run, read_config_file(run), {"quiet": True, "out": str(tmp_path / "r")})
    assert config.trust_checkpoints
    evaluation = evaluate_run(config)
    assert [e.epoch for e in evaluation.epochs] == [1] and evaluation.skipped == []


def test_a_data_file_whose_pickle_would_run_code_is_read_inertly(tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    run, _ = make_run(tmp_path, n_epochs=1)
    x, y = validation_tensors()
    torch.save({"inputs": x, "labels": y, "note": WritesAFile(marker)}, run / "val.pt")
    code, err, metrics = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 0, err
    assert not marker.exists() and metrics["epochs"][0]["n_samples"] == len(y)


# ----------------------------------------------------------------------------- escaping
HOSTILE = ("<script>alert(1)</script>", '"><img src=x onerror=alert(2)>', "a&b")


def test_class_names_are_escaped_in_html_and_kept_verbatim_in_json(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=2)
    (run / "postmortem.toml").write_text('data = "val.pt"\n')
    # ids are user-controlled too: they reach the report through the items
    code, err, metrics = report(run, "--class-names", ",".join(HOSTILE), "--title", "<b>run</b>", pdf=True, capsys=capsys)
    assert code == 0, err
    assert metrics["classes"] == list(HOSTILE)
    page = (run.parent / "report" / "report.html").read_text()
    for name in HOSTILE:
        assert name not in page.replace("a&amp;b", ""), name
    assert "<script>alert(1)" not in page and "<img src=x" not in page and "<b>run</b>" not in page
    assert html.escape("<script>alert(1)</script>", quote=True) in page or "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    markdown = run.parent / "report" / "report.md"
    if markdown.is_file():          # the markdown summary is pasted into issue threads: no live markup either
        text = markdown.read_text()
        assert "<script>alert(1)</script>" not in text and "<img src=x" not in text and "<b>run</b>" not in text
    pdf = (run.parent / "report" / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    try:
        from pypdf import PdfReader
    except ImportError:
        return
    text = "".join(page.extract_text() for page in PdfReader(str(run.parent / "report" / "report.pdf")).pages)
    assert "<script>alert(1)</script>" in text.replace("\n", "")   # shown as text, not run


# ----------------------------------------------------------------------------- atomic output
def test_an_existing_report_is_replaced_only_by_a_complete_one(tmp_path, capsys, monkeypatch):
    run, _ = make_run(tmp_path, n_epochs=2)
    out = tmp_path / "report"
    code, err, _ = report(run, "--data", str(run / "val.pt"), out=out, capsys=capsys)
    assert code == 0, err
    before = snapshot(out)
    torch.save(torch.load(run / "checkpoints" / "epoch_1.pt"), run / "checkpoints" / "epoch_3.pt")

    import postmortem.render.html as html_module
    real_render = html_module.render_template

    def interrupted(*args, **kwargs):   # Ctrl-C while the new report is being rendered
        raise KeyboardInterrupt
    monkeypatch.setattr(html_module, "render_template", interrupted)
    code, err, _ = report(run, "--data", str(run / "val.pt"), out=out, capsys=capsys)
    assert code == 130
    assert "interrupted; no report was written" in err
    assert {k: v for k, v in snapshot(out).items() if not k.startswith("cache")} == \
        {k: v for k, v in before.items() if not k.startswith("cache")}
    assert no_temp_files(out)

    monkeypatch.setattr(html_module, "render_template", real_render)
    (run / "checkpoints" / "epoch_3.pt").write_bytes(b"")        # now every checkpoint but one fails ...
    for path in ("epoch_1.pt", "epoch_2.pt"):
        (run / "checkpoints" / path).write_bytes(b"not a checkpoint")
    code, _, _ = report(run, "--data", str(run / "val.pt"), out=out, capsys=capsys)
    assert code == 2                                              # ... and the old report stays as it was
    assert {k: v for k, v in snapshot(out).items() if not k.startswith("cache")} == \
        {k: v for k, v in before.items() if not k.startswith("cache")}


# ----------------------------------------------------------------------------- the cache
def test_a_corrupt_cache_entry_is_detected_and_recomputed(tmp_path):
    from postmortem.config import build_config
    from postmortem.evaluate.runner import evaluate_run

    run, _ = make_run(tmp_path, n_epochs=3)
    out = tmp_path / "report"
    config = build_config(run, {}, {"data": str(run / "val.pt"), "out": str(out), "quiet": True})
    first = evaluate_run(config)
    entries = sorted((out / "cache").glob("*.npz"))
    assert len(entries) == 3 and not any(e.from_cache for e in first.epochs)
    entries[0].write_bytes(entries[0].read_bytes()[:200])             # truncated
    data = bytearray(entries[1].read_bytes())
    data[len(data) // 2] ^= 0xFF                                      # one flipped byte in the middle
    entries[1].write_bytes(bytes(data))
    second = evaluate_run(config)
    assert sum(e.from_cache for e in second.epochs) == 1
    assert len(second.notes) == 2 and all(n.startswith("cache entry recomputed: ") for n in second.notes)
    for a, b in zip(first.epochs, second.epochs):
        assert np.array_equal(a.records.nll, b.records.nll)
    third = evaluate_run(config)
    assert all(e.from_cache for e in third.epochs) and third.notes == []   # rewritten, so read back now
    assert no_temp_files(out)


def test_the_cache_detects_a_changed_entry(tmp_path):
    import numpy as np

    from postmortem.evaluate.cache import EvaluationCache
    from postmortem.evaluate.records import OutputsAccumulator
    from postmortem.evaluate.cache import CachedEpoch

    accumulator = OutputsAccumulator(None, -100, "test")
    accumulator.add(np.random.default_rng(0).normal(size=(6, 3)), np.array([0, 1, 2, 0, 1, 2]), None)
    items, records = accumulator.finish()
    cache = EvaluationCache(tmp_path, "k" * 64)
    cache.store("a" * 64, CachedEpoch(items, records, {"epoch": 1}))
    path = cache.path_for("a" * 64)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["nll"] = arrays["nll"] * 2                                 # a well-formed file with other numbers
    np.savez(path, **arrays)
    assert cache.load("a" * 64) is None
    assert "does not match its checksum" in cache.problems[0]


# ----------------------------------------------------------------------------- nothing outside --out
def test_nothing_under_run_is_written_but_the_default_output(tmp_path, capsys):
    """The spec imports the run's own model code (its neighbour): still no __pycache__ beside them."""
    model_code = ("import torch\nfrom torch import nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                  "        super().__init__()\n        self.body = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))\n\n"
                  "    def forward(self, x):\n        return self.body(x)\n")
    spec = "from model_code import Net\n\ndef build_model():\n    return Net()\n"
    run, _ = make_run(tmp_path, n_epochs=2, spec=spec)
    (run / "model_code.py").write_text(model_code)
    (run / "postmortem.toml").write_text('data = "val.pt"\n')
    before = snapshot(run)
    outside = snapshot(tmp_path)
    code = main(["report", str(run), "--quiet", "--no-pdf"])
    assert code == 0, capsys.readouterr().err
    after = snapshot(run)
    added = {path for path in after if path not in before}
    assert added and all(path.startswith("postmortem-report") for path in added), added
    assert {k: v for k, v in after.items() if k in before} == before       # nothing else changed
    assert {k for k in snapshot(tmp_path) if k not in outside} == {f"run/{p}" for p in added}
