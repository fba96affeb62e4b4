"""The verdict ties a loss rise to the learning-rate event it begins right after (metrics.json verdict.training_events,
the finding rise_after_lr_event, the sentences), only within DiagnosisConfig.lr_event_window checkpoints; and the
next steps name the optimizer's weight decay as the checkpoints record it (Adam's coupled L2 against AdamW)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _fixtures_inputs import report
from postmortem.diagnose import DiagnosisConfig
from postmortem.diagnose.training_events import weight_decay_advice
from postmortem.load.training_setup import OptimizerSetup, ParamGroupSetup, TrainingSetup, WeightDecayMode

WINDOW = DiagnosisConfig().lr_event_window
N_ITEMS, N_CLASSES = 3000, 3
# the base logits scaled by SCALES[i] at checkpoint i: the loss is lowest at the best scale (index BEST) and rises
# after it as the scale grows, with the argmax (accuracy) unchanged: a rise that begins at index BEST + 1
SCALES = (0.4, 0.55, 0.7, 0.85, 1.0, 1.8, 2.6, 3.4)
BEST = 4


def _base_logits(rng) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose best temperature is 1 (rescaled so): ~80% correct, the rest confidently wrong at larger scales."""
    labels = rng.integers(0, N_CLASSES, N_ITEMS)
    logits = rng.normal(size=(N_ITEMS, N_CLASSES))
    logits[np.arange(N_ITEMS), labels] += 1.6
    logits_t, labels_t = torch.tensor(logits), torch.tensor(labels)
    scales = np.linspace(0.05, 10, 4000)
    losses = [torch.nn.functional.cross_entropy(logits_t * s, labels_t).item() for s in scales]
    return logits * scales[int(np.argmin(losses))], labels


def _run(tmp_path, lrs, **extra):
    """A predictions-mode run of len(SCALES) epochs whose files record the lr (and `extra` setup keys)."""
    logits, labels = _base_logits(np.random.default_rng(0))
    preds = tmp_path / "preds"
    preds.mkdir()
    for i, (scale, lr) in enumerate(zip(SCALES, lrs)):
        np.savez(preds / f"epoch_{i + 1}.npz", outputs=logits * scale, labels=labels, epoch=i + 1, lr=np.array(lr),
                 **extra)
    code, err, metrics = report(tmp_path, "--predictions", str(preds), out=tmp_path / "report")
    assert code == 0, err
    losses = [e["loss"] for e in metrics["epochs"]]
    assert int(np.argmin(losses)) == BEST and metrics["verdict"]["status"] == "rise"
    return metrics


def _finding(metrics, finding_id):
    return next((f for f in metrics["findings"] if f["id"] == finding_id), None)


def test_a_rise_right_after_a_drop_is_tied_to_it_with_the_numbers(tmp_path):
    lrs = [0.1] * BEST + [0.01] * (len(SCALES) - BEST)           # the drop shows first at checkpoint BEST
    metrics = _run(tmp_path, lrs, optimizer=np.array("Adam"), weight_decay=np.array(1e-5))
    [event] = metrics["verdict"]["training_events"]
    assert event == {"kind": "lr_drop", "from_epoch": BEST, "to_epoch": BEST + 1, "lr_before": [0.1],
                     "lr_after": [0.01], "relative_change": pytest.approx(-0.9, abs=1e-12),
                     "rise_onset_epoch": BEST + 2, "checkpoints_to_rise": 1}
    [listed] = metrics["lr_events"]               # the same event as the run's list of LR events has it
    assert {k: listed[k] for k in ("from_epoch", "to_epoch", "lr_before", "lr_after")} == \
        {k: event[k] for k in ("from_epoch", "to_epoch", "lr_before", "lr_after")} and listed["kind"] == "drop"
    happened = metrics["verdict"]["sentences"]["what_happened"]
    assert (f"The rise begins at epoch {BEST + 2}, 1 checkpoint later than the learning rate dropped: 0.1 → 0.01 "
            f"between epochs {BEST} and {BEST + 1}") in happened and "Guo et al. 2017" in happened
    assert f"Around the LR drop at epoch {BEST + 1}" in metrics["verdict"]["sentences"]["what_to_try"]
    finding = _finding(metrics, "rise_after_lr_event")
    assert finding["evidence"]["relative_lr_change"] == pytest.approx(0.9)
    assert finding["thresholds"] == {"relative_lr_change": DiagnosisConfig().min_lr_change,
                                     "checkpoints_to_rise": WINDOW}
    assert finding["evidence"]["checkpoints_to_rise"] == 1 <= finding["thresholds"]["checkpoints_to_rise"]
    # the calibration rise's next steps name Adam's coupled L2 and AdamW, from the setup the files record
    assert metrics["verdict"]["primary_cause"] == "calibration"
    advice = "Weight decay: Adam applies weight_decay=1e-05 as L2 added to the gradient (coupled)"
    assert metrics["verdict"]["sentences"]["what_to_try"].count(advice) == 1          # said once
    assert any(step.startswith(advice) and "torch.optim.AdamW" in step
               for step in _finding(metrics, "overconfidence")["next_steps"])
    assert "here accuracy fell too" not in happened                                   # accuracy held: argmax kept


