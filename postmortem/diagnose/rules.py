"""Rules: each reads one Case (the run's analysis, the comparison computed once, the cause assessments and the
thresholds) and returns a Finding or None. A threshold appears in the finding's `thresholds` under the same
name as the evidence number it was compared to.

Findings present what the verdict decided (one finding per counted cause) and the mechanisms behind a rise
(where it sits, in which classes, how the logits moved). Except for the training-log check and leakage between
the training subset and the validation set (data problems, rise or not), none fires unless the loss rose beyond
noise; when it did not resolve, only `noise` (and those two) fire.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analyze.decomposition import CORRECT_TO_CORRECT, CORRECT_TO_WRONG, TRANSITIONS, WRONG_TO_WRONG
from ..analyze.run import RunAnalysis
from ..analyze.metrics import weighted_loss
from ..analyze.schedule import LrEvent, lr_events
from .causes import Cause, CauseAssessment, PairReading, assess_causes, train_mode_matches, train_mode_text
from .comparison import Comparison, Status, compare
from .config import DiagnosisConfig
from .findings import FigureAnchor, Finding, FindingKind, Severity
from .training_events import TrainingEvent, tie_to_lr_events, training_event_step, training_event_text, \
    weight_decay_advice
from .verdict import Verdict, decide
from .wording import IDS_IN_TEXT, ci_text, epoch_picked_by, ids_text, listed_text, share_text

__all__ = ["Case", "Diagnosis", "diagnose", "RULES"]


@dataclass(frozen=True)
class Case:
    """What every rule reads: computed once per report."""

    analysis: RunAnalysis
    comparison: Comparison
    causes: dict[Cause, CauseAssessment]
    config: DiagnosisConfig
    training_events: tuple[TrainingEvent, ...] = ()    # LR events the rise begins right after

    @property
    def rise(self) -> bool:
        return self.comparison.status is Status.RISE

    def counted(self, cause: Cause) -> CauseAssessment | None:
        """The assessment of a cause that counts, else None."""
        assessment = self.causes.get(cause)
        return assessment if assessment is not None and assessment.counted else None

    def epoch(self, index: int) -> int:
        return self.analysis.epochs[index].epoch

    def pick(self, criterion: str) -> str:
        """'epoch N' picked by a criterion of the checkpoint table."""
        return epoch_picked_by(self.analysis, criterion)

    def ids(self, indices) -> tuple[str, ...]:
        return tuple(str(self.analysis.ids[i]) for i in list(indices)[:self.config.max_listed_items])

    @property
    def weight_decay_advice(self) -> str:
        """How to regularise with the optimizer the later compared checkpoint records (or that it records none)."""
        return weight_decay_advice(self.analysis.training_setups[self.comparison.to_index])


@dataclass(frozen=True)
class Diagnosis:
    """The comparison, the findings (highest severity and score first), the verdict of one run, and the learning-rate
    events between its checkpoints (analyze.schedule.lr_events at config.min_lr_change)."""

    comparison: Comparison
    findings: tuple[Finding, ...]
    verdict: Verdict
    lr_events: tuple[LrEvent, ...] = ()


def _classes_text(names: tuple[str, ...], singular: str = "", plural: str = "", start: bool = False) -> str:
    """'class fear holds' or 'classes fear, joy hold' (verb forms optional; `start` capitalises the first word)."""
    word = ("C" if start else "c") + "lass"
    if len(names) == 1:
        return f"{word} {names[0]}" + (f" {singular}" if singular else "")
    return f"{word}es " + listed_text(list(names)) + (f" {plural}" if plural else "")


def _interval_evidence(name: str, interval) -> dict[str, float]:
    return {name: interval.estimate, f"{name}_ci_low": interval.low, f"{name}_ci_high": interval.high}


# ----------------------------------------------------------------------------- the symptom
def nll_overfit_accuracy_holds(case: Case) -> Finding | None:
    """The loss rose beyond its CI after its minimum while accuracy did not fall beyond its CI (held or rose)."""
    c, config = case.comparison, case.config
    if not case.rise or c.relative_change < config.min_relative_loss_rise:
        return None
    loss, accuracy = c.ledger.loss_change, c.ledger.accuracy_change
    if accuracy.below_zero:
        return None
    return Finding(
        id=FindingKind.NLL_OVERFIT_ACCURACY_HOLDS.value,
        severity=Severity.HIGH,
        score=c.relative_change,
        title=f"Loss rose {c.relative_change:.0%} after epoch {c.from_epoch} while accuracy "
              + ("rose" if accuracy.above_zero else "held"),
        summary=(f"Validation loss went {c.loss_from:.4f} (epoch {c.from_epoch}) → {c.loss_to:.4f} (epoch "
                 f"{c.to_epoch}), +{c.relative_change:.1%} (threshold {config.min_relative_loss_rise:.0%}; 95% CI of "
                 f"the change [{loss.low:+.4f}, {loss.high:+.4f}]). Accuracy changed by {accuracy.estimate:+.2%} "
                 f"({ci_text(accuracy, '+.2%')}, not below zero). This is the symptom; the causes "
                 "are in the verdict."),
        evidence={"relative_loss_rise": c.relative_change, "loss_change_ci_low": loss.low,
                  "accuracy_change": accuracy.estimate, "accuracy_change_ci_high": accuracy.high},
        thresholds={"relative_loss_rise": config.min_relative_loss_rise, "loss_change_ci_low": 0.0,
                    "accuracy_change_ci_high": 0.0},
        next_steps=(f"Select the checkpoint by the metric you deploy (see the checkpoint table): "
                    f"{case.pick('lowest loss')} by loss, {case.pick('highest accuracy')} by accuracy, "
                    f"{case.pick('highest macro F1')} by macro F1.",),
        figure=FigureAnchor.CURVES,
    )


# ----------------------------------------------------------------------------- one finding per counted cause
def overconfidence(case: Case) -> Finding | None:
    """Calibration counts (temperature scaling removes part of the rise, beyond noise) and the fitted T ends above
    min_last_temperature, having risen: the model grew more confident, not more wrong."""
    cause = case.counted(Cause.CALIBRATION)
    if cause is None:
        return None
    c, config, ledger = case.comparison, case.config, case.comparison.ledger
    first, last = case.analysis.epochs[c.from_index], case.analysis.epochs[c.to_index]
    if last.temperature < config.min_last_temperature or last.temperature <= first.temperature:
        return None
    ece_first = first.calibration.expected_calibration_error
    ece_last = last.calibration.expected_calibration_error
    share = ledger.calibration_share
    return Finding(
        id=FindingKind.OVERCONFIDENCE.value,
        severity=Severity.HIGH,
        score=share.estimate,
        title=f"Overconfidence: temperature scaling removes {share.estimate:.0%} of the loss rise",
        summary=(f"From epoch {c.from_epoch} to {c.to_epoch}: {cause.facts}. The loss after temperature scaling "
                 f"went {first.scaled_loss:.4f} → {last.scaled_loss:.4f} (change CI "
                 f"[{ledger.scaled_loss_change.low:+.4f}, {ledger.scaled_loss_change.high:+.4f}]); the fitted "
                 f"temperature rose {first.temperature:.2f} → {last.temperature:.2f} (threshold "
                 f"{config.min_last_temperature:.2f}) and ECE {ece_first:.3f} → {ece_last:.3f}."),
        evidence={**_interval_evidence("calibration_share", share), "scaled_loss_first": first.scaled_loss,
                  "scaled_loss_last": last.scaled_loss, "temperature_first": first.temperature,
                  "temperature_last": last.temperature, "ece_first": ece_first, "ece_last": ece_last},
        thresholds={"calibration_share_ci_low": 0.0, "temperature_last": config.min_last_temperature},
        next_steps=(f"Temperature-scale the checkpoint you deploy (T ≈ {last.temperature:.2f} at epoch {last.epoch}, "
                    f"fitted on held-out data): its loss goes from {last.metrics.loss:.4f} to about "
                    f"{last.scaled_loss:.4f} with accuracy unchanged.",
                    f"Or select the checkpoint by the loss after scaling "
                    f"({case.pick('lowest loss after temperature scaling')}).",
                    "To train better-calibrated models: label smoothing (e.g. 0.1) or focal loss.",
                    case.weight_decay_advice),
        figure=FigureAnchor.CALIBRATION,
    )


def genuine_degradation(case: Case) -> Finding | None:
    """The loss after temperature scaling rose beyond its own interval, or macro F1 fell beyond its interval."""
    cause = case.counted(Cause.GENUINE_DEGRADATION)
    if cause is None:
        return None
    c, ledger = case.comparison, case.comparison.ledger
    scaled, f1 = ledger.scaled_loss_change, ledger.macro_f1_change
    return Finding(
        id=FindingKind.GENUINE_DEGRADATION.value,
        severity=Severity.HIGH,
        score=max(ledger.scaled_share.estimate, 0.0),
        title="Genuine degradation: the model got worse, not only overconfident",
        summary=(f"From epoch {c.from_epoch} to {c.to_epoch}: {cause.facts}. It carries "
                 f"{ledger.scaled_share.estimate:.0%} of the rise; temperature scaling cannot undo this."),
        evidence={**_interval_evidence("scaled_loss_change", scaled), **_interval_evidence("macro_f1_change", f1),
                  "scaled_share": ledger.scaled_share.estimate},
        thresholds={"scaled_loss_change_ci_low": 0.0, "macro_f1_change_ci_high": 0.0},
        next_steps=(f"This is real overfitting: stop earlier ({case.pick('lowest loss after temperature scaling')} "
                    f"has the lowest loss after scaling, {case.pick('highest macro F1')} the best macro F1).",
                    "Regularise: weight decay, dropout, data augmentation or more data; lower the learning rate or "
                    "shorten the schedule.",
                    case.weight_decay_advice),
        figure=FigureAnchor.CALIBRATION,
    )


def class_weight_amplification(case: Case) -> Finding | None:
    """The class weights add to the rise beyond noise (dL minus the unweighted change, its interval above 0)."""
    cause = case.counted(Cause.CLASS_WEIGHTS)
    if cause is None:
        return None
    ledger, analysis = case.comparison.ledger, case.analysis
    names = tuple(analysis.classes[k] for k in cause.classes)
    shares = analysis.class_shares
    chosen = list(cause.classes)
    unweighted = ledger.unweighted_loss_change
    named = (f" {_classes_text(names, 'holds', 'hold', start=True)} {shares.frequency_share[chosen].sum():.1%} of the "
             f"items but {shares.weight_share[chosen].sum():.1%} of the loss weight, and most of what the weights add "
             f"(classes named until they reach {case.config.min_class_share:.0%} of it).") if names else ""
    return Finding(
        id=FindingKind.CLASS_WEIGHT_AMPLIFICATION.value,
        severity=Severity.HIGH if cause.leads else Severity.MEDIUM,
        score=ledger.class_weight_share.estimate,
        # "fell" only when the unweighted change's interval is below 0; "did not rise" when it includes 0
        title=("Class weights make the loss rise: without them it "
               + ("fell" if unweighted.below_zero else "rose less" if unweighted.above_zero else "did not rise")
               + f" ({unweighted.estimate:+.4f}, {ci_text(unweighted)})"),
        summary=f"{cause.facts}.{named}",
        classes=names,
        evidence={**_interval_evidence("unweighted_loss_change", unweighted),
                  **_interval_evidence("class_weight_share", ledger.class_weight_share),
                  "weight_share": float(shares.weight_share[chosen].sum()),
                  "frequency_share": float(shares.frequency_share[chosen].sum())},
        thresholds={"class_weight_share_ci_low": 0.0},
        next_steps=("Judge checkpoints by the unweighted loss or macro F1 as well as the weighted loss "
                    f"({case.pick('highest macro F1')} by macro F1).",
                    "Soften the class weights (e.g. the square root of inverse frequency) or replace them with "
                    "class-balanced sampling."),
        figure=FigureAnchor.LOSS_SHARES,
    )


def class_collapse(case: Case) -> Finding | None:
    """A class's recall fell beyond its interval (by min_recall_drop) while accuracy held."""
    cause = case.counted(Cause.CLASS_COLLAPSE)
    if cause is None:
        return None
    analysis, ledger = case.analysis, case.comparison.ledger
    names = tuple(analysis.classes[k] for k in cause.classes)
    first = cause.classes[0]
    recall = ledger.recall_changes[first]
    return Finding(
        id=FindingKind.CLASS_COLLAPSE.value,
        severity=Severity.HIGH,
        score=cause.share.estimate,
        title=f"{_classes_text(names, 'collapses', 'collapse', start=True)} while accuracy holds: recall "
              f"{recall.estimate:+.0%}",
        summary=f"{cause.facts}.",
        classes=names,
        evidence={**_interval_evidence("recall_change", recall), **_interval_evidence("share", cause.share),
                  **_interval_evidence("accuracy_change", ledger.accuracy_change)},
        thresholds={"recall_change_ci_high": 0.0, "accuracy_change_ci_low": 0.0},
        next_steps=(f"Pick the checkpoint by macro F1 ({case.pick('highest macro F1')}) or by {names[0]}'s recall.",
                    f"Find why {_classes_text(names)} lost its training signal: its share of the training data, "
                    "sampling, augmentation, or a change in the data pipeline."),
        figure=FigureAnchor.CONFUSION,
    )


