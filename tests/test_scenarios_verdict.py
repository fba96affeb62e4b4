"""The verdict on the scenario suite: trained runs whose cause is known by construction and confirmed without
postmortem (tests/_scenarios.py, tests/test_scenarios_truth.py). Each run goes through the real pipeline in
predictions mode (evaluate -> analyze -> diagnose); the verdict must name the cause, the classes and item ids it
was built with, and claim nothing false (no label errors on clean labels, no mechanism on an unresolved rise).
benchmarks/bench_scenarios.py runs the same scenarios larger and over more seeds."""
from __future__ import annotations

import numpy as np
import pytest

from _scenarios import SUITE
from postmortem.analyze.run import analyze_run
from postmortem.config import build_config
from postmortem.diagnose import Cause, FindingKind, Status, diagnose
from postmortem.evaluate.runner import evaluate_run

NAMES = [kind if seed == 0 else f"{kind}_seed{seed}" for kind, seed in SUITE]
LABEL_CLAIMS = {FindingKind.VALIDATION_LABEL_ERRORS.value}


@pytest.fixture(scope="module")
def diagnosed(scenario_suite, tmp_path_factory):
    """Each scenario's evaluation and diagnosis, by name."""
    results = {}
    for name, s in scenario_suite.items():
        flags = {"predictions": str(s.predictions_dir), "class_names": list(s.class_names), "quiet": True,
                 "out": str(tmp_path_factory.mktemp(name))}
        if s.class_weights is not None:
            flags["class_weights"] = list(s.class_weights)
        evaluation = evaluate_run(build_config(s.predictions_dir.parent, {}, flags))
        results[name] = (evaluation, diagnose(analyze_run(evaluation, s.class_names)))
    return results


@pytest.mark.parametrize("name", NAMES)
def test_the_verdict_names_the_constructed_cause(scenario_suite, diagnosed, name):
    s, (_, diagnosis) = scenario_suite[name], diagnosed[name]
    verdict = diagnosis.verdict
    assert verdict.status is Status(s.expected_status), verdict.sentences.what_happened
    found = None if verdict.primary_cause is None else verdict.primary_cause.value
    if s.expected_primary is None:
        assert found is None
    else:
        assert found in s.acceptable_primary, verdict.sentences.model_or_else
    assert set(s.expected_classes) <= set(verdict.classes)
    if s.expected_classes:                    # what a cause names is its own classes, not a list of every class
        assert len(verdict.classes) <= len(s.expected_classes) + 1, verdict.classes


@pytest.mark.parametrize("name", NAMES)
def test_no_false_claims(scenario_suite, diagnosed, name):
    s, (_, diagnosis) = scenario_suite[name], diagnosed[name]
    verdict, fired = diagnosis.verdict, {f.id for f in diagnosis.findings}
    if s.clean_validation_labels:
        assert Cause.VALIDATION_LABELS not in (verdict.primary_cause, *verdict.contributing_causes)
        assert verdict.item_ids == () and not fired & LABEL_CLAIMS
    if verdict.status is not Status.RISE:
        assert verdict.contributing_causes == () and verdict.primary_cause is None
        assert fired <= {FindingKind.NOISE.value}
        assert "will do" not in " ".join(vars(verdict.sentences).values())
    if verdict.status is Status.UNRESOLVED:
        assert "not resolved with n = " in verdict.sentences.what_happened
    degradation = next(a for a in verdict.assessments if a.cause is Cause.GENUINE_DEGRADATION)
    if verdict.status is Status.RISE and not degradation.counted:
        assert "Genuine degradation: not detected (scaled-loss change" in verdict.sentences.model_or_else


def test_wrong_validation_labels_are_named_by_id(scenario_suite, diagnosed):
    for name in (n for n in NAMES if n.startswith("validation_label_noise")):
        s, verdict = scenario_suite[name], diagnosed[name][1].verdict
        named, flipped = set(verdict.item_ids), set(s.flipped_ids)
        assert len(named & flipped) / len(named) >= 0.9, name          # precision
        assert len(named & flipped) / len(flipped) >= 0.5, name        # recall


@pytest.mark.parametrize("name", NAMES)
def test_the_ledger_agrees_with_the_independent_confirmation(scenario_suite, diagnosed, name):
    """The loss change, accuracy change and unweighted change of the comparison equal the scenario's own
    torch/scikit-learn computations from the same files (the confirmation compares the same two epochs)."""
    s, (evaluation, diagnosis) = scenario_suite[name], diagnosed[name]
    c, ledger = s.confirmation, diagnosis.comparison.ledger
    epochs = [e.epoch for e in evaluation.epochs]
    assert (diagnosis.comparison.from_epoch, diagnosis.comparison.to_epoch) == (c.best_epoch, c.last_epoch)
    np.testing.assert_allclose([e.metrics.loss for e in analyze_run(evaluation, s.class_names).epochs], c.losses,
                               rtol=1e-9)
    assert len(epochs) == len(c.losses)
    assert ledger.loss_change.estimate == pytest.approx(c.loss_change.estimate, rel=1e-9, abs=1e-12)
    assert ledger.accuracy_change.estimate == pytest.approx(c.accuracy_change.estimate, abs=1e-12)
    if c.unweighted_loss_change is not None:
        assert ledger.unweighted_loss_change.estimate == pytest.approx(c.unweighted_loss_change.estimate, rel=1e-9)
