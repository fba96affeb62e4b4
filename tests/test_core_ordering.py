"""Issue 2, checkpoint order: the 'epoch' stored in the checkpoint (else 'global_step'/'step'), else the
last integer in the name (natural sort), never the file times; the value is reported as stored.

Every run here writes its checkpoints in shuffled order and then gives later epochs older mtimes; each
test compares every number of every epoch with the independent reference of that checkpoint, so an
epoch attached to the wrong file shows up as a mismatch.
"""
from __future__ import annotations

import json
import os

from _core_runs import assert_metrics_match, build_mlp_run, report_ok, run_cli


def _age_backwards(built) -> None:
    """Later epochs get older modification times (file times must not decide the order)."""
    for i, exp in enumerate(built.expected):
        matches = list(built.path.rglob(exp["checkpoint"]))
        assert len(matches) == 1, matches
        stamp = 2_000_000_000 - 1000 * i
        os.utime(matches[0], (stamp, stamp))


def _report(built, out) -> dict:
    result = run_cli("report", built.path, "--out", out, "--no-pdf", "--quiet", *built.options)
    report_ok(result)
    return json.loads((out / "metrics.json").read_text())


SCRAMBLED = {1: 40, 2: 7, 3: 55, 4: 3, 5: 21}   # epoch -> integer in the file name (order disagrees)


def test_stored_epoch_wins_over_the_name(tmp_path):
    built = build_mlp_run(tmp_path, "stored_epoch", epochs=5,
                          name_of=lambda k: f"ckpt_{SCRAMBLED[k]}.pth",
                          wrap=lambda k, state: {"epoch": k, "model_state_dict": state, "note": "from a loop"})
    _age_backwards(built)
    metrics = _report(built, tmp_path / "out")
    assert [e["checkpoint"] for e in metrics["epochs"]] == ["ckpt_40.pth", "ckpt_7.pth", "ckpt_55.pth",
                                                             "ckpt_3.pth", "ckpt_21.pth"]
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4, 5]
    assert_metrics_match(metrics, built)


def test_lightning_zero_based_epochs_stay_zero_based(tmp_path):
    """{'epoch': 0.., 'global_step', 'state_dict': {'model.' + key}}: the prefix is stripped, epochs as stored."""
    def lightning(k, state):
        return {"epoch": k - 1, "global_step": 10 * k, "pytorch-lightning_version": "2.4.0",
                "state_dict": {f"model.{key}": value for key, value in state.items()},
                "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": k}}}}}

    built = build_mlp_run(tmp_path, "lightning", epochs=5, name_of=lambda k: f"epoch={k - 1}-step={10 * k}.ckpt",
                          wrap=lightning, epoch_of=lambda k: k - 1)
    _age_backwards(built)
    metrics = _report(built, tmp_path / "out")
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2, 3, 4]
    assert metrics["best_epoch"] in range(0, 5)
    assert_metrics_match(metrics, built)


def test_global_step_when_no_epoch_is_stored(tmp_path):
    built = build_mlp_run(tmp_path, "steps", epochs=4, name_of=lambda k: f"snapshot-{5 - k}.pt",
                          wrap=lambda k, state: {"global_step": 100 * k, "model": state},
                          epoch_of=lambda k: 100 * k)
    _age_backwards(built)
    metrics = _report(built, tmp_path / "out")
    assert [e["checkpoint"] for e in metrics["epochs"]] == ["snapshot-4.pt", "snapshot-3.pt", "snapshot-2.pt",
                                                             "snapshot-1.pt"]
    assert [e["epoch"] for e in metrics["epochs"]] == [100, 200, 300, 400]
    assert_metrics_match(metrics, built)


def test_name_order_is_natural_and_uses_the_last_integer(tmp_path):
    """Bare state_dicts right in RUN (no checkpoints/ folder) beside val.pt: 'run3_epoch10' after
    'run3_epoch9', by the last integer (3 is not the epoch); val.pt is data, not a checkpoint."""
    built = build_mlp_run(tmp_path, "by_name", epochs=11, checkpoint_dir=None,
                          name_of=lambda k: f"run3_epoch{k}.pt")
    assert (built.path / "val.pt").is_file() and not (built.path / "checkpoints").exists()
    _age_backwards(built)
    metrics = _report(built, tmp_path / "out")
    assert [e["checkpoint"] for e in metrics["epochs"]] == [f"run3_epoch{k}.pt" for k in range(1, 12)]
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(1, 12))
    assert metrics["skipped"] == []
    assert_metrics_match(metrics, built)


def test_zero_padded_numbers(tmp_path):
    """epoch_01 .. epoch_12 (as the bundled sample run names them) order by number too."""
    built = build_mlp_run(tmp_path, "zero_padded", epochs=12, name_of=lambda k: f"epoch_{k:02d}.pt", steps=2)
    _age_backwards(built)
    metrics = _report(built, tmp_path / "out")
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(1, 13))
    assert_metrics_match(metrics, built)


def test_checkpoints_glob(tmp_path):
    """--checkpoints GLOB selects files; 'epoch_1*.pt' is epochs 1, 10, 11, 12 in that order."""
    built = build_mlp_run(tmp_path, "globbed", epochs=12, steps=2)
    built.expected = [e for e in built.expected if e["epoch"] in (1, 10, 11, 12)]
    out = tmp_path / "out"
    report_ok(run_cli("report", built.path, "--checkpoints", str(built.path / "checkpoints" / "epoch_1*.pt"),
                      "--out", out, "--no-pdf", "--quiet", *built.options))
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 10, 11, 12]
    assert_metrics_match(metrics, built)