def learned_confusion(case: Case) -> Finding | None:
    """The share of class c's items predicted as c' grew beyond its interval and those items carry a material
    share of the rise: a confusion learned in training (noisy training labels, ambiguous classes)."""
    cause = case.counted(Cause.LEARNED_CONFUSION)
    if cause is None:
        return None
    analysis, ledger, config = case.analysis, case.comparison.ledger, case.config
    top = next(k for k in ledger.confusions if (k.true_class, k.predicted_class) == cause.pairs[0])
    source, target = analysis.classes[top.true_class], analysis.classes[top.predicted_class]
    return Finding(
        id=FindingKind.LEARNED_CONFUSION.value,
        severity=Severity.HIGH,
        score=cause.share.estimate,
        title=f"The model learned to predict {target} for {source}: {top.share_before:.0%} → {top.share_after:.0%} "
              f"of {source}'s items",
        summary=(f"{cause.facts}. The validation items of {source} are labelled right: the confusion grew in "
                 "training, so they are not called label errors."),
        classes=tuple(analysis.classes[k] for k in cause.classes),
        evidence={**_interval_evidence("confusion_growth", top.growth), **_interval_evidence("share", top.share)},
        thresholds={"confusion_growth": config.min_confusion_growth, "confusion_growth_ci_low": 0.0,
                    "share": config.min_confusion_share, "share_ci_low": 0.0},
        next_steps=(f"Check the TRAINING labels of {source} and {target}: a share of {source}'s training items may be "
                    f"labelled {target}; relabel or drop them.",
                    *((f"Or {source} lost its training signal (fewer {source} items in what the model trained on): "
                       f"check {source}'s share of the training stream per epoch; a training subset (--train-data) "
                       "tells the two apart.",) if cause.undecided else ()),
                    f"Look at the features that separate {source} from {target}, and pick the checkpoint by macro F1 "
                    f"({case.pick('highest macro F1')}) meanwhile."),
        figure=FigureAnchor.CONFUSION,
        item_ids=_training_candidates(case, cause),
    )


