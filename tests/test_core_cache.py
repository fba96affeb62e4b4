"""Issue 2, the evaluation cache: per-sample records cached in the output folder, keyed by checkpoint
content and data fingerprint, so a re-run re-evaluates nothing that did not change.

The run's forward() appends a line to a log file outside RUN (named by an environment variable) for
every batch it runs; the validation set is one batch, so the log counts checkpoint evaluations directly.
Cache files are everything under --out except the report files themselves.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from _core_runs import (assert_metrics_match, build_mlp_run, mlp_log_probs, reference_epoch, report_ok, run_cli,
                        snapshot)

FORWARD_WITH_LOG = '''

def forward(model, batch):
    """Plain forward; also notes each call in $CORE_TEST_FORWARD_LOG (outside the run) when set."""
    import os
    log = os.environ.get("CORE_TEST_FORWARD_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write("forward\\n")
    return model(batch["inputs"]), batch["labels"]
'''
REPORT_FILES = {"metrics.json", "report.html", "report.pdf", "report.md"}


@pytest.fixture
def counted_run(tmp_path, monkeypatch):
    built = build_mlp_run(tmp_path, "cached", epochs=5, steps=3)
    with open(built.path / "postmortem_spec.py", "a") as spec:
        spec.write(FORWARD_WITH_LOG)
    log = tmp_path / "forward.log"
    monkeypatch.setenv("CORE_TEST_FORWARD_LOG", str(log))
    out = tmp_path / "out"

    def report() -> tuple[dict, int]:
        """Run postmortem; return metrics.json and how many forward passes it made."""
        before = len(log.read_text().splitlines()) if log.exists() else 0
        report_ok(run_cli("report", built.path, "--out", out, "--no-pdf", "--quiet", *built.options))
        after = len(log.read_text().splitlines()) if log.exists() else 0
        return json.loads((out / "metrics.json").read_text()), after - before

    return built, out, report


def cache_files(out) -> dict:
    """The per-checkpoint evaluation entries (the figure cache is redrawn whenever any epoch changes)."""
    return {k: v for k, v in snapshot(out).items() if v != ("dir",) and k.split("/")[-1] not in REPORT_FILES
            and not k.split("/")[-1].startswith((".", "figures-"))}


def test_second_run_reevaluates_nothing(counted_run):
    built, out, report = counted_run
    first, forwards = report()
    assert forwards == 5
    assert_metrics_match(first, built)
    cached = cache_files(out)
    assert cached, "no cache files were written under --out"

    second, forwards = report()
    assert forwards == 0, f"the second run re-evaluated {forwards} checkpoints"
    assert second == first
    assert cache_files(out) == cached, "cache files were rewritten or added although nothing changed"


def test_a_new_checkpoint_is_the_only_one_evaluated(counted_run, tmp_path):
    built, out, report = counted_run
    held_back = tmp_path / "held_back.pt"
    shutil.move(built.path / "checkpoints" / "epoch_5.pt", held_back)
    first, forwards = report()
    assert forwards == 4
    assert [e["checkpoint"] for e in first["epochs"]] == [f"epoch_{k}.pt" for k in range(1, 5)]
    cached = cache_files(out)

    shutil.move(held_back, built.path / "checkpoints" / "epoch_5.pt")
    second, forwards = report()
    assert forwards == 1
    assert_metrics_match(second, built)
    now = cache_files(out)
    assert {k: now[k] for k in cached} == cached, "cache entries of unchanged checkpoints were rewritten"
    assert len(set(now) - set(cached)) >= 1
    assert second["epochs"][:4] == first["epochs"]


def test_corrupted_cache_entries_are_recomputed(counted_run):
    built, out, report = counted_run
    first, _ = report()
    cached = sorted(cache_files(out))
    assert len(cached) >= 2
    garbage, truncated = out / cached[0], out / cached[-1]
    garbage.write_bytes(b"not a cache entry \x00\xff" * 50)
    content = truncated.read_bytes()
    truncated.write_bytes(content[: len(content) // 2])

    second, forwards = report()
    assert 1 <= forwards <= 2, f"{forwards} checkpoints re-evaluated for 2 corrupted cache files"
    assert second == first
    assert_metrics_match(second, built)
    third, forwards = report()
    assert forwards == 0, "the recomputed entries were not written back in a readable form"
    assert third == first


def test_a_changed_byte_inside_a_cached_array_is_caught(counted_run, tmp_path):
    """One bit flipped in the middle of a cached array's data (the file still parses): zip's CRC-32 of the array
    catches it when read, and that checkpoint is evaluated again."""
    import numpy as np

    built, out, report = counted_run
    first, _ = report()
    entry = out / sorted(cache_files(out))[0]
    content = bytearray(entry.read_bytes())
    with np.load(entry) as archive:
        nll = archive["nll"]
    at = bytes(content).find(nll[len(nll) // 2:len(nll) // 2 + 1].tobytes())
    assert at > 0
    content[at] ^= 1
    entry.write_bytes(bytes(content))
    second, forwards = report()
    assert forwards == 1 and second == first


def test_changed_checkpoint_content_is_reevaluated(counted_run):
    """Same file name, new weights: the cache is keyed by content, not by name or time."""
    built, out, report = counted_run
    report()
    states = built.extra["states"]
    changed = {k: v * 1.5 if v.is_floating_point() else v for k, v in states[2].items()}
    torch.save(changed, built.path / "checkpoints" / "epoch_2.pt")
    second, forwards = report()
    assert forwards == 1
    lp = mlp_log_probs(built.extra["spec"], changed, built.extra["x_val"], "logits")
    built.expected[1] = reference_epoch(2, "epoch_2.pt", lp, built.extra["y_val"], built.classes, None)
    assert_metrics_match(second, built)


def test_changed_validation_data_reevaluates_everything(counted_run):
    built, out, report = counted_run
    report()
    x, y = built.extra["x_val"][:50], built.extra["y_val"][:50]
    torch.save({"inputs": x, "labels": y}, built.path / "val.pt")
    second, forwards = report()
    assert forwards == 5
    for i, k in enumerate(range(1, 6)):
        lp = mlp_log_probs(built.extra["spec"], built.extra["states"][k], x, "logits")
        built.expected[i] = reference_epoch(k, f"epoch_{k}.pt", lp, y, built.classes, None)
    assert_metrics_match(second, built)
    assert all(e["n_samples"] == 50 for e in second["epochs"])


def test_new_class_weights_with_a_warm_cache_give_weighted_numbers(counted_run):
    """Whatever the cache reuses, the numbers after changing --class-weights are the weighted ones."""
    built, out, report = counted_run
    report()
    weights = [0.5, 3.0, 1.25]
    report_ok(run_cli("report", built.path, "--out", out, "--no-pdf", "--quiet", *built.options,
                      "--class-weights", ",".join(map(str, weights))))
    metrics = json.loads((out / "metrics.json").read_text())
    built.weights = weights
    for i, k in enumerate(range(1, 6)):
        lp = mlp_log_probs(built.extra["spec"], built.extra["states"][k], built.extra["x_val"], "logits")
        built.expected[i] = reference_epoch(k, f"epoch_{k}.pt", lp, built.extra["y_val"], built.classes, weights)
    assert_metrics_match(metrics, built)


def test_edited_spec_between_two_runs_in_one_process(counted_run):
    built, out, report = counted_run
    first, _ = report()
    spec = built.path / "postmortem_spec.py"
    spec.write_text(spec.read_text().replace("return self.body(x)", "return 2 * self.body(x)"))
    second, forwards = report()
    assert forwards == 5, "the edited model code was not re-run"
    for i, k in enumerate(range(1, 6)):
        model = built.extra["spec"]["build_model"]()
        model.load_state_dict(built.extra["states"][k])
        model.eval()
        with torch.no_grad():
            lp = torch.log_softmax(2 * model(built.extra["x_val"]).double(), dim=-1)
        built.expected[i] = reference_epoch(k, f"epoch_{k}.pt", lp, built.extra["y_val"], built.classes, None)
    assert_metrics_match(second, built)


def test_a_byte_for_byte_copy_shares_its_twins_evaluation(counted_run):
    """timm writes last.pth.tar and model_best.pth.tar as copies of checkpoint files: a copy is left out as a
    duplicate, and its forward passes are not run a second time to find that out."""
    built, out, report = counted_run
    shutil.copyfile(built.path / "checkpoints" / "epoch_5.pt", built.path / "checkpoints" / "last.pt")
    first, forwards = report()
    assert forwards == 5
    assert [e["checkpoint"] for e in first["epochs"]] == [f"epoch_{k}.pt" for k in range(1, 6)]
    skipped = {s["checkpoint"]: s["error"] for s in first["skipped"]}
    assert list(skipped) == ["last.pt"] and "same content as epoch_5.pt; left out as a duplicate" in skipped["last.pt"]
    assert_metrics_match(first, built)
    assert len([f for f in cache_files(out) if f.endswith(".npz")]) == 5
