"""Rules: each reads one Case (the run's analysis, the comparison computed once, the cause assessments and the
thresholds) and returns a Finding or None. A threshold appears in the finding's `thresholds` under the same
name as the evidence number it was compared to.

Findings present what the verdict decided (one finding per counted cause) and the mechanisms behind a rise
(where it sits, in which classes, how the logits moved). Except for the training-log check, none fires unless
the loss rose beyond noise; when it did not resolve, only `noise` fires.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analyze.decomposition import CORRECT_TO_CORRECT, CORRECT_TO_WRONG, TRANSITIONS, WRONG_TO_WRONG
from ..analyze.run import RunAnalysis
from .causes import Cause, CauseAssessment, assess_causes
from .comparison import Comparison, Status, compare
from .config import DiagnosisConfig
from .findings import FigureAnchor, Finding, FindingKind, Severity
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


@dataclass(frozen=True)
class Diagnosis:
    """The comparison, the findings (highest severity and score first) and the verdict of one run."""

    comparison: Comparison
    findings: tuple[Finding, ...]
    verdict: Verdict


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
                    "To train better-calibrated models: label smoothing (e.g. 0.1) or focal loss; raise weight decay."),
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
                    "Regularise: raise weight decay or dropout, add data augmentation or more data; "
                    "lower the learning rate or shorten the schedule."),
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
                    f"Look at the features that separate {source} from {target}, and pick the checkpoint by macro F1 "
                    f"({case.pick('highest macro F1')}) meanwhile."),
        figure=FigureAnchor.CONFUSION,
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
    confusion, labels = case.counted(Cause.LEARNED_CONFUSION), case.counted(Cause.VALIDATION_LABELS)
    named = (confusion.pairs if confusion else ()) + (labels.pairs if labels else ())
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
        next_steps=("Penalise confident mistakes: label smoothing or focal loss; raise weight decay.",
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
        next_steps=("Cap logit growth: raise weight decay, or use LogitNorm or label smoothing.",
                    f"Lower the learning rate late in training, or stop near epoch {first.epoch}."),
        figure=FigureAnchor.LOGITS,
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
    """The training log's validation loss is not the loss of these checkpoints on this data."""
    if reconciliation is None or reconciliation.agrees:
        return None
    rows = reconciliation.rows
    worst = rows.loc[rows["relative_difference"].idxmax()]
    return Finding(
        id=FindingKind.LOGGED_LOSS_MISMATCH.value,
        severity=Severity.HIGH,
        score=float(min(reconciliation.max_relative_difference, 1e6)),
        title=f"The logged validation loss differs from the recomputed one by up to "
              f"{reconciliation.max_relative_difference:.1%}",
        summary=(f"At {reconciliation.key} {int(worst[reconciliation.key])} the training log says "
                 f"{worst['logged_val_loss']:.4f}, the checkpoint gives {worst['recomputed_loss']:.4f} on this "
                 f"validation set ({reconciliation.n_matched} epochs compared, tolerance "
                 f"{case.config.logged_loss_tolerance:.0e} relative). It matches {reconciliation.explanation_text}. "
                 f"{reconciliation.batch_note}."),
        evidence={"max_relative_difference": reconciliation.max_relative_difference,
                  "n_matched": reconciliation.n_matched,
                  "logged_val_loss": float(worst["logged_val_loss"]), "recomputed_loss": float(worst["recomputed_loss"])},
        thresholds={"max_relative_difference": case.config.logged_loss_tolerance},
        next_steps=("Fix the logged loss before reading its curve: reduce as your loss does (sum of weighted NLL "
                    "over the sum of weights, over all items), validate in eval mode, and log the weights you save.",
                    "Judge the run by the recomputed curve in this report meanwhile."),
        figure=FigureAnchor.TRAIN_LOG,
    )


RULES = (nll_overfit_accuracy_holds, overconfidence, genuine_degradation, class_weight_amplification, class_collapse,
         learned_confusion, validation_label_errors, persistent_errors, confident_errors_dominate, class_concentration,
         logit_growth, noise)
SEVERITY_ORDER = {Severity.HIGH: 0, Severity.MEDIUM: 1, Severity.LOW: 2}


def diagnose(analysis: RunAnalysis, config: DiagnosisConfig = DiagnosisConfig(), reconciliation=None,
             from_index: int | None = None, to_index: int | None = None) -> Diagnosis:
    """Compare two epochs (lowest loss -> last by default), assess every cause, and return the findings that fire
    (highest severity and score first) with the verdict; `reconciliation` compares a training log."""
    comparison = compare(analysis, config, from_index, to_index)
    assessments = assess_causes(analysis, comparison, config, reconciliation)
    case = Case(analysis, comparison, {a.cause: a for a in assessments}, config)
    found = [f for rule in RULES if (f := rule(case)) is not None]
    if (mismatch := logged_loss_mismatch(case, reconciliation)) is not None:
        found.append(mismatch)
    findings = tuple(sorted(found, key=lambda f: (SEVERITY_ORDER[f.severity], -f.score)))
    return Diagnosis(comparison, findings, decide(analysis, comparison, assessments, config))