def _training_candidates(case: Case, cause: CauseAssessment) -> tuple[str, ...]:
    """The training-subset ids behind a learned confusion read as label noise: items labelled c' placed in c."""
    if cause.reading is not PairReading.LABEL_NOISE:
        return ()
    placed = case.comparison.training.evidence_for(cause.pairs[0]).train_indices
    return tuple(str(case.analysis.training.ids[i]) for i in placed[:case.config.max_listed_items])


def class_underrepresented(case: Case) -> Finding | None:
    """A validation confusion c -> c' grew, and the training subset shows c's own items drifting to c' (or c rare
    in it) with no excess of mislabelled-looking items: c lost its training signal; its labels are clean."""
    cause = case.counted(Cause.CLASS_UNDERREPRESENTED)
    if cause is None:
        return None
    analysis, ledger = case.analysis, case.comparison.ledger
    x, y = cause.pairs[0]
    top = next(k for k in ledger.confusions if (k.true_class, k.predicted_class) == (x, y))
    signal = case.comparison.training.signal_for(x, y)
    source, target = analysis.classes[x], analysis.classes[y]
    return Finding(
        id=FindingKind.CLASS_UNDERREPRESENTED.value,
        severity=Severity.HIGH,
        score=cause.share.estimate,
        title=f"{source} lost its training signal: {top.share_before:.0%} → {top.share_after:.0%} of its validation "
              f"items predicted {target}, {signal.drift_before:.0%} → {signal.drift_after:.0%} of its training items",
        summary=f"{cause.facts}. The training labels do not explain this: {source} is under-represented in training.",
        classes=(source, target),
        evidence={**_interval_evidence("confusion_growth", top.growth), **_interval_evidence("share", cause.share),
                  **_interval_evidence("training_drift_change", signal.drift_change),
                  **_interval_evidence("training_label_excess",
                                       case.comparison.training.evidence_for((x, y)).excess)},
        thresholds={"confusion_growth": case.config.min_confusion_growth, "training_drift_change_ci_low": 0.0,
                    "training_label_excess": case.config.min_training_label_excess},
        next_steps=(f"Restore {source}'s share of the training data: its sampling weight, the sampler or data "
                    "pipeline that thinned it, or class-balanced sampling.",
                    f"Pick the checkpoint by macro F1 ({case.pick('highest macro F1')}) meanwhile."),
        figure=FigureAnchor.TRAINING,
    )


