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
  when c's recall fell, this one confusion takes at least min_collapse_explained of the fall. With a training
  subset it stays a learned confusion when the subset shows the confusion's labels (more c'-labelled training
  items placed in c than validation items, beyond noise) or shows nothing either way; without one, it names both
  explanations it cannot tell apart (noisy training labels, or fewer c items in training);
- class underrepresented: such a confusion where the training subset shows no such labels but c's own training
  items drifting to c' too (or its training recall falling), or c far rarer in the subset than in validation:
  c lost its training signal, its labels are clean;
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
from .wording import ci_text, gap_text, listed_text, share_text

__all__ = ["Cause", "CauseAssessment", "PairReading", "assess_causes", "label_error_pairs", "train_mode_matches",
           "train_mode_text", "LEADING_CAUSES"]


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
    CLASS_UNDERREPRESENTED = "class_underrepresented"
    """A class lost its training signal (under-sampled, or rare in training): its items drift to a neighbour class
    in training as in validation, with clean training labels."""
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
LEADING_CAUSES = (Cause.VALIDATION_LABELS, Cause.CLASS_WEIGHTS,
                  (Cause.LEARNED_CONFUSION, Cause.CLASS_UNDERREPRESENTED, Cause.CLASS_COLLAPSE))


class PairReading(str, enum.Enum):
    """What the training subset says about a learned confusion c -> c'."""

    LABEL_NOISE = "label_noise"      # more c'-labelled training items placed in c than validation shows: noisy labels
    SIGNAL_LOSS = "signal_loss"      # no such labels; c's own training items drift to c' (or c is rare in training)
    NEITHER = "neither"              # neither shows beyond noise
    UNSEEN_SIGNAL = "unseen_signal"  # no such labels, and the model fits all of c's training-subset items at both
                                     # epochs (recall >= fitted_training_recall): a weakened signal could not show there


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
    undecided: bool = False       # learned confusion without a training subset: fewer c items in training would
                                  # look the same on validation data alone
    reading: PairReading | None = None   # what the training subset says of its first pair (None without one)


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
    if c.training is not None:
        facts += "; " + gap_text(c.training)
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


def _pair_reading(c: Comparison, config: DiagnosisConfig, pair: tuple[int, int],
                  analysis: RunAnalysis) -> tuple[PairReading, str]:
    """The training subset's reading of a confusion, and the numbers behind it beside their thresholds."""
    training = c.training
    names = analysis.classes
    x, y = pair
    evidence = training.evidence_for(pair)
    signal = training.signal_for(x, y)
    share_train, share_val = analysis.training.class_share[x], analysis.training.validation_class_share[x]
    ratio = share_train / share_val if share_val > 0 else float("inf")
    label_noise = evidence.excess.above_zero and evidence.excess.estimate >= config.min_training_label_excess
    drifted = signal.drift_change.above_zero and signal.drift_change.estimate >= config.min_confusion_growth
    recall_fell = signal.recall_change.below_zero and -signal.recall_change.estimate >= config.min_recall_drop
    rare = ratio <= config.max_training_share_ratio
    facts = (f"training subset: {evidence.train_share:.1%} of the items labelled {names[y]} are placed in {names[x]} "
             f"over the epochs (AUM < 0), against {evidence.validation_share:.1%} of the validation items labelled "
             f"{names[y]} (excess {evidence.excess.estimate:+.1%}, {ci_text(evidence.excess, '+.1%')}, threshold "
             f"{config.min_training_label_excess:.0%}); {names[x]}'s training items predicted {names[y]} "
             f"{signal.drift_before:.1%} → {signal.drift_after:.1%} ({ci_text(signal.drift_change, '+.1%')}, "
             f"threshold {config.min_confusion_growth:.0%}), its training recall {signal.recall_before:.1%} → "
             f"{signal.recall_after:.1%} ({ci_text(signal.recall_change, '+.1%')}); {names[x]} is {share_train:.1%} of "
             f"the training subset and {share_val:.1%} of the validation set (ratio {ratio:.2f}, threshold "
             f"{config.max_training_share_ratio:.2f})")
    if label_noise:
        return PairReading.LABEL_NOISE, facts
    if drifted or recall_fell or rare:
        return PairReading.SIGNAL_LOSS, facts
    if min(signal.recall_before, signal.recall_after) >= config.fitted_training_recall:
        return PairReading.UNSEEN_SIGNAL, facts + (f"; the model fits {names[x]}'s training items (recall at least "
                                                   f"{config.fitted_training_recall:.0%} at both epochs)")
    return PairReading.NEITHER, facts


