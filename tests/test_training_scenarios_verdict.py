"""The verdict on the training-side scenarios (issue 16, item 5): model-mode runs whose cause is known by construction
and confirmed without postmortem (tests/_training_scenarios.py, tests/test_training_scenarios_truth.py). Each run
goes through the real CLI (`postmortem report RUN --no-pdf`, in-process) from its own folder: checkpoints, spec,
postmortem.toml; metrics.json's verdict must name the cause, the classes and ids it was built with, and claim nothing
false (no wrong validation labels, no label noise where the training labels are clean).
benchmarks/bench_training_scenarios.py runs the same scenarios larger and over three seeds."""
from __future__ import annotations

import pytest

from _fixtures_inputs import report
from _training_scenarios import LR_EVENT_WINDOW

NAMES = ("class_undersampled", "class_undersampled_no_subset", "training_label_noise_subset", "step_lr_decay",
         "warm_restart", "leaked_set", "dropout_train_mode_log")


@pytest.fixture(scope="module")
def reports(training_scenario_suite, tmp_path_factory) -> dict[str, dict]:
    """metrics.json of `postmortem report RUN` on each scenario, by name."""
    results = {}
    for name, s in training_scenario_suite.items():
        code, err, metrics = report(s.run, out=tmp_path_factory.mktemp(name) / "report")
        assert code == 0, err
        results[name] = metrics
    return results


def _causes(verdict: dict) -> set[str]:
    return {verdict["primary_cause"], *verdict["contributing_causes"]} - {None}


@pytest.mark.parametrize("name", NAMES)
def test_the_verdict_names_the_constructed_cause(training_scenario_suite, reports, name):
    s, metrics = training_scenario_suite[name], reports[name]
    verdict = metrics["verdict"]
    assert verdict["status"] == s.expected_status, verdict["sentences"]["what_happened"]
    if s.acceptable_primary:
        assert verdict["primary_cause"] in s.acceptable_primary, verdict["sentences"]["model_or_else"]
    assert set(s.expected_classes) <= set(verdict["classes"])
    if s.expected_classes:
        assert len(verdict["classes"]) <= len(s.expected_classes) + 1, verdict["classes"]
    assert set(s.expected_findings) <= {f["id"] for f in metrics["findings"]}


@pytest.mark.parametrize("name", NAMES)
def test_no_false_claims(reports, name):
    """Every validation label is clean: no wrong validation labels, no validation ids named."""
    verdict = reports[name]["verdict"]
    assert "validation_labels" not in _causes(verdict) and verdict["item_ids"] == []
    assert "validation_label_errors" not in {f["id"] for f in reports[name]["findings"]}


@pytest.mark.parametrize("name", NAMES)
def test_the_losses_are_the_independent_ones(training_scenario_suite, reports, name):
    c, metrics = training_scenario_suite[name].confirmation, reports[name]
    assert [e["epoch"] for e in metrics["epochs"]] == list(c.epochs)
    assert [e["loss"] for e in metrics["epochs"]] == pytest.approx(c.losses, rel=1e-9)
    assert metrics["bootstrap"]["from_epoch"] == c.best_epoch and metrics["bootstrap"]["to_epoch"] == c.last_epoch
    if c.train_losses is not None:
        assert [e["loss"] for e in metrics["training"]["epochs"]] == pytest.approx(c.train_losses, rel=1e-9)


def test_an_undersampled_class_with_a_training_subset_is_underrepresented_not_mislabelled(training_scenario_suite,
                                                                                           reports):
    s, metrics = training_scenario_suite["class_undersampled"], reports["class_undersampled"]
    verdict = metrics["verdict"]
    a, b = s.expected_classes
    assert verdict["primary_cause"] == "class_underrepresented" and verdict["classes"][:2] == [a, b]
    assert "learned_confusion" not in _causes(verdict)
    assert "noisy training labels" not in verdict["sentences"]["model_or_else"]
    assert verdict["sentences"]["what_to_try"].startswith(f"Restore {a}'s share of the training data")
    signal = next(x for x in metrics["training"]["comparison"]["class_signals"]
                  if (x["true_class"], x["predicted_class"]) == (a, b))
    assert signal["drift_change"]["estimate"] == pytest.approx(s.confirmation.train_drift_growth.estimate, abs=1e-12)
    assert signal["recall_change"]["estimate"] == pytest.approx(s.confirmation.train_recall_change.estimate, abs=1e-12)


def test_without_the_subset_the_verdict_names_both_explanations_and_claims_no_label_noise(training_scenario_suite,
                                                                                          reports):
    s, verdict = training_scenario_suite["class_undersampled_no_subset"], reports["class_undersampled_no_subset"]["verdict"]
    a, b = s.expected_classes
    assert verdict["primary_cause"] == "learned_confusion" and verdict["classes"][:2] == [a, b]
    sentence = verdict["sentences"]["model_or_else"]
    assert f"either noisy training labels (items of {a} labelled {b}) or fewer {a} items in training" in sentence
    assert "the validation set alone cannot tell these apart" in sentence
    assert "--train-data" in verdict["sentences"]["what_to_try"]
    assert reports["class_undersampled_no_subset"]["training"] is None
    assert "class_underrepresented" not in _causes(verdict)