def memorised_training_labels(case: Case) -> Finding | None:
    """Training-subset items placed in another class than their label over the epochs (AUM < 0) that the model
    fits by the last epoch: labels it learned by heart (noisy labels, Arpit et al. 2017; Pleiss et al. 2020)."""
    training = case.analysis.training
    if not case.rise or training is None or training.memorised.n_memorised == 0:
        return None
    memorised = training.memorised
    fit = memorised.fit_from >= 0
    indices = memorised.indices[fit]
    ids = tuple(str(training.ids[i]) for i in indices[:case.config.max_listed_items])
    names = case.analysis.classes
    pairs: dict[str, int] = {}
    for i, competitor in zip(indices, memorised.competitor[fit]):
        key = f"labelled {names[training.labels[i]]}, placed in {names[competitor]}"
        pairs[key] = pairs.get(key, 0) + 1
    common = sorted(pairs.items(), key=lambda kv: -kv[1])[:3]
    late = [case.epoch(int(e)) for e in memorised.fit_from[fit]]
    return Finding(
        id=FindingKind.MEMORISED_TRAINING_LABELS.value,
        severity=Severity.MEDIUM,
        score=len(indices) / training.n_items,
        title=f"{len(indices)} training-subset items were learned by heart against the model's own reading",
        summary=(f"Of the {training.n_items} training-subset items, {len(memorised.indices)} have a negative area under "
                 f"the margin over the epochs (threshold 0: on average the model placed them in another class), and "
                 f"{len(indices)} of those are predicted as labelled by the last epoch, fit from epoch "
                 f"{min(late)} at the earliest and {int(np.median(late))} at the median: candidates for wrong training "
                 "labels. Most common: " + "; ".join(f"{key} ({n})" for key, n in common)
                 + f". Ids: {ids_text(ids, len(indices))}."),
        classes=tuple(dict.fromkeys(names[training.labels[i]] for i in indices)),
        evidence={"n_memorised": float(len(indices)), "n_negative_aum": float(len(memorised.indices)),
                  "share_of_subset": len(indices) / training.n_items},
        thresholds={"area_under_margin": 0.0},
        next_steps=(f"Audit these training labels: {ids_text(ids, len(indices))}.",
                    "Noisy training labels that the model memorises late: stop before it fits them (early stopping), "
                    "or use a noise-robust loss or label smoothing."),
        figure=FigureAnchor.TRAINING,
        item_ids=ids,
    )


def train_validation_leakage(case: Case) -> Finding | None:
    """Validation items duplicating training-subset items (same input bytes, or the same outputs at every epoch):
    their loss says how well the model remembers, not how it generalises. Fires with or without a rise."""
    training = case.analysis.training
    if training is None or len(training.leakage.indices) == 0:
        return None
    leakage, analysis, c = training.leakage, case.analysis, case.comparison
    flagged = leakage.indices
    rest = np.setdiff1d(np.arange(len(analysis.labels)), flagged)
    weights = analysis.class_weights
    losses = {name: weighted_loss(analysis.labels[items], analysis.records[c.to_index].nll[items], weights)
              for name, items in (("leaked", flagged), ("rest", rest)) if len(items)}
    ids = tuple(str(analysis.ids[i]) for i in flagged[:case.config.max_listed_items])
    how = (f"{len(leakage.by_input_hash)} by identical input bytes" if leakage.input_hashes_known
           else "input bytes not compared (no inputs in predictions mode)")
    share = len(flagged) / len(analysis.labels)
    rest_text = f", the other {len(rest)} items {losses['rest']:.4f}" if "rest" in losses else ""
    return Finding(
        id=FindingKind.TRAIN_VALIDATION_LEAKAGE.value,
        severity=Severity.HIGH,
        score=share,
        title=f"{len(flagged)} validation items ({share:.1%}) duplicate training items",
        summary=(f"{len(flagged)} of the {len(analysis.labels)} validation items are copies of training-subset items: "
                 f"{how}, {len(leakage.by_outputs)} by outputs equal to a training item's at every epoch (distance to "
                 f"the nearest training item at most {leakage.tolerance:g} of the typical distance between validation "
                 f"items). At epoch {c.to_epoch} their loss is {losses['leaked']:.4f}{rest_text}: on them the "
                 f"validation loss measures memory, not generalisation. Ids: {ids_text(ids, len(flagged))}."),
        classes=(),
        evidence={"n_leaked": float(len(flagged)), "leaked_share": share, "leaked_loss": losses["leaked"],
                  **({"rest_loss": losses["rest"]} if "rest" in losses else {})},
        thresholds={"near_duplicate_tolerance": leakage.tolerance},
        next_steps=("Remove these items from the validation set (or their copies from the training set) and "
                    "re-run: the curve of the rest is the honest one.",
                    "Deduplicate by content when splitting the data (hash the inputs before the split)."),
        figure=FigureAnchor.TRAINING,
        item_ids=ids,
    )