def _learned_confusion(analysis: RunAnalysis, c: Comparison, config: DiagnosisConfig, rise: bool,
                       grown: list, collapsed: list[int]) -> tuple[CauseAssessment | None, CauseAssessment | None]:
    """The grown confusions out of classes that did not collapse, as a learned confusion and, where the training
    subset shows a class that lost its training signal instead of noisy labels, as class_underrepresented;
    (None, None) when no confusion is followed."""
    ledger = c.ledger
    if not ledger.confusions:
        return None, None
    learned = [k for k in grown if k.true_class not in collapsed]
    top = learned[0] if learned else max(ledger.confusions, key=lambda k: k.share.estimate)
    names = analysis.classes
    facts = (f"{names[top.true_class]} → {names[top.predicted_class]}: share of {names[top.true_class]} predicted "
             f"{names[top.predicted_class]} {top.share_before:.1%} → {top.share_after:.1%} (growth "
             f"{top.growth.estimate:+.1%}, {ci_text(top.growth, '+.1%')}, threshold "
             f"{config.min_confusion_growth:.0%}); those items carry {share_text(top.share)} (threshold "
             f"{config.min_confusion_share:.0%})")
    if not learned:
        return CauseAssessment(Cause.LEARNED_CONFUSION, False, top.share, facts), None
    if c.training is None:
        return _confusion_assessment(Cause.LEARNED_CONFUSION, learned, ledger, config, rise,
                                     facts + "; without a training subset, noisy training labels and fewer "
                                     f"{names[top.true_class]} items in training look the same here",
                                     undecided=True), None
    readings = {(k.true_class, k.predicted_class): _pair_reading(c, config, (k.true_class, k.predicted_class),
                                                                  analysis) for k in learned}
    lost = [k for k in learned if readings[(k.true_class, k.predicted_class)][0] is PairReading.SIGNAL_LOSS]
    labelled = [k for k in learned if k not in lost]
    confusion = _confusion_assessment(
        Cause.LEARNED_CONFUSION, labelled, ledger, config, rise,
        "; ".join([facts] + [readings[(k.true_class, k.predicted_class)][1] for k in labelled]),
        reading=readings[(labelled[0].true_class, labelled[0].predicted_class)][0]) if labelled else \
        CauseAssessment(Cause.LEARNED_CONFUSION, False, top.share, facts + "; " + readings[
            (lost[0].true_class, lost[0].predicted_class)][1])
    underrepresented = _confusion_assessment(
        Cause.CLASS_UNDERREPRESENTED, lost, ledger, config, rise,
        "; ".join(f"{names[k.true_class]} → {names[k.predicted_class]}: share of {names[k.true_class]} predicted "
                  f"{names[k.predicted_class]} {k.share_before:.1%} → {k.share_after:.1%} ({ci_text(k.growth, '+.1%')}); "
                  + readings[(k.true_class, k.predicted_class)][1] for k in lost),
        reading=PairReading.SIGNAL_LOSS) if lost else None
    return confusion, underrepresented


def _confusion_assessment(cause: Cause, confusions: list, ledger, config: DiagnosisConfig, rise: bool, facts: str,
                          undecided: bool = False, reading: PairReading | None = None) -> CauseAssessment:
    """A cause made of followed confusions c -> c': their items' share of the rise, and the classes they name."""
    pairs = tuple((k.true_class, k.predicted_class) for k in confusions)
    _, share = ledger.pairs_part(pairs)
    classes = tuple(dict.fromkeys(k for pair in pairs for k in pair))
    return CauseAssessment(cause, rise, share, facts, classes=classes, pairs=pairs,
                           leads=share.estimate >= config.min_leading_share, undecided=undecided, reading=reading)


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
    if c.training is not None:
        facts += "".join(
            f"; on the training subset {names[k]}'s recall went {signal.recall_before:.1%} → {signal.recall_after:.1%} "
            f"({ci_text(signal.recall_change, '+.1%')}): "
            + ("its own training items are lost too, so it lost its training signal" if signal.recall_change.below_zero
               else "its training items are still fit, so its validation items moved away from them")
            for k in fallen if (signal := c.training.signal_for(k)) is not None)
    return CauseAssessment(Cause.CLASS_COLLAPSE, rise and accuracy_held and share.above_zero, share, facts,
                           classes=tuple(fallen), leads=share.estimate >= config.min_leading_share)


