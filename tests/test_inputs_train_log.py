"""--train-log: reading what the training loop logged, and comparing its validation loss with the
recomputed one (the usual causes of a mismatch are recognised on the same per-item losses)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from _fixtures_inputs import make_run, reference_loss, report, validation_tensors
from postmortem.config import build_config
from postmortem.errors import InputError
from postmortem.analyze.reconcile import OTHER_CAUSES, reconcile_logged_loss
from postmortem.evaluate.runner import evaluate_run
from postmortem.load.train_log import read_train_log

WEIGHTS = [1.0, 3.0, 0.5]


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory):
    """Three epochs, class weights, and a batch size that leaves a short last batch (40 = 16 + 16 + 8)."""
    run, models = make_run(tmp_path_factory.mktemp("log"), n_epochs=3)
    config = build_config(run, {}, {"data": str(run / "val.pt"), "class_weights": WEIGHTS, "batch_size": 16,
                                    "quiet": True, "out": str(run.parent / "report")})
    return run, models, evaluate_run(config)


def per_batch(models, weighted: bool) -> list[float]:
    """What a loop that averages per-batch mean losses logs (batches of 16)."""
    x, y = validation_tensors()
    values = []
    for model in models:
        means = [reference_loss(model, x[i:i + 16], y[i:i + 16], WEIGHTS if weighted else None) for i in range(0, 40, 16)]
        values.append(float(np.mean(means)))
    return values


def write_log(path, values, start=1):
    path.write_text("epoch,train_loss,val_loss\n" + "".join(f"{i + start},0.9,{v!r}\n" for i, v in enumerate(values)))
    return path


@pytest.mark.parametrize("kind, expected", [
    ("exact", "exact"),
    ("mean_of_batch_means", "mean_of_batch_means"),
    ("unweighted", "unweighted"),
    ("mean_of_unweighted_batch_means", "mean_of_unweighted_batch_means"),
    ("train_mode", None),
])
def test_a_logged_loss_is_matched_and_its_mismatch_explained(weighted_run, tmp_path, kind, expected):
    run, models, evaluation = weighted_run
    x, y = validation_tensors()
    if kind == "exact":
        values = [reference_loss(m, x, y, WEIGHTS) for m in models]
    elif kind == "mean_of_batch_means":
        values = per_batch(models, weighted=True)
    elif kind == "mean_of_unweighted_batch_means":
        values = per_batch(models, weighted=False)
    elif kind == "unweighted":
        values = [reference_loss(m, x, y) for m in models]
    else:   # something else entirely, e.g. dropout left on
        values = [reference_loss(m, x, y, WEIGHTS) * 1.07 for m in models]
    log = read_train_log(write_log(tmp_path / "log.csv", values))
    result = reconcile_logged_loss(evaluation, log)
    assert result.key == "epoch" and result.n_matched == 3
    assert result.explanation == expected
    assert result.agrees == (kind == "exact")
    if kind == "exact":
        assert result.max_relative_difference < 1e-6
    else:
        assert result.max_relative_difference > 1e-3
    if expected is None:
        assert result.explanation_text.endswith(OTHER_CAUSES)
    assert "3 batches of 8..16 counted items" in result.batch_note


def test_epochs_that_do_not_line_up_match_nothing(weighted_run, tmp_path):
    _, _, evaluation = weighted_run
    log = read_train_log(write_log(tmp_path / "log.csv", [1.0, 1.0], start=10))
    assert reconcile_logged_loss(evaluation, log) is None


def test_train_log_in_postmortem_toml_is_read_relative_to_run(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=2)
    write_log(run / "history.csv", [1.0, 0.9])
    (run / "postmortem.toml").write_text('data = "val.pt"\ntrain-log = "history.csv"\n')
    from postmortem.config import read_config_file
    evaluation = evaluate_run(build_config(run, read_config_file(run), {"quiet": True, "out": str(tmp_path / "r")}))
    assert evaluation.train_log_source == str(run / "history.csv")
    assert evaluation.train_log["val_loss"].tolist() == [1.0, 0.9]


def test_a_bad_train_log_is_an_input_error(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    (run / "history.csv").write_text("when,what\n1,2\n")
    (run / "postmortem.toml").write_text('data = "val.pt"\ntrain-log = "history.csv"\n')
    code, err, _ = report(run, capsys=capsys)
    assert code == 2
    assert err.strip().endswith("history.csv: training log has no epoch or step column (columns: when, what); "
                                "expected one named epoch or step")


@pytest.mark.parametrize("content, message", [
    (None, "training log not found"),
    ("epoch,accuracy\n1,0.5\n", "training log has no loss column (columns: epoch, accuracy); expected one of "
                                "val_loss, val_loss_epoch, valid_loss, validation_loss, eval_loss or train_loss, "
                                "train_loss_epoch, training_loss"),
    ("epoch,val_loss\n1,\n2,\n", "training log has no loss values"),
    ("", "not a readable CSV training log"),
])
def test_train_log_errors(tmp_path, content, message):
    path = tmp_path / "log.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=re.escape(f"{path}: {message}")):
        read_train_log(path)


def test_a_json_log_that_is_not_trainer_state(tmp_path):
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"epochs": [1, 2]}))
    with pytest.raises(InputError, match=r"trainer_state\.json: not a Hugging Face trainer_state\.json \(no 'log_history' list\)"):
        read_train_log(path)


def test_trainer_state_drops_the_closing_summary(tmp_path):
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": [
        {"epoch": 1.0, "loss": 0.8, "step": 10}, {"epoch": 1.0, "eval_loss": 0.7, "eval_accuracy": 0.6, "step": 10},
        {"epoch": 1.0, "step": 10, "train_runtime": 3.2, "train_loss": 0.8}]}))
    log = read_train_log(path)
    assert len(log) == 2
    assert log["train_loss"].tolist()[0] == 0.8 and log["val_loss"].tolist()[1] == 0.7
    assert "eval_accuracy" in log.columns and "train_runtime" not in log.columns