def batchnorm_statistics(case: Case) -> Finding | None:
    """Recomputing BatchNorm's running statistics on the training subset removes a material share of the rise
    (beyond noise): stale or skewed statistics, not the weights, carry that part."""
    modes = case.comparison.modes
    if not case.rise or modes is None or modes.recalibration_share is None:
        return None
    share, removed = modes.recalibration_share, modes.recalibration_removes
    if not removed.above_zero or share.estimate < case.config.min_recalibration_share:
        return None
    c = case.comparison
    before, after = modes.at(c.from_index), modes.at(c.to_index)
    return Finding(
        id=FindingKind.BATCHNORM_STATISTICS.value,
        severity=Severity.MEDIUM,
        score=share.estimate,
        title=f"Recomputing BatchNorm statistics removes {share.estimate:.0%} of the rise",
        summary=(f"With BatchNorm's running statistics recomputed on the training subset, the validation loss is "
                 f"{before.recalibrated_loss:.4f} at epoch {c.from_epoch} and {after.recalibrated_loss:.4f} at epoch "
                 f"{c.to_epoch} (as saved: {before.eval_loss:.4f} and {after.eval_loss:.4f}); that removes "
                 f"{removed.estimate:+.4f} of the rise ({ci_text(removed)}), {share_text(share)} (threshold "
                 f"{case.config.min_recalibration_share:.0%})."),
        evidence={**_interval_evidence("recalibration_removes", removed),
                  **_interval_evidence("recalibration_share", share)},
        thresholds={"recalibration_removes_ci_low": 0.0, "recalibration_share": case.config.min_recalibration_share},
        next_steps=("Recompute BatchNorm statistics before validating and saving (torch.optim.swa_utils.update_bn on "
                    "training batches), or use a larger batch or lower BatchNorm momentum late in training.",),
        figure=FigureAnchor.TRAINING,
    )


def validation_label_errors(case: Case) -> Finding | None:
    """Label-error candidates carry most of the rise while the other items' loss did not rise: wrong labels."""
    cause = case.counted(Cause.VALIDATION_LABELS)
    if cause is None:
        return None
    analysis = case.analysis
    ids = case.ids(cause.item_indices)
    return Finding(
        id=FindingKind.VALIDATION_LABEL_ERRORS.value,
        severity=Severity.HIGH,
        score=cause.share.estimate,
        title=f"{len(cause.item_indices)} validation labels look wrong, and they carry the rise",
        summary=(f"{cause.facts}. These items are predicted as another class, confidently after temperature "
                 f"scaling and consistently over the last epochs, while the other items improved: the model is "
                 f"more likely right than their labels. Ids: {ids_text(ids, len(cause.item_indices))}."),
        classes=tuple(analysis.classes[k] for k in cause.classes),
        evidence={**_interval_evidence("share", cause.share), "n_items": float(len(cause.item_indices))},
        thresholds={"share": case.config.min_leading_share, "share_ci_low": 0.0},
        next_steps=(f"Audit and fix these validation labels: {ids_text(ids, len(cause.item_indices))}.",
                    "Then re-run the report: the loss curve of the corrected set is the one to judge by."),
        figure=FigureAnchor.CONFIDENT_ERRORS,
        item_ids=ids,
    )


def persistent_errors(case: Case) -> Finding | None:
    """Items wrong with the same prediction over the last epochs and confident after scaling (confident-learning
    thresholds), outside a counted learned confusion or validation-label cause: label errors or hard items."""
    if not case.rise:
        return None
    named = tuple(pair for cause in (Cause.LEARNED_CONFUSION, Cause.CLASS_UNDERREPRESENTED, Cause.VALIDATION_LABELS)
                  if (counted := case.counted(cause)) for pair in counted.pairs)
    ledger = case.comparison.ledger
    flagged = ledger.flagged(tuple(pair for pair in ledger.flagged_pairs if pair not in named))
    if len(flagged.indices) == 0:
        return None
    analysis, config = case.analysis, case.config
    ids = case.ids(flagged.indices)
    window = case.comparison.candidates.epoch_indices
    return Finding(
        id=FindingKind.PERSISTENT_ERRORS.value,
        severity=Severity.LOW,
        score=flagged.share.estimate,
        title=f"{len(flagged.indices)} items are confidently wrong over the last epochs: label errors or hard items, "
              f"audit them",
        summary=(f"{len(flagged.indices)} items were wrong with the same prediction at epochs "
                 f"{', '.join(str(case.epoch(i)) for i in window)} and, after temperature scaling, as confident in it "
                 f"as their predicted class's own items are on average (at least "
                 f"{config.candidate_min_confidence:.0%}). They carry {share_text(flagged.share)} and the other "
                 f"items' loss changed {flagged.rest_change.estimate:+.4f} ({ci_text(flagged.rest_change)}). Their "
                 f"predicted classes show no more confident errors than calibrated probabilities expect, so they are "
                 f"not taken for wrong labels. Ids: "
                 f"{ids_text(ids, len(flagged.indices))}."),
        classes=tuple(dict.fromkeys(analysis.classes[k] for k in analysis.labels[flagged.indices])),
        evidence={**_interval_evidence("share", flagged.share), **_interval_evidence("rest_change", flagged.rest_change),
                  "n_items": float(len(flagged.indices))},
        thresholds={"share": config.min_leading_share},
        next_steps=(f"Audit these ids; some may be mislabelled, others hard: {ids_text(ids, len(flagged.indices))}.",),
        figure=FigureAnchor.CONFIDENT_ERRORS,
        item_ids=ids,
    )


