"""The motivating user's own run end to end: a loop written like COSMIC's train_meld.py (tests/_cosmic_run.py), its
logged validation loss given with --train-log as the CSV the README names, and the dialogue ids its batches carry
(forward's fourth value). The log's reduction is named exactly, and items are named by dialogue and utterance."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from _cosmic_run import EMOTIONS, FIRST_VID, MELD_WEIGHTS, N_VALID, make_cosmic_run, recomputed_losses
from _fixtures_inputs import report
from postmortem.analyze.reconcile import CANDIDATES, reconcile_logged_loss
from postmortem.config import build_config
from postmortem.evaluate.runner import evaluate_run
from postmortem.load.train_log import read_train_log

OPTIONS = ("--class-weights", ",".join(map(str, MELD_WEIGHTS)), "--class-names", ",".join(EMOTIONS))
BY_COUNT = next(c for c in CANDIDATES if c.name == "batch_means_by_count")


@pytest.fixture(scope="module")
def cosmic(tmp_path_factory):
    """The run, what its loop logged, the loss itself per checkpoint (torch, float64), and the report of it with
    the log the script writes (rounded to 4 decimals)."""
    root = tmp_path_factory.mktemp("cosmic")
    run, logged = make_cosmic_run(root)
    out = root / "report"
    code, err, metrics = report(run, *OPTIONS, "--train-log", str(run / "log.csv"), out=out)
    assert code == 0, err
    return run, logged, recomputed_losses(run), out, metrics


def _finding(metrics, kind):
    return next(f for f in metrics["findings"] if f["id"] == kind)


def test_the_loss_is_the_loss_itself_and_the_log_is_off_by_its_reduction(cosmic):
    run, logged, recomputed, _, metrics = cosmic
    assert np.allclose([e["loss"] for e in metrics["epochs"]], recomputed, rtol=1e-6, atol=0)
    gaps = [abs(row["valid_loss"] - r) / r for row, r in zip(logged, recomputed)]
    finding = _finding(metrics, "logged_loss_mismatch")
    # the log is rounded to 4 decimals: its gap differs from the loop's own by at most half a unit over the loss
    assert abs(finding["evidence"]["max_relative_difference"] - max(gaps)) <= 0.5e-4 / min(recomputed)
    assert max(gaps) > 1e-2 > 1e-3 == finding["thresholds"]["max_relative_difference"]


def test_the_reduction_is_named_with_its_formula_and_the_epoch_to_compare_by(cosmic):
    run, logged, recomputed, _, metrics = cosmic
    finding = _finding(metrics, "logged_loss_mismatch")
    summary = finding["summary"]
    assert finding["title"].endswith("it is reproduced by batch means by count")
    assert f"It is {BY_COUNT.meaning}: {BY_COUNT.formula}, which reproduces the log at all {len(logged)} epochs" \
        in summary
    rounding = 0.5e-4 / min(round(row["valid_loss"], 4) for row in logged)
    assert f"to {rounding:.1e} relative, the rounding of the 4 decimals the log is written with" in summary
    assert "Compare epochs by the recomputed loss" in summary
    best = int(np.argmin(recomputed))
    offset = (round(logged[best]["valid_loss"], 4) - recomputed[best]) / recomputed[best]
    assert abs(finding["evidence"]["logged_offset_at_best"] - offset) < 1e-6
    assert f"at the best epoch ({best + 1}, recomputed {recomputed[best]:.4f}) the logged curve is off by " \
           f"{offset:+.2%}" in summary
    assert finding["thresholds"]["reduction_relative_difference"] == pytest.approx(rounding, rel=1e-8)
    assert finding["evidence"]["reduction_relative_difference"] <= rounding
    assert "the log is sum_b n_b*L_b / sum_b n_b (batch_means_by_count)" in \
        metrics["verdict"]["sentences"]["model_or_else"]


@pytest.mark.parametrize("log_name, decimals, within", [("log.csv", 4, 0.5e-4), ("log_full.csv", None, 1e-6)])
def test_both_logs_are_reproduced_by_the_count_weighted_batch_means(cosmic, log_name, decimals, within):
    """The candidate's values are the loop's own numbers: to 1e-6 relative at full precision (float32 loss.item()
    against postmortem's float64 sums), and to the log's rounding as the script writes it."""
    run, logged, _, out, _ = cosmic
    config = build_config(run, {}, {"class_weights": list(MELD_WEIGHTS), "quiet": True, "out": str(out)})
    result = reconcile_logged_loss(evaluate_run(config), read_train_log(run / log_name))
    assert result.explanation == "batch_means_by_count" and result.written_decimals == decimals
    assert set(result.matching) == {"batch_means_by_count", "batch_means_by_mask"}   # every masked utterance counts
    loop = np.array([row["valid_loss"] for row in logged])
    assert np.allclose(result.rows["batch_means_by_count"], loop, rtol=1e-6, atol=0)
    assert np.all(np.abs(result.rows["logged_val_loss"] - result.rows["batch_means_by_count"])
                  <= np.maximum(1e-6 * loop, within))
    assert result.rows["relative_difference"].max() > 1e-2


def test_items_are_named_by_the_dialogue_ids_of_the_batches(cosmic):
    """forward() returns COSMIC's vid as its fourth value: an utterance is 'vid:t' (t from 0, as MELD's Utterance_ID)
    in metrics.json and report.md, and each id names the right utterance (its emotion is a class the finding names)."""
    run, _, _, out, metrics = cosmic
    dialogues = {d["vid"]: d["labels"] for d in torch.load(run / "valid.pt", weights_only=True)}
    listed = [f for f in metrics["findings"] if f["item_ids"]]
    assert listed, [f["id"] for f in metrics["findings"]]
    for finding in listed:
        for item in finding["item_ids"]:
            vid, t = map(int, re.fullmatch(r"(\d+):(\d+)", item).groups())
            assert FIRST_VID <= vid < FIRST_VID + N_VALID and t < len(dialogues[vid])
    persistent = _finding(metrics, "persistent_errors")
    for item in persistent["item_ids"]:
        vid, t = map(int, item.split(":"))
        assert EMOTIONS[int(dialogues[vid][t])] in persistent["classes"]
    markdown = (out / "report.md").read_text()
    shown = [item for f in listed for item in f["item_ids"] if item in markdown]
    assert len(shown) >= 5 and all(int(item.split(":")[0]) >= FIRST_VID for item in shown)


def test_the_html_shows_the_reduction_beside_the_log_and_the_dialogue_ids(cosmic):
    from test_report_render import parse

    _, logged, _, out, metrics = cosmic
    page = parse(out / "report.html")
    text = " ".join(page.text)
    assert f"It is {BY_COUNT.meaning}: {BY_COUNT.formula}" in text
    assert "batch_means_by_count" in page.text          # the column of its values in the training-log table
    listed = next(f for f in metrics["findings"] if f["id"] == "confident_errors_dominate")["item_ids"]
    assert all(item in text for item in listed[:10])
