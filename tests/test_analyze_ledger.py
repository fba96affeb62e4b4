"""The attribution ledger against independent computations: every statistic of every resample recomputed on the
resampled items themselves with torch's nll_loss and scikit-learn's metrics, then the same percentiles."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from postmortem.analyze.bootstrap import Interval, resample_multiplicities
from postmortem.analyze.candidates import ItemCandidates
from postmortem.analyze.decomposition import TRANSITIONS
from postmortem.analyze.ledger import attribution_ledger, confusion_candidates

N_ITEMS, N_GROUPS, N_CLASSES, N_RESAMPLES = 240, 60, 4, 40
WEIGHTS = np.array([1.0, 2.5, 0.5, 4.0])


def _epoch(rng, labels, accuracy):
    pred = np.where(rng.random(len(labels)) < accuracy, labels, rng.integers(0, N_CLASSES, len(labels)))
    nll = rng.uniform(0.05, 3.0, len(labels))
    return SimpleNamespace(pred=pred, nll=nll, scaled_nll=nll * rng.uniform(0.6, 1.0, len(labels)),
                           scaled_confidence=rng.uniform(0.3, 1.0, len(labels)))


@pytest.fixture(scope="module")
def run():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, N_CLASSES, N_ITEMS)
    groups = rng.integers(0, N_GROUPS, N_ITEMS)
    before, after = _epoch(rng, labels, 0.8), _epoch(rng, labels, 0.7)
    flagged = np.flatnonzero((after.pred != labels) & (rng.random(N_ITEMS) < 0.5))
    confident = rng.random(N_ITEMS) < 0.6
    candidates = ItemCandidates(flagged, np.full(N_CLASSES, 0.5), (1,), confident)
    ledger = attribution_ledger(labels, groups, WEIGHTS, before, after, 0, 1, candidates=candidates,
                                n_resamples=N_RESAMPLES)
    return SimpleNamespace(labels=labels, groups=groups, before=before, after=after, flagged=flagged,
                           confident=confident, ledger=ledger)


def _loss(nll, labels, weights=None):
    """torch's weighted nll_loss, fed log-probabilities whose label entry is -nll."""
    log_probs = torch.full((len(labels), N_CLASSES), -50.0, dtype=torch.float64)
    log_probs[torch.arange(len(labels)), torch.as_tensor(labels)] = -torch.as_tensor(nll)
    weight = None if weights is None else torch.as_tensor(weights)
    return float(F.nll_loss(log_probs, torch.as_tensor(labels), weight=weight))


def _statistics(labels, before, after, flagged_mask, confident, pairs):
    """Every ledger statistic of one set of items, computed directly."""
    a = WEIGHTS[labels]
    dl = _loss(after.nll, labels, WEIGHTS) - _loss(before.nll, labels, WEIGHTS)
    scaled = _loss(after.scaled_nll, labels, WEIGHTS) - _loss(before.scaled_nll, labels, WEIGHTS)
    unweighted = _loss(after.nll, labels) - _loss(before.nll, labels)
    present = sorted(set(labels))
    recall = {when: recall_score(labels, r.pred, labels=list(range(N_CLASSES)), average=None, zero_division=0)
              for when, r in (("before", before), ("after", after))}
    codes = 2 * (before.pred != labels) + (after.pred != labels)
    change = a * (after.nll - before.nll) / a.sum()
    matrices = {when: confusion_matrix(labels, r.pred, labels=list(range(N_CLASSES)))
                for when, r in (("before", before), ("after", after))}
    support = matrices["after"].sum(axis=1)
    rest = ~flagged_mask
    wrong_confident = confident & (after.pred != labels)
    return {
        "loss_change": dl, "scaled_loss_change": scaled, "unweighted_loss_change": unweighted,
        "calibration_part": dl - scaled, "class_weight_part": dl - unweighted,
        "calibration_share": (dl - scaled) / dl, "scaled_share": scaled / dl,
        "accuracy_change": accuracy_score(labels, after.pred) - accuracy_score(labels, before.pred),
        "macro_f1_change": f1_score(labels, after.pred, labels=present, average="macro", zero_division=0)
        - f1_score(labels, before.pred, labels=present, average="macro", zero_division=0),
        **{f"class_part_{k}": change[labels == k].sum() for k in range(N_CLASSES)},
        **{f"transition_part_{t}": change[codes == t].sum() for t in range(4)},
        **{f"recall_change_{k}": (recall["after"][k] - recall["before"][k]) if support[k] else np.nan
           for k in range(N_CLASSES)},
        **{f"pair_growth_{c}_{d}": (matrices["after"][c, d] - matrices["before"][c, d]) / support[c]
           for c, d in pairs},
        **{f"pair_part_{c}_{d}": change[(labels == c) & (after.pred == d)].sum() for c, d in pairs},
        "flagged_part": change[flagged_mask].sum(),
        "rest_change": _loss(after.nll[rest], labels[rest], WEIGHTS) - _loss(before.nll[rest], labels[rest], WEIGHTS),
        **{f"miss_excess_{k}": float((wrong_confident & (after.pred == k)).sum()
                                     - (1 - after.scaled_confidence)[confident & (after.pred == k)].sum())
           for k in range(N_CLASSES)},
    }


