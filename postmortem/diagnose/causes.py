"""The candidate causes of a loss rise, each assessed on the one comparison: its share of the rise with its
interval, whether it counts, what it names, and the numbers (beside their thresholds) that decided it.

A cause counts only when the rise itself is beyond noise and the cause's own interval excludes 0
(../shared/DESIGN.md, "Deciding the cause"):
- calibration: the change of L - L_TS is above 0 (scaling removes part of the rise);
- genuine degradation: the change of L_TS is above 0, or macro F1 fell beyond its interval;
- class weights: dL minus the unweighted change is above 0; it leads when the unweighted loss did not rise;
- class collapse: a class's recall fell beyond its interval while accuracy held, and its items carry part
  of the rise, with no single confusion taking most of the fall (its items spread over other classes);
- learned confusion: the share of c's items predicted c' grew beyond its interval and those items carry a
  material share of the rise (their validation labels are right: the confusion was learned in training);
  when c's recall fell, this one confusion takes at least min_collapse_explained of the fall;
- validation labels: a predicted class shows more confident wrong predictions than its calibrated (scaled,
  cross-fitted) probabilities expect, beyond noise and by min_miss_ratio, and the label-error candidates
  predicted as that class (outside learned confusions) carry most of the rise while the other items' loss
  did not rise; then the labels lead. Otherwise candidates are only items to audit: on clean labels,
  confident errors are as many as calibration expects, however much of the rise they carry;
- logging mismatch: the training log's validation loss is not the loss of these checkpoints (no share of dL).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from ..analyze.bootstrap import Interval
from ..analyze.run import RunAnalysis
from .comparison import Comparison, Status
from .config import DiagnosisConfig
from .wording import ci_text, listed_text, share_text

__all__ = ["Cause", "CauseAssessment", "assess_causes", "label_error_pairs", "LEADING_CAUSES"]


class Cause(str, enum.Enum):
    """A cause the verdict can name; the value is its name in metrics.json."""

    CALIBRATION = "calibration"
    """The model's confidence grew, not its errors: temperature scaling removes the counted part of the rise."""
    GENUINE_DEGRADATION = "genuine_degradation"
    """The model got worse: the temperature-scaled loss rose, or macro F1 fell."""
    CLASS_COLLAPSE = "class_collapse"
    """One class's recall fell while accuracy held."""
    LEARNED_CONFUSION = "learned_confusion"
    """The model learned to predict c for items of c' (noisy training labels or ambiguous classes)."""
    VALIDATION_LABELS = "validation_labels"
    """Wrong validation labels: confidently contradicted items carry the rise while the rest improve."""
    CLASS_WEIGHTS = "class_weights"
    """The loss's class weights magnify a change the unweighted loss does not show."""
    LOGGING_MISMATCH = "logging_mismatch"
    """The logged validation loss is not the loss of these checkpoints on this data."""


# Causes that lead when they count and their `leads` condition holds, in this order (a tie within the last
# tier goes to the larger share): wrong validation labels carrying most of the rise while the rest did not rise;
# class weights when the unweighted loss did not rise; a learned confusion or a collapsed class carrying most of
# the rise. These say where the rise comes from and why; calibration and genuine degradation say how the loss
# moved on those same items, so they lead only when nothing more specific carries most of it.
LEADING_CAUSES = (Cause.VALIDATION_LABELS, Cause.CLASS_WEIGHTS, (Cause.LEARNED_CONFUSION, Cause.CLASS_COLLAPSE))


@dataclass(frozen=True)
class CauseAssessment:
    """One cause on one comparison. `share` is its share of dL (None for a cause with no part of dL); `facts`
    the numbers behind it, each beside its threshold, as a sentence; `leads` whether it leads when it counts."""

    cause: Cause
    counted: bool
    share: Interval | None
    facts: str
    classes: tuple[int, ...] = ()
    item_indices: tuple[int, ...] = ()
    pairs: tuple[tuple[int, int], ...] = ()
    leads: bool = False


