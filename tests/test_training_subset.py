"""The training subset end to end (issue 16): real models trained here, real checkpoints on disk, the real CLI.
Every number is checked against torch computed independently (nll_loss, model.train() passes, swa_utils.update_bn),
and the report's HTML is parsed back."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _core_runs import parse_html
from _fixtures_inputs import report

SPEC = '''
import torch
from torch import nn


def build_model():
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.4), nn.Linear(16, 3))


def train_data():
    return torch.load(__file__.replace("postmortem_spec.py", "train.pt"), weights_only=True)
'''
N_TRAIN, N_VAL, N_LEAKED, EPOCHS = 240, 180, 12, 6


def _namespace() -> dict:
    namespace: dict = {}
    exec(compile(SPEC, "<spec>", "exec"), namespace)
    return namespace


def _data(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    means = torch.tensor([[2.0, 0, 0, 0, 0, 0], [0, 2.0, 0, 0, 0, 0], [0, 0, 2.0, 0, 0, 0]])
    y_train = torch.arange(N_TRAIN) % 3
    y_val = torch.arange(N_VAL) % 3
    x_train = means[y_train] + torch.randn(N_TRAIN, 6, generator=generator)
    x_val = means[y_val] + torch.randn(N_VAL, 6, generator=generator)
    x_val[:N_LEAKED], y_val[:N_LEAKED] = x_train[:N_LEAKED], y_train[:N_LEAKED]      # leaked: exact copies
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """RUN/ with a BatchNorm + dropout MLP trained by Adam for a few epochs, checkpoints with optimizer state, val.pt,
    train.pt (train_data() in the spec reads it), and a training log whose val_loss was computed in train mode."""
    run = tmp_path_factory.mktemp("training_subset") / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(SPEC)
    data = _data(0)
    torch.save({"inputs": data["x_val"], "labels": data["y_val"], "ids": [f"v{i}" for i in range(N_VAL)]}, run / "val.pt")
    torch.save({"inputs": data["x_train"], "labels": data["y_train"], "ids": [f"t{i}" for i in range(N_TRAIN)]},
               run / "train.pt")
    torch.manual_seed(0)
    model = _namespace()["build_model"]()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    states, log = [], ["epoch,train_loss,val_loss"]
    for epoch in range(1, EPOCHS + 1):
        model.train()
        for start in range(0, N_TRAIN, 40):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data["x_train"][start:start + 40]), data["y_train"][start:start + 40])
            loss.backward()
            optimizer.step()
        with torch.no_grad():      # the bug: validation without model.eval()
            logged = F.cross_entropy(model(data["x_val"]), data["y_val"]).item()
        log.append(f"{epoch},{loss.item()},{logged}")
        state = {k: v.clone() for k, v in model.state_dict().items()}
        states.append(state)
        torch.save({"epoch": epoch, "model_state_dict": state, "optimizer_state_dict": optimizer.state_dict()},
                   run / "checkpoints" / f"epoch_{epoch}.pt")
    (run / "train_log.csv").write_text("\n".join(log) + "\n")
    return {"run": run, "data": data, "states": states}


def _model(state: dict) -> torch.nn.Module:
    model = _namespace()["build_model"]()
    model.load_state_dict(state)
    return model.eval()


def _loss(model, x, y) -> float:
    with torch.no_grad():
        return float(F.nll_loss(F.log_softmax(model(x).double(), -1), y))


@pytest.fixture(scope="module")
def metrics(built) -> dict:
    code, err, metrics = report(built["run"], "--data", str(built["run"] / "val.pt"), "--train-log",
                                str(built["run"] / "train_log.csv"), out=built["run"] / "out")
    assert code == 0, err
    return metrics


def test_the_training_subset_is_scored_exactly_like_torch(built, metrics):
    training, data = metrics["training"], built["data"]
    assert training["n_items"] == N_TRAIN
    for entry, state, val in zip(training["epochs"], built["states"], metrics["epochs"]):
        model = _model(state)
        expected = _loss(model, data["x_train"], data["y_train"])
        assert entry["loss"] == pytest.approx(expected, rel=1e-9)
        with torch.no_grad():
            accuracy = float((model(data["x_train"]).argmax(1) == data["y_train"]).double().mean())
        assert entry["accuracy"] == pytest.approx(accuracy, abs=1e-12)
        assert entry["gap"]["estimate"] == pytest.approx(val["loss"] - expected, rel=1e-9)
        assert entry["gap"]["low"] <= entry["gap"]["estimate"] <= entry["gap"]["high"]
    assert training["class_shares"]["0"]["training_share"] == pytest.approx(80 / 240)


def test_leaked_validation_items_are_found_by_their_input_bytes(metrics):
    leakage = metrics["training"]["leakage"]
    assert leakage["by_input_hash"] == N_LEAKED
    assert leakage["item_ids"] == [f"v{i}" for i in range(N_LEAKED)]
    assert leakage["matched_training_ids"] == [f"t{i}" for i in range(N_LEAKED)]
    finding = next(f for f in metrics["findings"] if f["id"] == "train_validation_leakage")
    assert finding["item_ids"] == leakage["item_ids"]


def test_train_mode_passes_equal_torchs_own_train_mode(built, metrics):
    data = built["data"]
    modes = metrics["train_mode"]["epochs"]
    assert {m["epoch"] for m in modes} == {metrics["best_epoch"], metrics["epochs"][-1]["epoch"]}
    for mode in modes:
        model = _model(built["states"][mode["epoch"] - 1])
        assert mode["layers"] == "1 BatchNorm1d, 1 Dropout (p 0.4)"      # in module order
        for seed, value in enumerate(mode["train_mode_losses"]):
            model.load_state_dict(built["states"][mode["epoch"] - 1])
            model.train()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                expected = _loss(model, data["x_val"], data["y_val"])
            assert value == pytest.approx(expected, rel=1e-6)   # one batch of 180 here as there: the same masks
        # BatchNorm statistics recomputed on the subset, independently, by torch's own update_bn
        model = _model(built["states"][mode["epoch"] - 1])
        loader = torch.utils.data.DataLoader(data["x_train"], batch_size=512)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            torch.optim.swa_utils.update_bn(loader, model)
        assert mode["recalibrated_loss"] == pytest.approx(_loss(model.eval(), data["x_val"], data["y_val"]), rel=1e-6)


def test_a_log_written_in_train_mode_is_named_so(metrics):
    mismatch = next(f for f in metrics["findings"] if f["id"] == "logged_loss_mismatch")
    assert "train mode" in mismatch["summary"] and "model.eval()" in mismatch["next_steps"][0]
    assert "logging_mismatch" in metrics["verdict"]["contributing_causes"] + [metrics["verdict"]["primary_cause"]] \
        or metrics["verdict"]["status"] != "rise"


def test_the_report_shows_the_training_subset(built, metrics):
    html = (built["run"] / "out" / "report.html").read_text()
    root = parse_html(html)
    section = next(node for node in root.iter() if node.attrs.get("id") == "training-subset")
    text = section.text()
    assert f"{N_TRAIN}" in text and "Leakage" in text and "Train mode against eval mode" in text
    assert "v0" in text and "t0" in text


def test_a_re_render_reads_everything_from_the_cache_without_torch(built, metrics):
    """With both sets given as files (train_data() is a factory: only running it says whether it changed), the
    second run reads the cache alone; the first one kept the subset file's fingerprint."""
    out = built["run"] / "out"
    code = ("import sys, json; from postmortem.cli import main; "
            f"rc = main(['report', {str(built['run'])!r}, '--data', {str(built['run'] / 'val.pt')!r}, '--train-data', "
            f"{str(built['run'] / 'train.pt')!r}, '--train-log', {str(built['run'] / 'train_log.csv')!r}, '--out', "
            f"{str(out)!r}, '--no-pdf', '--quiet']); print(rc, 'torch' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300) for _ in range(2)]
    assert [r.stdout.split() for r in runs] == [["0", "True"], ["0", "False"]], runs[-1].stderr[-2000:]
    again = json.loads((out / "metrics.json").read_text())
    assert again["training"] == metrics["training"] and again["train_mode"] == metrics["train_mode"]
    assert [e["loss"] for e in again["epochs"]] == [e["loss"] for e in metrics["epochs"]]


def test_the_validation_numbers_do_not_depend_on_the_training_subset(built, metrics, tmp_path):
    """Regression: the train-mode passes' cache entries once shared file names with the validation entries."""
    (built["run"] / "postmortem_spec.py").write_text(SPEC.split("def train_data")[0])   # no subset
    try:
        code, _, without = report(built["run"], "--data", str(built["run"] / "val.pt"), out=tmp_path / "without")
    finally:
        (built["run"] / "postmortem_spec.py").write_text(SPEC)
    assert code == 0
    assert without["training"] is None and without["train_mode"] is None
    for a, b in zip(without["epochs"], metrics["epochs"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12) and a["confusion_matrix"] == b["confusion_matrix"]
    data = built["data"]
    for entry, state in zip(metrics["epochs"], built["states"]):
        assert entry["loss"] == pytest.approx(_loss(_model(state), data["x_val"], data["y_val"]), rel=1e-9)


def test_predictions_mode_takes_the_subsets_saved_outputs(tmp_path):
    rng = np.random.default_rng(0)
    val, train = tmp_path / "val", tmp_path / "train"
    val.mkdir(), train.mkdir()
    labels_val, labels_train = rng.integers(0, 3, 50), rng.integers(0, 3, 70)
    logits_train = []
    for epoch in (1, 2, 3):
        np.savez(val / f"epoch_{epoch}.npz", outputs=rng.normal(size=(50, 3)) * epoch, labels=labels_val, epoch=epoch)
        logits_train.append(rng.normal(size=(70, 3)) * epoch)
        np.savez(train / f"epoch_{epoch}.npz", outputs=logits_train[-1], labels=labels_train, epoch=epoch)
    code, _, metrics = report(tmp_path, "--predictions", str(val), "--train-predictions", str(train),
                              out=tmp_path / "out")
    assert code == 0
    for entry, logits in zip(metrics["training"]["epochs"], logits_train):
        expected = float(F.cross_entropy(torch.tensor(logits), torch.tensor(labels_train)))
        assert entry["loss"] == pytest.approx(expected, rel=1e-9)
    assert metrics["training"]["leakage"]["by_input_hash"] is None       # no inputs to hash in predictions mode
    (train / "epoch_2.npz").unlink()
    code, _, metrics = report(tmp_path, "--predictions", str(val), "--train-predictions", str(train),
                              out=tmp_path / "gap")
    assert code == 0
    skipped = metrics["skipped"]
    assert [s["checkpoint"] for s in skipped] == ["epoch_2.npz"]
    assert "no training-subset predictions file for epoch_2.npz" in skipped[0]["error"]


@pytest.mark.parametrize("flags, message", [
    (["--train-predictions", "x"], "option 'train-predictions': the training subset's saved outputs go with"),
    (["--predictions", "p", "--train-data", "t.pt"], "option 'train-data': with --predictions there is no model"),
])
def test_training_subset_options_that_do_not_fit_are_one_line_errors(tmp_path, capsys, flags, message):
    code, err, _ = report(tmp_path, *flags, capsys=capsys)
    assert code == 2
    err = err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"postmortem: error: {message}")


def test_a_missing_training_subset_file_names_it(built, tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    code, err, _ = report(built["run"], "--data", str(built["run"] / "val.pt"), "--train-data", str(missing),
                          out=tmp_path / "o", capsys=capsys)
    assert code == 2 and err.strip() == f"postmortem: error: {missing}: training subset file not found"


def test_redact_hides_the_training_subsets_ids_too(built, tmp_path):
    code, _, metrics = report(built["run"], "--data", str(built["run"] / "val.pt"), "--redact", out=tmp_path / "r")
    assert code == 0
    text = json.dumps(metrics) + (tmp_path / "r" / "report.html").read_text() + (tmp_path / "r" / "report.md").read_text()
    assert metrics["training"]["leakage"]["matched_training_ids"][0] == "training item 1"
    assert '"t1"' not in text and ">t1<" not in text and '"v1"' not in text and ">v1<" not in text