def test_training_label_noise_is_read_as_noise_and_the_relabelled_training_items_are_named(training_scenario_suite,
                                                                                           reports):
    s, metrics = training_scenario_suite["training_label_noise_subset"], reports["training_label_noise_subset"]
    verdict = metrics["verdict"]
    a, b = s.expected_classes
    assert verdict["primary_cause"] == "learned_confusion" and verdict["classes"][:2] == [a, b]
    assert "noisy training labels — on the training subset" in verdict["sentences"]["model_or_else"]
    evidence = next(e for e in metrics["training"]["comparison"]["label_evidence"]
                    if (e["true_class"], e["predicted_class"]) == (a, b))
    named, relabelled = set(evidence["item_ids"]), set(s.relabelled_ids)
    assert evidence["excess"]["low"] > 0 and evidence["excess"]["estimate"] >= 0.05
    assert len(named & relabelled) / len(named) >= 0.95                              # precision
    assert len(named & relabelled) / len(relabelled) >= 0.25                          # recall
    listed = verdict["sentences"]["what_to_try"].split("candidates: ")[1]
    assert any(i in listed for i in named)


@pytest.mark.parametrize("name, kind", [("step_lr_decay", "lr_drop"), ("warm_restart", "lr_restart")])
def test_the_rise_is_tied_to_the_lr_event(training_scenario_suite, reports, name, kind):
    s, verdict = training_scenario_suite[name], reports[name]["verdict"]
    event, c = s.lr_event, s.confirmation
    (tie,) = verdict["training_events"]
    assert tie["kind"] == kind == event.kind
    assert (tie["from_epoch"], tie["to_epoch"]) == (event.from_epoch, event.to_epoch)
    assert tie["lr_before"] == pytest.approx([event.lr_before], rel=1e-12)
    assert tie["lr_after"] == pytest.approx([event.lr_after], rel=1e-12)
    assert tie["relative_change"] == pytest.approx(event.relative_change, rel=1e-12)
    onset = c.epochs[c.epochs.index(c.best_epoch) + 1]
    assert tie["rise_onset_epoch"] == onset
    assert tie["checkpoints_to_rise"] == c.epochs.index(onset) - c.epochs.index(event.to_epoch) <= LR_EVENT_WINDOW
    sentence = verdict["sentences"]["what_happened"]
    assert f"The rise begins at epoch {onset}" in sentence
    assert f"{event.lr_before:.3g} → {event.lr_after:.3g} between epochs {event.from_epoch} and {event.to_epoch}" \
        in sentence
    assert "rise_after_lr_event" in {f["id"] for f in reports[name]["findings"]}
    fell = reports[name]["bootstrap"]["accuracy_change"]["high"] < 0
    assert ("here accuracy fell too" in sentence) == (fell and kind == "lr_drop")


@pytest.mark.parametrize("name", ["class_undersampled", "training_label_noise_subset", "leaked_set",
                                  "dropout_train_mode_log"])
def test_runs_with_a_constant_lr_tie_nothing_to_it(reports, name):
    assert reports[name]["verdict"]["training_events"] == [] and reports[name]["lr_events"] == []


def test_leaked_validation_items_are_listed(training_scenario_suite, reports):
    s, metrics = training_scenario_suite["leaked_set"], reports["leaked_set"]
    leakage = metrics["training"]["leakage"]
    named, leaked = set(leakage["item_ids"]), set(s.leaked_ids)
    assert len(named & leaked) / len(named) == 1.0 and len(named & leaked) / len(leaked) == 1.0
    assert leakage["by_input_hash"] == len(s.exact_copies) and leakage["n_items"] == len(leaked)
    assert dict(zip(leakage["item_ids"], leakage["matched_training_ids"])) == dict(s.leaked_copies)
    finding = next(f for f in metrics["findings"] if f["id"] == "train_validation_leakage")
    assert set(finding["item_ids"]) == leaked
    n = len(leaked)       # the verdict tells it too, whatever the cause of the rise
    assert f"Besides, {n} validation items" in metrics["verdict"]["sentences"]["model_or_else"]
    assert f"Remove the {n} leaked items from the validation set" in metrics["verdict"]["sentences"]["what_to_try"]


def test_a_log_computed_in_train_mode_is_named_so(training_scenario_suite, reports):
    s, metrics = training_scenario_suite["dropout_train_mode_log"], reports["dropout_train_mode_log"]
    mismatch = next(f for f in metrics["findings"] if f["id"] == "logged_loss_mismatch")
    assert "train mode" in mismatch["summary"] and "model.eval()" in mismatch["next_steps"][0]
    assert "logging_mismatch" in _causes(metrics["verdict"])
    assert "the logged values are the validation loss in train mode" in metrics["verdict"]["sentences"]["model_or_else"]
    eval_losses = {m["epoch"]: m["eval_loss"] for m in metrics["train_mode"]["epochs"]}
    c = s.confirmation
    for epoch, loss in eval_losses.items():
        assert loss == pytest.approx(c.losses[c.epochs.index(epoch)], rel=1e-9)