def label_error_pairs(c: Comparison, config: DiagnosisConfig,
                      confusions: tuple[CauseAssessment | None, ...]) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Where wrong labels show: the predicted classes with an excess of confident wrong predictions over what
    calibrated probabilities expect, and the (label, prediction) pairs of the candidates predicted as one of them,
    outside any counted learned confusion (or class that lost its training signal: `confusions`).

    Two tiers: wrong labels are detected when some class's excess is beyond noise and at least min_miss_ratio
    times the expectation; then every class with more confident errors than expected is included, since one
    temperature fitted on noisy labels flattens all probabilities and so inflates the expectation of the classes
    that carry the noise (while clean classes fall far below theirs)."""
    misses = c.ledger.confident_misses
    detected = [m for m in misses if m.excess.above_zero and m.observed >= config.min_miss_ratio * m.expected]
    excess = tuple(m.predicted_class for m in sorted(misses, key=lambda m: m.expected - m.observed)
                   if detected and m.observed > m.expected)
    learned = {pair for a in confusions if a is not None and a.counted for pair in a.pairs}
    pairs = tuple(pair for pair in c.ledger.flagged_pairs if pair[1] in excess and pair not in learned)
    return excess, pairs


def _validation_labels(analysis: RunAnalysis, c: Comparison, config: DiagnosisConfig, rise: bool,
                       *confusions: CauseAssessment | None) -> CauseAssessment:
    excess, pairs = label_error_pairs(c, config, confusions)
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


def train_mode_matches(reconciliation, c: Comparison, analysis: RunAnalysis, config: DiagnosisConfig) -> tuple:
    """The compared epochs whose logged validation loss is the train-mode loss and not the eval-mode one
    (analyze.modes.match_train_mode), when the log does not agree and the passes were measured; else ()."""
    if reconciliation is None or reconciliation.agrees or c.modes is None:
        return ()
    from ..analyze.modes import match_train_mode

    rows = reconciliation.rows
    logged = dict(zip(rows[reconciliation.key].astype(int), rows["logged_val_loss"].astype(float)))
    return match_train_mode(logged, tuple(e.epoch for e in analysis.epochs), c.modes, config.train_mode_tolerance,
                            config.logged_loss_tolerance)


def train_mode_text(matches: tuple) -> str:
    """'the train-mode loss (dropout active, BatchNorm on batch statistics): at epoch 3 logged 0.61, train mode
    0.60 (± 0.01 allowed), eval mode 0.45; ...'."""
    return ("the validation loss in train mode (model.eval() not called: dropout active, BatchNorm on batch "
            "statistics): " + "; ".join(f"at epoch {m.epoch} logged {m.logged:.4f}, train mode {m.train_mode_loss:.4f} "
                                        f"(within {m.allowed:.4f} allowed), eval mode {m.eval_loss:.4f}"
                                        for m in matches))


def _logging_mismatch(reconciliation, config: DiagnosisConfig, matches: tuple) -> CauseAssessment | None:
    if reconciliation is None:
        return None
    chosen = None if reconciliation.agrees else reconciliation.explained_by
    facts = (f"logged and recomputed validation loss differ by up to {reconciliation.max_relative_difference:.2%} "
             f"(tolerance {config.logged_loss_tolerance:.0e} relative)"
             + ("" if chosen is None else f"; the log is {chosen.formula} ({chosen.name}), not the loss"))
    if chosen is None and matches and all(m.matches for m in matches):
        facts += "; the logged values are " + train_mode_text(matches)
    return CauseAssessment(Cause.LOGGING_MISMATCH, not reconciliation.agrees, None, facts)


def assess_causes(analysis: RunAnalysis, comparison: Comparison, config: DiagnosisConfig,
                  reconciliation=None) -> tuple[CauseAssessment, ...]:
    """Every cause that applies to this run (class weights only with unequal weights, logging only with a log)."""
    rise = comparison.status is Status.RISE
    grown = _grown_pairs(comparison, config)
    collapsed = _collapsed_classes(comparison, config, grown)
    confusion, underrepresented = _learned_confusion(analysis, comparison, config, rise, grown, collapsed)
    found = [_calibration(comparison, rise), _genuine_degradation(comparison, config, rise),
             _class_collapse(analysis, comparison, config, rise, collapsed), confusion, underrepresented,
             _validation_labels(analysis, comparison, config, rise, confusion, underrepresented)]
    if not np.allclose(analysis.class_weights, analysis.class_weights[0]):
        found.append(_class_weights(analysis, comparison, config, rise))
    found.append(_logging_mismatch(reconciliation, config, train_mode_matches(reconciliation, comparison, analysis,
                                                                             config)))
    return tuple(a for a in found if a is not None)