# ----------------------------------------------------------------------------- mechanisms of a rise
def confident_errors_dominate(case: Case) -> Finding | None:
    """correct->wrong and wrong->wrong items carry at least min_wrong_share of dL."""
    if not case.rise:
        return None
    analysis, config, c = case.analysis, case.config, case.comparison
    parts = c.ledger.transition_parts
    change = c.ledger.loss_change.estimate
    shares = np.array([p.estimate for p in parts]) / change
    wrong_share = float(shares[CORRECT_TO_WRONG] + shares[WRONG_TO_WRONG])
    if wrong_share < config.min_wrong_share:
        return None
    d = analysis.decomposition
    counts = d.item_counts.sum(axis=0)
    listed = tuple(e.id for e in analysis.confident_errors[:config.max_listed_items])
    first, last = analysis.epochs[c.from_index].calibration, analysis.epochs[c.to_index].calibration
    entropy = (f" Mean entropy of wrong predictions {first.mean_entropy_wrong:.3f} → "
               f"{last.mean_entropy_wrong:.3f} nats." if np.isfinite(first.mean_entropy_wrong) else "")
    return Finding(
        id=FindingKind.CONFIDENT_ERRORS_DOMINATE.value,
        severity=Severity.MEDIUM,
        score=wrong_share,
        title=f"Wrong predictions carry {wrong_share:.0%} of the loss rise"
              + (" while correct ones improved" if shares[CORRECT_TO_CORRECT] < 0 else ""),
        summary=(f"Of the loss change {change:+.4f}, items wrong at epoch {c.to_epoch} carry {wrong_share:.0%} "
                 f"(threshold {config.min_wrong_share:.0%}): correct→wrong {shares[CORRECT_TO_WRONG]:.0%} "
                 f"({counts[CORRECT_TO_WRONG]} items, part {ci_text(parts[CORRECT_TO_WRONG])}), wrong→wrong "
                 f"{shares[WRONG_TO_WRONG]:.0%} ({counts[WRONG_TO_WRONG]} items, part "
                 f"{ci_text(parts[WRONG_TO_WRONG])}). The top 1% of items carry {d.top_1_percent_share:.0%} and the "
                 f"top 5% {d.top_5_percent_share:.0%}.{entropy} Largest: {', '.join(listed[:IDS_IN_TEXT])} "
                 "(see the confident-errors table)."),
        evidence={**{f"share_{name.replace('->', '_to_')}": float(s) for name, s in zip(TRANSITIONS, shares)},
                  "wrong_share": wrong_share, "top_1_percent_share": d.top_1_percent_share,
                  "top_5_percent_share": d.top_5_percent_share},
        thresholds={"wrong_share": config.min_wrong_share},
        next_steps=("Penalise confident mistakes: label smoothing or focal loss.", case.weight_decay_advice,
                    f"If decisions are what you deploy, select by accuracy or macro F1 "
                    f"({case.pick('highest macro F1')})."),
        figure=FigureAnchor.DECOMPOSITION,
        item_ids=listed,
    )


def class_concentration(case: Case) -> Finding | None:
    """At most max_concentrated_classes classes carry min_class_share of dL, well beyond their share of items."""
    if not case.rise:
        return None
    analysis, config, ledger = case.analysis, case.config, case.comparison.ledger
    shares = np.array([s.estimate for s in ledger.class_shares])
    order = np.argsort(-shares, kind="stable")
    k = int(np.searchsorted(np.cumsum(shares[order]), config.min_class_share)) + 1
    if k > config.max_concentrated_classes or k > len(order):
        return None
    chosen = tuple(int(i) for i in order[:k])
    part, share = ledger.classes_part(chosen)
    frequency = float(analysis.class_shares.frequency_share[list(chosen)].sum())
    ratio = share.estimate / frequency
    if ratio < config.min_concentration_ratio or not share.above_zero:
        return None
    names = tuple(analysis.classes[c] for c in chosen)
    return Finding(
        id=FindingKind.CLASS_CONCENTRATION.value,
        severity=Severity.MEDIUM,
        score=share.estimate,
        title=f"{_classes_text(names, 'carries', 'carry', start=True)} {share.estimate:.0%} of the loss rise",
        summary=(f"{_classes_text(names, 'holds', 'hold', start=True)} {frequency:.0%} of the items but "
                 f"{share.estimate:.0%} of the loss change (CI {share.low:.0%} to {share.high:.0%}; threshold "
                 f"{config.min_class_share:.0%} within {config.max_concentrated_classes} classes; ratio {ratio:.1f}, "
                 f"threshold {config.min_concentration_ratio:.1f}). "
                 + "; ".join(f"{analysis.classes[c]}: share {shares[c]:.0%}" for c in chosen) + "."),
        classes=names,
        evidence={"class_share": share.estimate, "class_share_ci_low": share.low, "frequency_share": frequency,
                  "concentration_ratio": ratio, "n_classes": float(k)},
        thresholds={"class_share": config.min_class_share, "concentration_ratio": config.min_concentration_ratio,
                    "n_classes": float(config.max_concentrated_classes), "class_share_ci_low": 0.0},
        next_steps=(f"Look at the errors of {_classes_text(names)} (confusion matrix rows, the confident-errors "
                    "table).",
                    f"If these classes matter, select the checkpoint by macro F1 ({case.pick('highest macro F1')})."),
        figure=FigureAnchor.DECOMPOSITION,
    )


def _growth(before: float, after: float) -> float:
    """after / before - 1; from 0, any rise is infinite growth."""
    if before > 0:
        return after / before - 1.0
    return float("inf") if after > 0 else 0.0