def _ledger_statistics(ledger):
    confusions = {(k.true_class, k.predicted_class): k for k in ledger.confusions}
    flagged = ledger.flagged()
    return {
        "loss_change": ledger.loss_change, "scaled_loss_change": ledger.scaled_loss_change,
        "unweighted_loss_change": ledger.unweighted_loss_change, "calibration_part": ledger.calibration_part,
        "class_weight_part": ledger.class_weight_part, "calibration_share": ledger.calibration_share,
        "scaled_share": ledger.scaled_share, "accuracy_change": ledger.accuracy_change,
        "macro_f1_change": ledger.macro_f1_change,
        **{f"class_part_{k}": i for k, i in enumerate(ledger.class_parts)},
        **{f"transition_part_{t}": i for t, i in enumerate(ledger.transition_parts)},
        **{f"recall_change_{k}": i for k, i in enumerate(ledger.recall_changes)},
        **{f"pair_growth_{c}_{d}": k.growth for (c, d), k in confusions.items()},
        **{f"pair_part_{c}_{d}": k.part for (c, d), k in confusions.items()},
        "flagged_part": flagged.part, "rest_change": flagged.rest_change,
        **{f"miss_excess_{m.predicted_class}": m.excess for m in ledger.confident_misses},
    }


def _take(records, index):
    return SimpleNamespace(**{name: getattr(records, name)[index] for name in vars(records)})


def test_every_statistic_matches_a_direct_computation_on_the_same_resamples(run):
    ledger = run.ledger
    pairs = ledger.pairs
    assert pairs == confusion_candidates(run.labels, WEIGHTS, run.before, run.after) and len(pairs) > 0
    flagged_mask = np.zeros(N_ITEMS, bool)
    flagged_mask[run.flagged] = True
    full = _statistics(run.labels, run.before, run.after, flagged_mask, run.confident, pairs)
    units = np.unique(run.groups, return_inverse=True)[1]
    resampled = []
    for chunk in resample_multiplicities(N_GROUPS, N_RESAMPLES):
        for multiplicity in chunk:
            index = np.repeat(np.arange(N_ITEMS), multiplicity[units])     # each item as often as its group
            resampled.append(_statistics(run.labels[index], _take(run.before, index), _take(run.after, index),
                                         flagged_mask[index], run.confident[index], pairs))
    observed = _ledger_statistics(ledger)
    assert set(observed) == set(full)
    for name, interval in observed.items():
        values = np.array([r[name] for r in resampled])
        values = values[np.isfinite(values)]
        low, high = np.quantile(values, [0.025, 0.975])
        assert interval.estimate == pytest.approx(full[name], rel=1e-9, abs=1e-12), name
        assert interval.low == pytest.approx(min(low, full[name]), rel=1e-9, abs=1e-12), name
        assert interval.high == pytest.approx(max(high, full[name]), rel=1e-9, abs=1e-12), name


def test_parts_sum_to_the_change_and_shares_are_parts_over_it(run):
    ledger = run.ledger
    dl = ledger.loss_change.estimate
    assert sum(i.estimate for i in ledger.class_parts) == pytest.approx(dl, abs=1e-12)
    assert sum(i.estimate for i in ledger.transition_parts) == pytest.approx(dl, abs=1e-12)
    assert len(ledger.transition_parts) == len(TRANSITIONS)
    assert ledger.calibration_part.estimate + ledger.scaled_loss_change.estimate == pytest.approx(dl)
    assert ledger.calibration_share.estimate == pytest.approx(ledger.calibration_part.estimate / dl)
    assert ledger.class_weight_effects.sum() == pytest.approx(ledger.class_weight_part.estimate)
    part, share = ledger.classes_part((0, 2))
    assert part.estimate == pytest.approx(ledger.class_parts[0].estimate + ledger.class_parts[2].estimate)
    assert share.estimate == pytest.approx(part.estimate / dl)
    # the flagged items split by their (label, prediction) pair: any subset is a sum of its pairs
    everything = ledger.flagged()
    halves = [ledger.flagged(ledger.flagged_pairs[:2]), ledger.flagged(ledger.flagged_pairs[2:])]
    assert sum(h.part.estimate for h in halves) == pytest.approx(everything.part.estimate)
    assert sorted(np.concatenate([h.indices for h in halves]).tolist()) == sorted(run.flagged.tolist())
    assert len(ledger.flagged(()).indices) == 0 and ledger.flagged(()).rest_change.estimate == pytest.approx(dl)