def _calibration(c: Comparison, rise: bool) -> CauseAssessment:
    ledger = c.ledger
    part, share = ledger.calibration_part, ledger.calibration_share
    counted = rise and share.above_zero
    return CauseAssessment(Cause.CALIBRATION, counted, share,
                           f"L − L_TS changed {part.estimate:+.4f} ({ci_text(part)}): {share_text(share)}")


def _genuine_degradation(c: Comparison, config: DiagnosisConfig, rise: bool) -> CauseAssessment:
    ledger = c.ledger
    scaled, f1 = ledger.scaled_loss_change, ledger.macro_f1_change
    f1_fell = f1.below_zero and -f1.estimate >= config.min_macro_f1_drop
    counted = rise and (scaled.above_zero or f1_fell)
    facts = (f"scaled-loss change {scaled.estimate:+.4f}, {ci_text(scaled)}; macro F1 change {f1.estimate:+.4f}, "
             f"{ci_text(f1)} (counts when below 0 and a fall ≥ {config.min_macro_f1_drop})")
    return CauseAssessment(Cause.GENUINE_DEGRADATION, counted, ledger.scaled_share, facts)


def _named_classes(effects: np.ndarray, amplified: np.ndarray, config: DiagnosisConfig) -> tuple[int, ...]:
    """The classes weighted above their frequency with the largest positive effects, until they reach
    min_class_share of those classes' total (at most max_concentrated_classes). A class weighted below its
    frequency whose loss fell also adds to dL - dL_unweighted (its fall counts less), but its weight magnifies
    nothing, so it is not named."""
    order = [int(k) for k in np.argsort(-effects, kind="stable") if effects[k] > 0 and amplified[k]]
    total, named, reached = float(effects[order].sum()) if order else 0.0, [], 0.0
    for k in order[:config.max_concentrated_classes]:
        named.append(k)
        reached += effects[k]
        if reached >= config.min_class_share * total:
            break
    return tuple(named)


def _class_weights(analysis: RunAnalysis, c: Comparison, config: DiagnosisConfig, rise: bool) -> CauseAssessment:
    ledger = c.ledger
    part, share, unweighted = ledger.class_weight_part, ledger.class_weight_share, ledger.unweighted_loss_change
    counted = rise and share.above_zero
    facts = (f"weighted change {ledger.loss_change.estimate:+.4f} ({ci_text(ledger.loss_change)}) against unweighted "
             f"{unweighted.estimate:+.4f} ({ci_text(unweighted)}); the weights add {part.estimate:+.4f} ({ci_text(part)}): "
             f"{share_text(share)}")
    return CauseAssessment(Cause.CLASS_WEIGHTS, counted, share, facts,
                           classes=_named_classes(ledger.class_weight_effects,
                                                  np.nan_to_num(analysis.class_shares.amplification) > 1, config),
                           leads=not unweighted.above_zero)


def _grown_pairs(c: Comparison, config: DiagnosisConfig) -> list:
    """Followed confusions c -> c' whose share of c grew beyond noise (by min_confusion_growth) and whose items
    carry a material share of the rise (min_confusion_share, beyond noise)."""
    return [k for k in c.ledger.confusions
            if k.growth.above_zero and k.growth.estimate >= config.min_confusion_growth
            and k.share.above_zero and k.share.estimate >= config.min_confusion_share]


def _collapsed_classes(c: Comparison, config: DiagnosisConfig, grown: list) -> list[int]:
    """Classes whose recall fell beyond noise (by min_recall_drop), whose items carry part of the rise, and whose
    fall no single grown confusion explains (none takes min_collapse_explained of it: their items spread over
    several classes; a class one confusion explains is that learned confusion instead)."""
    ledger = c.ledger
    collapsed = []
    for k, recall in enumerate(ledger.recall_changes):
        if recall is None or not recall.below_zero or -recall.estimate < config.min_recall_drop \
                or not ledger.class_shares[k].above_zero:
            continue
        largest = max((p.growth.estimate for p in grown if p.true_class == k), default=0.0)
        if largest < config.min_collapse_explained * -recall.estimate:
            collapsed.append(k)
    return collapsed