def logit_growth(case: Case) -> Finding | None:
    """Median logit norm and absolute margin grew over the rise while predictions flipped less often."""
    if not case.rise:
        return None
    analysis, config, c = case.analysis, case.config, case.comparison
    first, last = analysis.epochs[c.from_index], analysis.epochs[c.to_index]
    norm_growth = _growth(first.logits.median_logit_norm, last.logits.median_logit_norm)
    margin_growth = _growth(first.logits.median_absolute_margin, last.logits.median_absolute_margin)
    split = max(c.from_index, 1)       # flips up to the first epoch compared against flips after it
    before, after = analysis.flip_rates[:split], analysis.flip_rates[split:c.to_index]
    if norm_growth < config.min_norm_growth or margin_growth < config.min_margin_growth \
            or (len(after) and after.mean() >= before.mean()):
        return None
    thresholds = {"norm_growth": config.min_norm_growth, "margin_growth": config.min_margin_growth}
    evidence = {"median_logit_norm_first": first.logits.median_logit_norm,
                "median_logit_norm_last": last.logits.median_logit_norm, "norm_growth": norm_growth,
                "median_absolute_margin_first": first.logits.median_absolute_margin,
                "median_absolute_margin_last": last.logits.median_absolute_margin, "margin_growth": margin_growth}
    flips = ""
    if len(after):
        evidence |= {"flip_rate_before": float(before.mean()), "flip_rate_after": float(after.mean())}
        thresholds["flip_rate_after"] = float(before.mean())
        flips = f" Predictions flipped less: {before.mean():.2%} → {after.mean():.2%} of items per epoch."
    return Finding(
        id=FindingKind.LOGIT_GROWTH.value,
        severity=Severity.LOW,
        score=norm_growth,
        title=f"Logits keep growing: median norm +{norm_growth:.0%}, median |margin| +{margin_growth:.0%}",
        summary=(f"From epoch {first.epoch} to {last.epoch} the median centred-logit norm went "
                 f"{first.logits.median_logit_norm:.2f} → {last.logits.median_logit_norm:.2f} (threshold "
                 f"+{config.min_norm_growth:.0%}) and the median absolute margin "
                 f"{first.logits.median_absolute_margin:.2f} → {last.logits.median_absolute_margin:.2f} (threshold "
                 f"+{config.min_margin_growth:.0%}).{flips} Larger logits make every mistake cost more without "
                 f"changing the argmax."),
        evidence=evidence,
        thresholds=thresholds,
        next_steps=("Cap logit growth: weight decay, LogitNorm or label smoothing.", case.weight_decay_advice,
                    f"Lower the learning rate late in training, or stop near epoch {first.epoch}."),
        figure=FigureAnchor.LOGITS,
    )


def rise_after_lr_event(case: Case) -> Finding | None:
    """The rise begins within lr_event_window checkpoints after a learning-rate drop, restart or warm-up
    (diagnose.training_events): a coincidence in time the training setup shows."""
    if not case.training_events:
        return None
    config, best = case.config, case.epoch(case.comparison.from_index)
    tie = max(case.training_events, key=lambda t: abs(t.event.relative_change))
    e = tie.event
    return Finding(
        id=FindingKind.RISE_AFTER_LR_EVENT.value,
        severity=Severity.MEDIUM,
        score=abs(e.relative_change),
        title=f"The rise begins right after an LR {e.kind.value} (epoch {e.from_epoch} → {e.to_epoch})",
        summary=" ".join(training_event_text(t, config, case.comparison) for t in case.training_events),
        evidence={"relative_lr_change": abs(e.relative_change), "checkpoints_to_rise": tie.checkpoints_to_rise,
                  "lr_before": e.lr_before[0], "lr_after": e.lr_after[0],    # an event has a group with both
                  "rise_onset_epoch": tie.rise_onset_epoch},
        thresholds={"relative_lr_change": config.min_lr_change, "checkpoints_to_rise": config.lr_event_window},
        next_steps=tuple(dict.fromkeys(training_event_step(t, best) for t in case.training_events)),
        figure=FigureAnchor.CURVES,
    )


def noise(case: Case) -> Finding | None:
    """The loss rose but its interval includes 0: not resolved with this many items; nothing else is claimed."""
    c = case.comparison
    if c.status is not Status.UNRESOLVED:
        return None
    ledger = c.ledger
    totals = ledger.totals
    intervals = {"loss_change": ledger.loss_change, "accuracy_change": ledger.accuracy_change,
                 "macro_f1_change": ledger.macro_f1_change}
    n_items = len(case.analysis.labels)
    scale = c.scale_to_resolve
    return Finding(
        id=FindingKind.NOISE.value,
        severity=Severity.MEDIUM,
        score=0.0,
        title=f"The rise is within noise: not resolved with n = {n_items} items",
        summary=(f"From epoch {c.from_epoch} to {c.to_epoch}, the loss change's {totals.confidence_level:.0%} "
                 f"bootstrap interval ({totals.n_resamples} resamples of {totals.n_units} {totals.resampled_unit}) "
                 f"contains zero: "
                 + "; ".join(f"{name.replace('_', ' ')} {i.estimate:+.4f} [{i.low:+.4f}, {i.high:+.4f}]"
                             for name, i in intervals.items())
                 + f"; {c.resolution_text(n_items)}."),
        evidence={**_interval_evidence("loss_change", ledger.loss_change),
                  **_interval_evidence("accuracy_change", ledger.accuracy_change),
                  **_interval_evidence("macro_f1_change", ledger.macro_f1_change),
                  **({"items_to_resolve": float(np.ceil(n_items * scale))} if scale else {})},
        thresholds={"loss_change_ci_low": 0.0},
        next_steps=("Don't act on this difference: enlarge the validation set or compare several seeds, then look "
                    "again.",),
        figure=FigureAnchor.CURVES,
    )