@pytest.mark.parametrize("drop_at", [1, BEST + 2], ids=["long-before", "after-the-onset"])
def test_no_tie_outside_the_window_or_after_the_rise_began(tmp_path, drop_at):
    """A drop shown first at checkpoint 1 is BEST (> WINDOW) checkpoints before the onset; one at BEST + 2 comes
    after the rise began at BEST + 1: neither is tied, both are still LR events."""
    lrs = [0.1] * drop_at + [0.01] * (len(SCALES) - drop_at)
    metrics = _run(tmp_path, lrs)
    assert [(e["kind"], e["to_epoch"]) for e in metrics["lr_events"]] == [("drop", drop_at + 1)]
    assert metrics["verdict"]["training_events"] == [] and _finding(metrics, "rise_after_lr_event") is None
    assert "The rise begins at epoch" not in metrics["verdict"]["sentences"]["what_happened"]


def test_a_warm_restart_at_the_onset_is_tied_as_a_restart(tmp_path):
    lrs = [0.1, 0.07, 0.04, 0.02, 0.01, 0.1, 0.07, 0.04]          # annealed, then restarted at checkpoint BEST + 1
    metrics = _run(tmp_path, lrs)
    ties = metrics["verdict"]["training_events"]
    assert [(t["kind"], t["to_epoch"], t["checkpoints_to_rise"]) for t in ties] == [("lr_restart", BEST + 2, 0)]
    assert "was raised again (a warm restart)" in metrics["verdict"]["sentences"]["what_happened"]
    assert "Judge the run at the end of each LR cycle" in metrics["verdict"]["sentences"]["what_to_try"]


def _setup(kind, mode, decay) -> TrainingSetup:
    return TrainingSetup(optimizer=OptimizerSetup(
        kind=kind, kind_basis=None, kind_detail="", weight_decay_mode=mode, weight_decay_detail="the state's words",
        param_groups=(ParamGroupSetup(lr=0.01, weight_decay=decay),), step=None, source="optimizer"))


def test_weight_decay_advice_follows_the_recorded_optimizer_and_says_when_it_is_absent():
    assert "switch to torch.optim.AdamW" in weight_decay_advice(_setup("Adam", WeightDecayMode.COUPLED, 1e-5))
    assert weight_decay_advice(_setup("AdamW", WeightDecayMode.DECOUPLED, 0.01)) == \
        "Weight decay: AdamW decays the weights directly (decoupled) with weight_decay=0.01; raise it."
    assert weight_decay_advice(_setup("SGD", WeightDecayMode.COUPLED, 1e-4)) == \
        "Weight decay: SGD applies weight_decay=0.0001 as L2 added to the gradient; raise it."
    assert weight_decay_advice(_setup("Adam", WeightDecayMode.NONE, 0.0)) == \
        "Weight decay: Adam ran with none (weight_decay 0 in every param group); add some, decoupled: torch.optim.AdamW."
    assert weight_decay_advice(_setup("SGD", WeightDecayMode.NONE, 0.0)).endswith("param group); add some.")
    unknown = weight_decay_advice(_setup("Adam", WeightDecayMode.UNKNOWN, 1e-5))
    assert "the state's words" in unknown and "if it is Adam's coupled L2" in unknown
    for absent in (None, TrainingSetup(optimizer=None)):
        assert weight_decay_advice(absent).startswith("Weight decay: the checkpoints record no optimizer state")