def _learned_confusion(analysis: RunAnalysis, c: Comparison, config: DiagnosisConfig, rise: bool,
                       grown: list, collapsed: list[int]) -> CauseAssessment | None:
    """The grown confusions out of classes that did not collapse; None when no confusion is followed."""
    ledger = c.ledger
    if not ledger.confusions:
        return None
    learned = [k for k in grown if k.true_class not in collapsed]
    top = learned[0] if learned else max(ledger.confusions, key=lambda k: k.share.estimate)
    names = analysis.classes
    facts = (f"{names[top.true_class]} → {names[top.predicted_class]}: share of {names[top.true_class]} predicted "
             f"{names[top.predicted_class]} {top.share_before:.1%} → {top.share_after:.1%} (growth "
             f"{top.growth.estimate:+.1%}, {ci_text(top.growth, '+.1%')}, threshold "
             f"{config.min_confusion_growth:.0%}); those items carry {share_text(top.share)} (threshold "
             f"{config.min_confusion_share:.0%})")
    if not learned:
        return CauseAssessment(Cause.LEARNED_CONFUSION, False, top.share, facts)
    pairs = tuple((k.true_class, k.predicted_class) for k in learned)
    _, share = ledger.pairs_part(pairs)
    classes = tuple(dict.fromkeys(k for pair in pairs for k in pair))
    return CauseAssessment(Cause.LEARNED_CONFUSION, rise, share, facts, classes=classes, pairs=pairs,
                           leads=share.estimate >= config.min_leading_share)


def _class_collapse(analysis: RunAnalysis, c: Comparison, config: DiagnosisConfig, rise: bool,
                    collapsed: list[int]) -> CauseAssessment | None:
    """The collapsed classes (recall fell beyond noise, no single confusion explains it) while accuracy held."""
    if not collapsed:
        return None
    ledger = c.ledger
    accuracy_held = not ledger.accuracy_change.below_zero
    fallen = sorted(collapsed, key=lambda k: -ledger.class_shares[k].estimate)
    _, share = ledger.classes_part(tuple(fallen))
    names, first, last = analysis.classes, analysis.epochs[c.from_index].metrics, analysis.epochs[c.to_index].metrics
    facts = listed_text([
        f"{names[k]}: recall {first.recall[k]:.1%} → {last.recall[k]:.1%} (change "
        f"{ledger.recall_changes[k].estimate:+.1%}, {ci_text(ledger.recall_changes[k], '+.1%')}, threshold "
        f"−{config.min_recall_drop:.0%}), no single class taking {config.min_collapse_explained:.0%} of the fall"
        for k in fallen], "; ")
    facts += (f"; accuracy change {ledger.accuracy_change.estimate:+.2%} ({ci_text(ledger.accuracy_change, '+.2%')}); "
              f"the class{'es' if len(fallen) > 1 else ''}' items carry {share_text(share)}")
    return CauseAssessment(Cause.CLASS_COLLAPSE, rise and accuracy_held and share.above_zero, share, facts,
                           classes=tuple(fallen), leads=share.estimate >= config.min_leading_share)