def test_a_constant_shift_has_a_zero_width_interval():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 100)
    nll = rng.uniform(0.1, 2.0, 100)
    before = SimpleNamespace(pred=labels, nll=nll, scaled_nll=nll, scaled_confidence=np.ones(100))
    after = SimpleNamespace(pred=labels, nll=nll + 0.1, scaled_nll=nll, scaled_confidence=np.ones(100))
    ledger = attribution_ledger(labels, np.arange(100), np.array([1.0, 2.0, 5.0]), before, after, 0, 1)
    # every item's nll rises by exactly 0.1: any resample's weighted mean rises by 0.1, all of it calibration
    assert ledger.loss_change == Interval(pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1))
    assert ledger.calibration_share.low == pytest.approx(1.0) and ledger.calibration_share.high == pytest.approx(1.0)
    assert ledger.accuracy_change == Interval(0.0, 0.0, 0.0) and ledger.macro_f1_change == Interval(0.0, 0.0, 0.0)
    assert ledger.totals.resampled_unit == "items" and ledger.totals.n_units == 100
    assert ledger.totals.n_resamples == 200 and ledger.pairs == ()


def test_seeded_and_grouped():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    groups = np.repeat(np.arange(20), 10)

    def epoch(shift):
        nll = rng.uniform(0.1, 1.0, 200) + shift * (groups % 2)
        return SimpleNamespace(pred=labels, nll=nll, scaled_nll=nll, scaled_confidence=np.ones(200))
    before, after = epoch(0.0), epoch(0.5)
    first = attribution_ledger(labels, groups, np.ones(2), before, after, 0, 1)
    again = attribution_ledger(labels, groups, np.ones(2), before, after, 0, 1)
    assert first.loss_change == again.loss_change
    assert first.loss_change != attribution_ledger(labels, groups, np.ones(2), before, after, 0, 1, seed=1).loss_change
    by_item = attribution_ledger(labels, np.arange(200), np.ones(2), before, after, 0, 1)
    # half the groups rise by 0.5: resampling whole groups sees that spread, resampling items averages it away
    width = first.loss_change.high - first.loss_change.low
    assert first.totals.resampled_unit == "groups" and width > 2 * (by_item.loss_change.high - by_item.loss_change.low)


def test_intervals_of_many_columns_are_np_quantile_of_each_column_to_the_bit():
    """ResampledTotals.intervals takes every column's percentiles at once (a loop of np.quantile per column took
    0.7 s of a 1,000-class report): the same numbers as np.quantile of each column's finite resamples, NaN and
    +-inf left out, an all-NaN column an undefined interval, and the estimate inside its interval."""
    from postmortem.analyze.bootstrap import ResampledTotals

    rng = np.random.default_rng(3)
    totals = ResampledTotals({}, np.zeros((1, 1)), 200, 0.95, "items", 10)
    tail = (1.0 - totals.confidence_level) / 2.0
    for resamples in (1, 2, 7, 200):
        values = rng.normal(size=(resamples + 1, 40)) * 10.0 ** rng.uniform(-6, 6, 40)
        values[1:][rng.random((resamples, 40)) < 0.2] = np.nan
        values[1:][rng.random((resamples, 40)) < 0.05] = rng.choice([np.inf, -np.inf])
        values[1:, 0] = np.nan
        values[1:, 1] = 1.5
        for column, interval in enumerate(totals.intervals(values)):
            finite = values[1:, column][np.isfinite(values[1:, column])]
            estimate = float(values[0, column])
            if len(finite) == 0:
                assert interval.estimate == estimate and np.isnan(interval.low) and np.isnan(interval.high)
                continue
            low, high = np.quantile(finite, [tail, 1.0 - tail])
            assert interval == Interval(estimate, min(float(low), estimate), max(float(high), estimate))
        assert totals.interval(values[:, 5]) == totals.intervals(values)[5]
