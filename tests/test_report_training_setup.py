"""The training setup in the report: metrics.json's epochs[i].training_setup and lr_events, the learning rate on
the loss curve's second axis, the HTML table parsed back, report.md's line; from the cache alone too, in
predictions mode, and stated as absent when the checkpoints hold none."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from _core_runs import parse_html, table_rows
from _fixtures_inputs import report
from _setup_runs import own_loop_run
from postmortem.load.checkpoint_reader import read_checkpoint
from postmortem.load.discovery import discover_checkpoints
from postmortem.load.training_setup import TrainingSetup
from test_evaluate_from_cache import _report_in_fresh_process

SAMPLE = Path(__file__).resolve().parent.parent / "sample_runs" / "dialogue_gru"


def _step_decay_run(tmp_path):
    """SGD, two param groups (0.1 and 0.01), momentum, weight decay 1e-4, StepLR(step_size=2, gamma=0.1), 6 epochs."""
    return own_loop_run(tmp_path, 6, lambda groups: torch.optim.SGD(groups, momentum=0.9, weight_decay=1e-4),
                        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.1), lrs=(0.1, 0.01))


def _svg(html: str, figure_id: str) -> str:
    uri = re.search(rf'<figure id="{figure_id}">.*?src="data:image/svg\+xml;base64,([^"]+)"', html, re.S).group(1)
    return base64.b64decode(uri).decode()


def _setup_section(html: str):
    [section] = parse_html(html).find_all("section", id="fig-training-setup")
    return section


@pytest.fixture(scope="module")
def step_decay_report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("step-decay")
    run, observed = _step_decay_run(tmp_path)
    out = tmp_path / "report"
    code, err, metrics = report(run, "--data", str(run / "val.pt"), out=out)
    assert code == 0, err
    return run, out, observed, metrics


def test_metrics_json_holds_each_epochs_setup_and_the_events(step_decay_report):
    run, _, observed, metrics = step_decay_report
    for entry, seen, source in zip(metrics["epochs"], observed, discover_checkpoints(None, run)):
        setup = entry["training_setup"]
        assert [g["lr"] for g in setup["optimizer"]["param_groups"]] == list(seen.lrs)      # exact, through JSON
        assert setup["scheduler"]["last_lr"] == list(seen.last_lr)
        assert setup["optimizer"]["kind"] == "SGD" and setup["optimizer"]["weight_decay_mode"] == "coupled"
        assert TrainingSetup.from_json(setup) == read_checkpoint(source).training_setup
    lrs = [o.lrs for o in observed]     # 0.1, 0.01 per group, a tenth of that from epoch 2, 4 and 6 on
    assert lrs[1] == lrs[2] != lrs[0] and lrs[3] == lrs[4] != lrs[2] and lrs[5] != lrs[4]
    assert metrics["lr_events"] == [
        {"kind": "drop", "from_epoch": 1, "to_epoch": 2, "lr_before": list(lrs[0]), "lr_after": list(lrs[1]),
         "relative_change": pytest.approx(-0.9), "groups": [0, 1]},
        {"kind": "drop", "from_epoch": 3, "to_epoch": 4, "lr_before": list(lrs[2]), "lr_after": list(lrs[3]),
         "relative_change": pytest.approx(-0.9), "groups": [0, 1]},
        {"kind": "drop", "from_epoch": 5, "to_epoch": 6, "lr_before": list(lrs[4]), "lr_after": list(lrs[5]),
         "relative_change": pytest.approx(-0.9), "groups": [0, 1]}]


def test_the_loss_curve_draws_the_learning_rate_on_a_second_axis_with_the_events(step_decay_report):
    _, out, observed, _ = step_decay_report
    svg = _svg((out / "report.html").read_text(), "fig-curves")
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert "learning rate (log)" in texts                     # 1e-1 ... 1e-5: log scale
    decades = sorted({int(np.floor(np.log10(lr))) for o in observed for lr in o.lrs})
    assert {f"1e{k}" for k in range(decades[0], decades[-1] + 1)} <= set(texts)
    assert texts.count("drop") == 3
    assert "learning rate, param group 1 (lower panel)" in texts and "learning rate, param group 2 (lower panel)" in texts
    assert svg.count('fill="#e9e9e9"') >= 6                   # each drop shaded in both panels


def test_the_html_table_states_the_setup_per_epoch(step_decay_report):
    _, out, observed, _ = step_decay_report
    section = _setup_section((out / "report.html").read_text())
    summary, epochs = section.find_all("table")
    rows = {cells[0][1]: cells[1][1] for cells in table_rows(summary)}
    assert rows["optimizer"] == "SGD (inferred from its param_group keys)"
    assert rows["weight decay"].startswith("0.0001 (all 2 groups), coupled: L2, added to the gradient")
    assert rows["betas, momentum, eps"] == "momentum 0.9"
    assert rows["scheduler"] == "StepLR (inferred from its state keys)"
    assert rows["learning rate"] == "0.1 · 0.01 at epoch 1, 0.0001 · 1e-05 at epoch 6; 3 drops"
    assert rows["read from"] == "optimizer_state_dict, scheduler_state_dict (6 of 6 checkpoints)"
    header, *body = table_rows(epochs)
    assert [c[1] for c in header] == ["epoch", "checkpoint", "learning rate", "weight decay", "optimizer step",
                                      "scheduler's last lr", "LR event"]
    for cells, seen in zip(body, observed):
        values = [c[1] for c in cells]
        assert values[0] == str(seen.epoch) and values[1] == f"epoch_{seen.epoch}.pt"
        assert [float(v) for v in values[2].split(" · ")] == pytest.approx(list(seen.lrs), rel=1e-3)
        assert values[3] == "0.0001 (all 2 groups)" and values[4] == "—"      # SGD keeps no step count
    assert [c[1] for c in body[1]][6] == "drop since epoch 1: 0.1 · 0.01 → 0.01 · 0.001"
    assert [c[1] for c in body[2]][6] == ""
    md = (out / "report.md").read_text()
    assert ("**Training setup:** SGD \\(inferred from its state\\), weight decay 0.0001 \\(all 2 groups\\) \\(coupled "
            "L2\\), LR 0.1 · 0.01 at epoch 1, 0.0001 · 1e-05 at epoch 6; 3 drops, scheduler StepLR.") in md


def test_a_rerender_from_the_cache_alone_keeps_the_setup(step_decay_report):
    run, out, _, metrics = step_decay_report
    assert not _report_in_fresh_process(run, "--data", run / "val.pt", "--out", out)   # torch not imported
    again = json.loads((out / "metrics.json").read_text())
    assert again == metrics
    assert "0 / 6" in (out / "report.html").read_text()                             # all from the cache


def test_checkpoints_without_optimizer_state_say_it_is_absent(tmp_path):
    run, _ = own_loop_run(tmp_path, 3, lambda g: torch.optim.SGD(g), None,
                          edit=lambda c: {"epoch": c["epoch"], "model_state_dict": c["model_state_dict"]})
    code, err, metrics = report(run, "--data", str(run / "val.pt"))
    assert code == 0, err
    assert [e["training_setup"] for e in metrics["epochs"]] == [None, None, None] and metrics["lr_events"] == []
    html = (run.parent / "report" / "report.html").read_text()
    assert " ".join(_setup_section(html).text().split()) == (
        "Training setup The training setup is not in the checkpoints (they hold no optimizer or scheduler state).")
    assert "learning rate" not in _svg(html, "fig-curves")
    assert ("**Training setup:** not in the checkpoints \\(they hold no optimizer or scheduler state\\).") in \
        (run.parent / "report" / "report.md").read_text()


def test_predictions_files_with_lr_optimizer_and_weight_decay(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    preds = tmp_path / "preds"
    preds.mkdir()
    for epoch, lr in zip((1, 2, 3, 4), (0.1, 0.1, 0.01, 0.01)):
        np.savez(preds / f"epoch_{epoch}.npz", outputs=rng.normal(size=(60, 3)) * epoch, labels=labels, epoch=epoch,
                 lr=np.array([lr, lr / 2]), optimizer=np.array("<b>Adam</b>"), weight_decay=np.array(1e-5))
    code, err, metrics = report(tmp_path, "--predictions", str(preds), out=tmp_path / "report")
    assert code == 0, err
    groups = [[g["lr"] for g in e["training_setup"]["optimizer"]["param_groups"]] for e in metrics["epochs"]]
    assert groups == [[0.1, 0.05], [0.1, 0.05], [0.01, 0.005], [0.01, 0.005]]
    assert metrics["epochs"][0]["training_setup"]["sources"] == ["predictions file 'lr'", "predictions file 'optimizer'",
                                                                 "predictions file 'weight_decay'"]
    assert [(e["kind"], e["from_epoch"], e["to_epoch"]) for e in metrics["lr_events"]] == [("drop", 2, 3)]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<b>Adam" not in html and "&lt;b&gt;Adam&lt;/b&gt;" in html          # a name from a file is escaped
    rows = {c[0][1]: c[1][1] for c in table_rows(_setup_section(html).find_all("table")[0])}
    # the name's word that names a class is read ('adamw_torch_fused' is AdamW); the name itself is kept
    assert rows["optimizer"] == "Adam (the predictions file's 'optimizer' = '<b>Adam</b>')"
    assert rows["weight decay"].startswith("1e-05 (all 2 groups), coupled")
    assert rows["read from"].endswith("(4 of 4 predictions files)")


def test_the_motivating_sample_records_adam_with_coupled_weight_decay():
    """sample_runs/dialogue_gru: optim.Adam(lr=0.01, weight_decay=1e-5), saved in every checkpoint."""
    setups = [read_checkpoint(source).training_setup for source in discover_checkpoints(None, SAMPLE)]
    assert len(setups) == 20
    for epoch, setup in enumerate(setups, start=1):
        optimizer = setup.optimizer
        assert (optimizer.kind, optimizer.weight_decay_mode.value) == ("Adam", "coupled")
        assert setup.learning_rates == (0.01,) and optimizer.param_groups[0].weight_decay == 1e-5
        assert optimizer.step == epoch * 5                     # 5 batches of 16 dialogues an epoch