def label_error_pairs(c: Comparison, config: DiagnosisConfig,
                      confusion: CauseAssessment | None) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Where wrong labels show: the predicted classes with an excess of confident wrong predictions over what
    calibrated probabilities expect, and the (label, prediction) pairs of the candidates predicted as one of them,
    outside any counted learned confusion.

    Two tiers: wrong labels are detected when some class's excess is beyond noise and at least min_miss_ratio
    times the expectation; then every class with more confident errors than expected is included, since one
    temperature fitted on noisy labels flattens all probabilities and so inflates the expectation of the classes
    that carry the noise (while clean classes fall far below theirs)."""
    misses = c.ledger.confident_misses
    detected = [m for m in misses if m.excess.above_zero and m.observed >= config.min_miss_ratio * m.expected]
    excess = tuple(m.predicted_class for m in sorted(misses, key=lambda m: m.expected - m.observed)
                   if detected and m.observed > m.expected)
    learned = confusion.pairs if confusion is not None and confusion.counted else ()
    pairs = tuple(pair for pair in c.ledger.flagged_pairs if pair[1] in excess and pair not in learned)
    return excess, pairs


def _validation_labels(analysis: RunAnalysis, c: Comparison, config: DiagnosisConfig, rise: bool,
                       confusion: CauseAssessment | None) -> CauseAssessment:
    excess, pairs = label_error_pairs(c, config, confusion)
    flagged = c.ledger.flagged(pairs)
    n = len(flagged.indices)
    misses = c.ledger.confident_misses
    worst = max(misses, key=lambda m: m.observed - m.expected) if misses else None
    names = analysis.classes
    # Claimed only when the labels are the story: otherwise the candidates are items to audit, worded neutrally
    # (an excess of confident errors also follows from a prior shift, e.g. a class up-weighted in training).
    counted = (rise and n > 0 and flagged.share.above_zero and flagged.share.estimate >= config.min_leading_share
               and not flagged.rest_change.above_zero)
    facts = ("confident wrong predictions beyond what calibrated probabilities expect: "
             + (listed_text([f"predicted {names[k]} {misses[k].observed:.0f} observed against "
                             f"{misses[k].expected:.1f} expected (excess {ci_text(misses[k].excess, '+.1f')})"
                             for k in excess]) if excess else
                f"none (largest: predicted {names[worst.predicted_class]} {worst.observed:.0f} against "
                f"{worst.expected:.1f}, excess {ci_text(worst.excess, '+.1f')})"
                if worst else "none")
             + f" (detected at {config.min_miss_ratio:.1f}× beyond noise in one class, then every class above its "
             f"expectation); {n} label-error candidates predicted as "
             f"{'those classes' if excess else 'such a class'} carry {share_text(flagged.share)} (threshold "
             f"{config.min_leading_share:.0%}); the other items' loss changed {flagged.rest_change.estimate:+.4f} "
             f"({ci_text(flagged.rest_change)}; must not rise)")
    # The classes named are those whose items carry the wrong labels: the predicted classes with an excess.
    return CauseAssessment(Cause.VALIDATION_LABELS, counted, flagged.share, facts, classes=excess,
                           item_indices=tuple(int(i) for i in flagged.indices), pairs=pairs, leads=True)


def _logging_mismatch(reconciliation, config: DiagnosisConfig) -> CauseAssessment | None:
    if reconciliation is None:
        return None
    facts = (f"logged and recomputed validation loss differ by up to {reconciliation.max_relative_difference:.2%} "
             f"(tolerance {config.logged_loss_tolerance:.0e} relative)")
    return CauseAssessment(Cause.LOGGING_MISMATCH, not reconciliation.agrees, None, facts)


def assess_causes(analysis: RunAnalysis, comparison: Comparison, config: DiagnosisConfig,
                  reconciliation=None) -> tuple[CauseAssessment, ...]:
    """Every cause that applies to this run (class weights only with unequal weights, logging only with a log)."""
    rise = comparison.status is Status.RISE
    grown = _grown_pairs(comparison, config)
    collapsed = _collapsed_classes(comparison, config, grown)
    confusion = _learned_confusion(analysis, comparison, config, rise, grown, collapsed)
    found = [_calibration(comparison, rise), _genuine_degradation(comparison, config, rise),
             _class_collapse(analysis, comparison, config, rise, collapsed), confusion,
             _validation_labels(analysis, comparison, config, rise, confusion)]
    if not np.allclose(analysis.class_weights, analysis.class_weights[0]):
        found.append(_class_weights(analysis, comparison, config, rise))
    found.append(_logging_mismatch(reconciliation, config))
    return tuple(a for a in found if a is not None)
