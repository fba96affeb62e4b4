"""analyze/schedule.py: the learning rate per epoch and its events, on schedules whose events are known."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from postmortem.analyze.schedule import LearningRateSeries, LrEventKind, learning_rate_series, lr_events
from postmortem.diagnose import DiagnosisConfig
from postmortem.load.training_setup import OptimizerSetup, ParamGroupSetup, TrainingSetup, WeightDecayMode

MIN_CHANGE = DiagnosisConfig().min_lr_change


def _setup(*lrs: float) -> TrainingSetup:
    return TrainingSetup(optimizer=OptimizerSetup(
        kind="SGD", kind_basis=None, kind_detail="", weight_decay_mode=WeightDecayMode.NONE, weight_decay_detail="",
        param_groups=tuple(ParamGroupSetup(lr=lr) for lr in lrs), step=None, source="optimizer"))


def _scheduled(make_scheduler, n_epochs: int, lr: float = 0.1) -> list[float]:
    """The lr a real torch scheduler leaves in the optimizer after each epoch's step (what a checkpoint saves)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(optimizer)
    rates = []
    for _ in range(n_epochs):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def _events(rates: list[float], epochs=None, min_change: float = MIN_CHANGE):
    epochs = list(range(1, len(rates) + 1)) if epochs is None else epochs
    return lr_events(learning_rate_series(epochs, [_setup(r) for r in rates]), min_change)


def test_step_decay_drops_at_each_step():
    rates = _scheduled(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.1), 9)
    assert rates == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.0001])
    events = _events(rates)
    assert [(e.kind, e.from_epoch, e.to_epoch) for e in events] == [(LrEventKind.DROP, 2, 3), (LrEventKind.DROP, 5, 6),
                                                                     (LrEventKind.DROP, 8, 9)]
    assert events[0].lr_before == (rates[1],) and events[0].lr_after == (rates[2],)
    assert events[0].relative_change == pytest.approx(-0.9) and events[0].groups == (0,)
    assert (events[1].from_index, events[1].to_index) == (4, 5)


def test_warm_restarts_rise_after_a_decline():
    rates = _scheduled(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=4), 9)
    events = _events(rates)
    # 4 epochs per cycle: 0.085, 0.05, 0.015 (merged: one decline), then back to 0.1 (a restart) at epoch 4
    assert [(e.kind, e.from_epoch, e.to_epoch) for e in events] == [
        (LrEventKind.DROP, 1, 3), (LrEventKind.RESTART, 3, 4), (LrEventKind.DROP, 5, 7), (LrEventKind.RESTART, 7, 8)]
    assert events[1].lr_after == (pytest.approx(0.1),)


def test_warm_up_then_a_plateau_reduction():
    rates = [0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.05, 0.05]   # linear warm-up, then ReduceLROnPlateau(factor=0.5)
    events = _events(rates, epochs=[0, 1, 2, 3, 4, 5, 6, 7])   # 0-based epochs, as Lightning stores them
    assert [(e.kind, e.from_epoch, e.to_epoch) for e in events] == [(LrEventKind.WARMUP, 0, 3),
                                                                     (LrEventKind.DROP, 5, 6)]
    assert events[0].lr_before == (0.025,) and events[0].lr_after == (0.1,)
    assert events[0].relative_change == pytest.approx(0.75)


def test_the_threshold_is_a_parameter():
    rates = [0.1, 0.1, 0.085, 0.085]                           # a 15% drop
    assert _events(rates, min_change=0.2) == ()
    [event] = _events(rates, min_change=0.1)
    assert event.kind is LrEventKind.DROP and event.relative_change == pytest.approx(-0.15)


def test_param_groups_and_checkpoints_without_a_learning_rate():
    setups = [_setup(0.1, 0.01), None, _setup(0.1, 0.01), _setup(0.1, 0.001), TrainingSetup()]
    series = learning_rate_series([1, 2, 3, 4, 5], setups)
    assert series.known and series.n_groups == 2 and series.spans_decades
    np.testing.assert_array_equal(series.rates[1], [np.nan, np.nan])
    [event] = lr_events(series, MIN_CHANGE)                    # no event across the epochs that saved no lr
    assert (event.kind, event.from_epoch, event.to_epoch, event.groups) == (LrEventKind.DROP, 3, 4, (1,))
    assert event.lr_before == (0.1, 0.01) and event.lr_after == (0.1, 0.001)
    empty = learning_rate_series([1, 2], [None, None])
    assert not empty.known and empty.rates.shape == (2, 0) and lr_events(empty, MIN_CHANGE) == ()


def test_a_constant_rate_has_no_event_and_spans_no_decade():
    series = LearningRateSeries(epochs=np.arange(1, 5), rates=np.full((4, 1), 0.01))
    assert lr_events(series, MIN_CHANGE) == () and not series.spans_decades