def logged_loss_mismatch(case: Case, reconciliation) -> Finding | None:
    """The training log's validation loss is not the loss of these checkpoints on this data; when a reduction of
    the same predictions reproduces it, the finding names it and how far the logged curve is off at the best epoch."""
    if reconciliation is None or reconciliation.agrees:
        return None
    rows, key, config = reconciliation.rows, reconciliation.key, case.config
    worst = rows.loc[rows["relative_difference"].idxmax()]
    chosen = reconciliation.explained_by
    matches = train_mode_matches(reconciliation, case.comparison, case.analysis, config)
    in_train_mode = chosen is None and bool(matches) and all(m.matches for m in matches)
    explanation = f"It matches {train_mode_text(matches)}" if in_train_mode else reconciliation.explanation_text
    summary = (f"At {key} {int(worst[key])} the training log says {worst['logged_val_loss']:.4f}, the checkpoint "
               f"gives {worst['recomputed_loss']:.4f} on this validation set ({reconciliation.n_matched} {key}s "
               f"compared, tolerance {config.logged_loss_tolerance:.0e} relative). "
               f"{explanation}.")
    evidence = {"max_relative_difference": reconciliation.max_relative_difference,
                "n_matched": reconciliation.n_matched,
                "logged_val_loss": float(worst["logged_val_loss"]), "recomputed_loss": float(worst["recomputed_loss"])}
    thresholds = {"max_relative_difference": config.logged_loss_tolerance}
    if chosen is None:
        next_steps = (*(("Call model.eval() before validating (and model.train() after): the logged curve is the "
                         "train-mode loss.",) if in_train_mode else ()),
                      "Fix the logged loss before reading its curve: reduce as your loss does (sum of weighted NLL "
                      "over the sum of weights, over all items), validate in eval mode, and log the weights you save.",
                      "Judge the run by the recomputed curve in this report meanwhile.")
    else:
        best = rows.loc[rows[key] == reconciliation.best].iloc[0]
        picked = "" if reconciliation.best_logged == reconciliation.best else \
            (f" The logged curve is lowest at {key} {reconciliation.best_logged}, the recomputed one at {key} "
             f"{reconciliation.best}: choosing by the log picks another checkpoint.")
        summary += (f" Compare epochs by the recomputed loss (this report's curve): it is the loss itself over the "
                    f"whole validation set, which the logged value is not; at the best {key} ({reconciliation.best}, "
                    f"recomputed {best['recomputed_loss']:.4f}) the logged curve is off by "
                    f"{reconciliation.best_offset:+.2%} ({best['logged_val_loss']:.4f}).{picked}")
        evidence.update({"reduction_relative_difference": reconciliation.difference(chosen.name),
                         "logged_offset_at_best": reconciliation.best_offset})
        thresholds["reduction_relative_difference"] = reconciliation.reproduce_tolerance
        next_steps = (f"Log the loss as it is defined, {reconciliation.candidate('exact').formula} over the whole "
                      f"validation set: add up the weighted NLLs and the weights over the batches and divide once "
                      f"(with a masked loss: sum of w[y]*nll*mask and sum of w[y]*mask), instead of "
                      f"{chosen.formula}.",
                      "Judge the run by the recomputed curve in this report meanwhile.")
    if (chosen is None and not in_train_mode) or (chosen is not None and chosen.per_batch):
        summary += f" {reconciliation.batch_note[0].upper()}{reconciliation.batch_note[1:]}."
    return Finding(
        id=FindingKind.LOGGED_LOSS_MISMATCH.value,
        severity=Severity.HIGH,
        score=float(min(reconciliation.max_relative_difference, 1e6)),
        title=f"The logged validation loss differs from the recomputed one by up to "
              f"{reconciliation.max_relative_difference:.1%}"
              + ("" if chosen is None else f": it is reproduced by {chosen.name.replace('_', ' ')}"),
        summary=summary,
        evidence=evidence,
        thresholds=thresholds,
        next_steps=next_steps,
        figure=FigureAnchor.TRAIN_LOG,
    )


RULES = (nll_overfit_accuracy_holds, overconfidence, genuine_degradation, class_weight_amplification, class_collapse,
         learned_confusion, class_underrepresented, validation_label_errors, persistent_errors,
         memorised_training_labels, train_validation_leakage, batchnorm_statistics, confident_errors_dominate,
         class_concentration, logit_growth, rise_after_lr_event, noise)
SEVERITY_ORDER = {Severity.HIGH: 0, Severity.MEDIUM: 1, Severity.LOW: 2}


def diagnose(analysis: RunAnalysis, config: DiagnosisConfig = DiagnosisConfig(), reconciliation=None,
             from_index: int | None = None, to_index: int | None = None, modes=None) -> Diagnosis:
    """Compare two epochs (lowest loss -> last by default), assess every cause, and return the findings that fire
    (highest severity and score first) with the verdict; `reconciliation` compares a training log, `modes`
    (analyze.modes.ModeAnalysis) train mode with eval mode at the compared epochs."""
    comparison = compare(analysis, config, from_index, to_index, modes)
    assessments = assess_causes(analysis, comparison, config, reconciliation)
    events = lr_events(analysis.learning_rates, config.min_lr_change)
    ties = tie_to_lr_events(comparison, events, [e.epoch for e in analysis.epochs], config.lr_event_window)
    case = Case(analysis, comparison, {a.cause: a for a in assessments}, config, ties)
    found = [f for rule in RULES if (f := rule(case)) is not None]
    if (mismatch := logged_loss_mismatch(case, reconciliation)) is not None:
        found.append(mismatch)
    findings = tuple(sorted(found, key=lambda f: (SEVERITY_ORDER[f.severity], -f.score)))
    return Diagnosis(comparison, findings, decide(analysis, comparison, assessments, config, ties), events)
