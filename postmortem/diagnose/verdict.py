"""The verdict, computed from the cause assessments (never written separately): the status, the primary cause
and the contributing ones, what they name, each cause's share of the rise, and three sentences answering what
happened, whether it is the model or something else, and what to try. The report's verdict, the markdown
summary and the console line are all rendered from this object."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analyze.bootstrap import Interval
from ..analyze.run import RunAnalysis
from .causes import LEADING_CAUSES, Cause, CauseAssessment
from .comparison import Comparison, Status
from .config import DiagnosisConfig
from .causes import PairReading
from .training_events import (TrainingEvent, training_event_step, training_event_text, training_event_to_json,
                              weight_decay_advice)
from .wording import IDS_IN_TEXT, ci_text, epoch_picked_by, gap_text, ids_text, listed_text, share_text

__all__ = ["Verdict", "VerdictSentences", "decide", "verdict_to_json"]

MAX_STEPS = 3
REGULARISED = (Cause.CALIBRATION, Cause.GENUINE_DEGRADATION)   # causes whose steps include weight decay


@dataclass(frozen=True)
class VerdictSentences:
    """The three answers, in the order a reader asks them."""

    what_happened: str
    model_or_else: str
    what_to_try: str


@dataclass(frozen=True)
class Verdict:
    """What the comparison shows: status, primary and contributing causes (counted ones only), the classes and
    item ids the primary cause names, every assessed cause's share of the rise, the three sentences, and the LR
    events the rise begins right after (a coincidence in time, told beside the causes, not one of them)."""

    status: Status
    primary_cause: Cause | None
    contributing_causes: tuple[Cause, ...]
    classes: tuple[str, ...]
    item_ids: tuple[str, ...]
    cause_shares: dict[Cause, Interval]
    sentences: VerdictSentences
    assessments: tuple[CauseAssessment, ...]
    training_events: tuple[TrainingEvent, ...] = ()     # LR events the rise begins right after


def _rank(assessments: tuple[CauseAssessment, ...]) -> list[CauseAssessment]:
    """Counted causes, the primary first: a leading cause in LEADING_CAUSES order, else the largest share
    whose interval excludes 0; then the others by share (causes with no share last)."""
    counted = [a for a in assessments if a.counted]
    leaders = []
    for tier in LEADING_CAUSES:
        causes = tier if isinstance(tier, tuple) else (tier,)
        leaders += sorted((a for a in counted if a.cause in causes and a.leads), key=lambda a: -a.share.estimate)
    with_share = sorted((a for a in counted if a.share is not None and a not in leaders),
                        key=lambda a: -a.share.estimate)
    primary = leaders[:1] or [a for a in with_share if a.share.above_zero][:1]
    rest = [a for a in leaders[1:] + with_share if a not in primary] + [a for a in counted if a.share is None]
    return primary + rest


def _best_recall_epoch(analysis: RunAnalysis, k: int) -> int:
    recalls = [-1.0 if np.isnan(e.metrics.recall[k]) else float(e.metrics.recall[k]) for e in analysis.epochs]
    return analysis.epochs[int(np.argmax(recalls))].epoch


def _what_happened(analysis: RunAnalysis, c: Comparison) -> str:
    change, accuracy, f1 = c.ledger.loss_change, c.ledger.accuracy_change, c.ledger.macro_f1_change
    first, last = analysis.epochs[c.from_index], analysis.epochs[c.to_index]
    totals = c.ledger.totals
    n = f"{len(analysis.labels)} items" + (f" in {totals.n_units} groups" if totals.resampled_unit == "groups" else "")
    if c.status is Status.NO_RISE and c.from_index == analysis.best_loss_index == len(analysis.epochs) - 1:
        return (f"Validation loss is still falling: it is lowest at the last epoch ({last.epoch}, "
                f"{last.metrics.loss:.4f}), so there is no rise to explain; accuracy {last.metrics.accuracy:.2%}.")
    head = (f"Validation loss went {c.loss_from:.4f} (epoch {c.from_epoch}) → {c.loss_to:.4f} (epoch {c.to_epoch}): "
            f"{change.estimate:+.4f} ({c.relative_change:+.1%}), {totals.confidence_level:.0%} CI "
            f"[{change.low:+.4f}, {change.high:+.4f}] over {totals.n_resamples} paired resamples of the {n}; "
            f"accuracy {first.metrics.accuracy:.2%} → {last.metrics.accuracy:.2%} (CI of the change "
            f"[{accuracy.low:+.2%}, {accuracy.high:+.2%}]), macro F1 {first.macro_f1_score:.3f} → "
            f"{last.macro_f1_score:.3f} ({ci_text(f1, '+.3f')}).")
    if c.status is Status.UNRESOLVED:
        head += f" The rise's interval includes 0: {c.resolution_text(len(analysis.labels))}."
    elif c.status is Status.NO_RISE:
        head += " The loss did not rise between these epochs."
    return head


def _phrase(a: CauseAssessment, analysis: RunAnalysis, c: Comparison, degraded: bool = False) -> str:
    """What a counted cause says in plain words, with the numbers that carry it (the full numbers are in its
    assessment's facts, which the report's cause table shows); `degraded`: genuine degradation counts too, so
    no cause says the model's decisions held ("not the model", "not its decisions")."""
    names, ledger = analysis.classes, c.ledger
    share = share_text(a.share) if a.share else ""
    if a.cause is Cause.CALIBRATION:
        return (f"the model's confidence{'' if degraded else ', not its decisions'}: temperature scaling removes "
                f"{share}; the fitted "
                f"temperature went {analysis.epochs[c.from_index].temperature:.2f} → "
                f"{analysis.epochs[c.to_index].temperature:.2f}")
    if a.cause is Cause.GENUINE_DEGRADATION:
        scaled, f1 = ledger.scaled_loss_change, ledger.macro_f1_change
        signs = ([f"the loss after temperature scaling rose {scaled.estimate:+.4f} ({ci_text(scaled)}), {share}"]
                 if scaled.above_zero else []) + \
                ([f"macro F1 fell {f1.estimate:+.4f} ({ci_text(f1)})"] if f1.below_zero else [])
        if c.training is not None:
            signs.append(gap_text(c.training))
        return "the model got worse beyond its calibration: " + " and ".join(signs)
    if a.cause is Cause.CLASS_COLLAPSE:
        k = a.classes[0]
        recall = ledger.recall_changes[k]
        first, last = analysis.epochs[c.from_index].metrics, analysis.epochs[c.to_index].metrics
        return (f"class {listed_text([names[j] for j in a.classes])} collapsed while accuracy held: {names[k]}'s recall "
                f"went {first.recall[k]:.1%} → {last.recall[k]:.1%} (CI of the change "
                f"[{recall.low:+.1%}, {recall.high:+.1%}]), its items spread over other classes and carry {share}")
    if a.cause in (Cause.LEARNED_CONFUSION, Cause.CLASS_UNDERREPRESENTED):
        moves = "; ".join(f"{names[k.true_class]} → {names[k.predicted_class]}, {k.share_before:.1%} → "
                          f"{k.share_after:.1%} of {names[k.true_class]}'s items (CI of the growth "
                          f"[{k.growth.low:+.1%}, {k.growth.high:+.1%}])"
                          for k in ledger.confusions if (k.true_class, k.predicted_class) in a.pairs)
        x, y = (names[k] for k in a.pairs[0])
        if a.cause is Cause.CLASS_UNDERREPRESENTED:
            return (f"class {x} losing its training signal ({moves}), whose items carry {share}: on the training "
                    f"subset {x}'s own items drift to {y} as well, while no more {y}-labelled training items look "
                    f"like {x} than validation items do, so the training labels are not the story; {x} is "
                    "under-represented in what the model trained on")
        if a.undecided:
            return (f"a learned confusion ({moves}), whose items carry {share}: either noisy training labels "
                    f"(items of {x} labelled {y}) or fewer {x} items in training ({x}'s training signal weakened); "
                    "the validation set alone cannot tell these apart, a training subset (--train-data) can. These "
                    "validation items are not label errors")
        if a.reading is PairReading.LABEL_NOISE:
            evidence = c.training.evidence_for(a.pairs[0])
            return (f"a learned confusion ({moves}), whose items carry {share}: noisy training labels — on the "
                    f"training subset {evidence.train_share:.1%} of the items labelled {y} are placed in {x} over the "
                    f"epochs, against {evidence.validation_share:.1%} of the validation items labelled {y} (excess "
                    f"{ci_text(evidence.excess, '+.1%')}); not these validation items")
        if a.reading is PairReading.NEITHER:
            return (f"a learned confusion ({moves}), whose items carry {share}: the training subset shows neither "
                    f"noisy labels nor {x} losing its training signal, so suspect the features that separate these "
                    "classes; not these validation items")
        if a.reading is PairReading.UNSEEN_SIGNAL:
            recall = c.training.signal_for(*a.pairs[0])
            return (f"a learned confusion ({moves}), whose items carry {share}: the training subset shows no noisy "
                    f"labels between them, but it cannot show whether {x} lost training signal, since the model fits "
                    f"all of {x}'s training-subset items (recall {recall.recall_before:.0%} → "
                    f"{recall.recall_after:.0%}): either the features that separate these classes, or fewer {x} "
                    "items in what training drew than in the subset; not these validation items")
        return (f"a learned confusion ({moves}), whose items carry {share}: suspect the training labels or the "
                "features that separate these classes, not these validation items")
    if a.cause is Cause.VALIDATION_LABELS:
        rest = ledger.flagged(a.pairs).rest_change
        return (f"the validation labels{'' if degraded else ', not the model'}: {len(a.item_indices)} items that the model predicts as "
                f"{listed_text([names[k] for k in a.classes])}, more often confidently against their label than "
                f"calibrated probabilities allow, carry {share}, while the other items' loss changed "
                f"{rest.estimate:+.4f} ({ci_text(rest)})")
    if a.cause is Cause.CLASS_WEIGHTS:
        unweighted = ledger.unweighted_loss_change
        classes = f"; the up-weighted class{'es' if len(a.classes) > 1 else ''} {listed_text([names[k] for k in a.classes])} " \
                  f"carr{'y' if len(a.classes) > 1 else 'ies'} what they add" if a.classes else ""
        return (f"the loss's class weights{'' if degraded else ', not the model'}: without them the loss changed {unweighted.estimate:+.4f} "
                f"({ci_text(unweighted)}); the weights make {share}{classes}")
    return f"the logged loss: {a.facts}"


def _model_or_else(ranked: list[CauseAssessment], assessments, analysis: RunAnalysis, c: Comparison) -> str:
    if c.status is Status.UNRESOLVED:
        return ("Not resolved: with the rise's interval including 0, no cause is claimed; the assessed causes' "
                "shares (the report's cause table, metrics.json) are for reference only.")
    if c.status is Status.NO_RISE:
        logged = [a for a in ranked if a.cause is Cause.LOGGING_MISMATCH]
        return ("Nothing rose to explain." + (f" But {_phrase(logged[0], analysis, c)}: the rise seen in the "
                                               "training log is not the loss of these checkpoints." if logged else ""))
    if not ranked:
        return ("No assessed cause reaches beyond noise: " + "; ".join(
            f"{a.cause.value.replace('_', ' ')}: {a.facts}" for a in assessments) + ".")
    degradation = next(a for a in assessments if a.cause is Cause.GENUINE_DEGRADATION)
    text = f"Mostly {_phrase(ranked[0], analysis, c, degradation.counted)}."
    if len(ranked) > 1:
        text += " Also " + "; and ".join(_phrase(a, analysis, c, degradation.counted) for a in ranked[1:]) + "."
    if not degradation.counted:
        scaled = c.ledger.scaled_loss_change
        text += (f" Genuine degradation: not detected (scaled-loss change {scaled.estimate:+.4f}, "
                 f"{ci_text(scaled)}).")
    return text


def _step(a: CauseAssessment, analysis: RunAnalysis, c: Comparison, ids: tuple[str, ...]) -> str:
    names, last = analysis.classes, analysis.epochs[c.to_index]
    if a.cause is Cause.CALIBRATION:
        return (f"Temperature-scale the checkpoint you deploy (T ≈ {last.temperature:.2f} at epoch {last.epoch}, "
                f"fitted on held-out data: its loss goes {last.metrics.loss:.4f} → about {last.scaled_loss:.4f}, "
                f"decisions unchanged), or pick the checkpoint by the loss after scaling "
                f"({epoch_picked_by(analysis, 'lowest loss after temperature scaling')}); to train it better "
                "calibrated, label smoothing or weight decay.")
    if a.cause is Cause.GENUINE_DEGRADATION:
        return (f"Stop earlier ({epoch_picked_by(analysis, 'lowest loss after temperature scaling')} has the lowest loss after "
                f"scaling, {epoch_picked_by(analysis, 'highest macro F1')} the best macro F1) and regularise: weight decay, "
                "dropout, augmentation or more data; lower the learning rate late.")
    if a.cause is Cause.CLASS_COLLAPSE:
        k = a.classes[0]
        return (f"Pick the checkpoint by macro F1 ({epoch_picked_by(analysis, 'highest macro F1')}) or by {names[k]}'s recall "
                f"(epoch {_best_recall_epoch(analysis, k)}), and find why {names[k]}'s training signal weakened "
                "(its share of the training data, sampling, augmentation).")
    if a.cause is Cause.LEARNED_CONFUSION:
        x, y = a.pairs[0]
        if a.undecided:
            return (f"Check the TRAINING labels of {names[x]} and {names[y]} (items of {names[x]} labelled "
                    f"{names[y]}) and {names[x]}'s share of what the model trained on, epoch by epoch (sampling, "
                    "a data-pipeline change); give postmortem a training subset (--train-data) to tell the two apart; "
                    f"until then pick by macro F1 ({epoch_picked_by(analysis, 'highest macro F1')}).")
        if a.reading is PairReading.LABEL_NOISE:
            placed = c.training.evidence_for(a.pairs[0]).train_indices
            ids = tuple(str(analysis.training.ids[i]) for i in placed[:IDS_IN_TEXT])
            return (f"Relabel or drop the training items of {names[x]} labelled {names[y]}; the training subset's "
                    f"candidates: {ids_text(ids, len(placed))}; until then pick by macro F1 "
                    f"({epoch_picked_by(analysis, 'highest macro F1')}).")
        if a.reading is PairReading.NEITHER:
            return (f"Look at the features that separate {names[x]} from {names[y]} (the training subset shows "
                    f"neither noisy labels nor {names[x]}'s training signal weakening); until then pick by macro F1 "
                    f"({epoch_picked_by(analysis, 'highest macro F1')}).")
        if a.reading is PairReading.UNSEEN_SIGNAL:
            return (f"Check {names[x]}'s share of what the training loop drew, epoch by epoch (sampler weights, "
                    f"filtering, augmentation), and the features that separate {names[x]} from {names[y]}; a "
                    "training subset the model has not fit (held-out training items, or items from before the "
                    f"suspected change) would tell the two apart; until then pick by macro F1 "
                    f"({epoch_picked_by(analysis, 'highest macro F1')}).")
        return (f"Check the TRAINING labels of {names[x]} and {names[y]} (items of {names[x]} labelled {names[y]}) "
                f"and the features that separate the two; until then pick by macro F1 "
                f"({epoch_picked_by(analysis, 'highest macro F1')}).")
    if a.cause is Cause.CLASS_UNDERREPRESENTED:
        x, y = a.pairs[0]
        return (f"Restore {names[x]}'s share of the training data (its sampling weight, the sampler or data pipeline "
                f"that thinned it, or class-balanced sampling) rather than relabelling; until then pick the checkpoint "
                f"by macro F1 ({epoch_picked_by(analysis, 'highest macro F1')}) or by {names[x]}'s recall (epoch "
                f"{_best_recall_epoch(analysis, x)}).")
    if a.cause is Cause.VALIDATION_LABELS:
        return ("Audit the labels of these validation items and fix them before reading the loss curve: "
                f"{ids_text(ids, len(a.item_indices))}.")
    if a.cause is Cause.CLASS_WEIGHTS:
        return ("Judge checkpoints by the unweighted loss or macro F1 "
                f"({epoch_picked_by(analysis, 'highest macro F1')} by macro F1); soften the class weights (e.g. the square "
                "root of inverse frequency) or use class-balanced sampling.")
    return ("Fix the logged validation loss (reduce as the loss does, in eval mode, on the same data) and judge "
            "the run by the recomputed curve meanwhile.")


def _what_to_try(ranked: list[CauseAssessment], analysis: RunAnalysis, c: Comparison, ids: tuple[str, ...],
                 training_events: tuple[TrainingEvent, ...]) -> str:
    if c.status is Status.UNRESOLVED:
        return ("Don't act on this difference yet: enlarge the validation set (see above how much) or compare "
                "several seeds, then look again; meanwhile keep the checkpoint with the lowest validation loss "
                f"({epoch_picked_by(analysis, 'lowest loss')}).")
    if c.status is Status.NO_RISE and not ranked:
        return f"Nothing to fix here: keep the checkpoint with the lowest validation loss ({epoch_picked_by(analysis, 'lowest loss')})."
    shown = ranked[:MAX_STEPS]
    steps = [_step(a, analysis, c, ids) for a in shown]
    if any(a.cause in REGULARISED for a in shown):      # the optimizer's weight decay, as recorded, said once
        steps.append(weight_decay_advice(analysis.training_setups[c.to_index]))
    steps += dict.fromkeys(training_event_step(t, c.from_epoch) for t in training_events)
    return " ".join(steps)


def _leaked(analysis: RunAnalysis) -> int:
    """How many validation items copy a training-subset item (0 without a subset)."""
    return 0 if analysis.training is None else len(analysis.training.leakage.indices)


def _leakage_sentence(n_leaked: int, n_items: int) -> str:
    return (f" Besides, {n_leaked} validation items ({n_leaked / n_items:.1%}) are copies of training-subset items "
            "(the finding train_validation_leakage lists them): on them the validation loss measures memory, not "
            "generalisation.")


def _leakage_step(n_leaked: int) -> str:
    return (f" Remove the {n_leaked} leaked items from the validation set (or their copies from training) and judge "
            "the run by the rest; deduplicate by content before splitting.")


def decide(analysis: RunAnalysis, comparison: Comparison, assessments: tuple[CauseAssessment, ...],
           config: DiagnosisConfig, training_events: tuple[TrainingEvent, ...] = ()) -> Verdict:
    """The verdict of one comparison from its cause assessments, and the LR events the rise begins right after
    (diagnose.training_events.tie_to_lr_events)."""
    rise = comparison.status is Status.RISE
    ranked = _rank(assessments) if rise else [a for a in assessments if a.counted]
    primary = ranked[0] if rise and ranked and ranked[0].share is not None else None
    contributing = [a for a in ranked if a is not primary]
    ids = tuple(str(analysis.ids[i]) for i in primary.item_indices[:config.max_listed_items]) if primary else ()
    happened = " ".join([_what_happened(analysis, comparison)]
                        + [training_event_text(t, config, comparison) for t in training_events])
    model_or_else = _model_or_else(ranked, assessments, analysis, comparison)
    what_to_try = _what_to_try(ranked, analysis, comparison, ids, training_events)
    if n_leaked := _leaked(analysis):          # a data problem, told rise or not
        model_or_else += _leakage_sentence(n_leaked, len(analysis.labels))
        what_to_try += _leakage_step(n_leaked)
    sentences = VerdictSentences(happened, model_or_else, what_to_try)
    return Verdict(
        status=comparison.status,
        primary_cause=primary.cause if primary else None,
        contributing_causes=tuple(a.cause for a in contributing),
        classes=tuple(analysis.classes[k] for k in primary.classes) if primary else (),
        item_ids=ids,
        cause_shares={a.cause: a.share for a in assessments if a.share is not None},
        sentences=sentences,
        assessments=assessments,
        training_events=training_events,
    )


def verdict_to_json(verdict: Verdict) -> dict[str, Any]:
    """The metrics.json form (schema_version 1, additive): see README, "metrics.json"."""
    return {
        "status": verdict.status.value,
        "primary_cause": verdict.primary_cause.value if verdict.primary_cause else None,
        "contributing_causes": [c.value for c in verdict.contributing_causes],
        "classes": list(verdict.classes),
        "item_ids": list(verdict.item_ids),
        # a share is left out where it is undefined (no resample kept a defined ratio)
        "cause_shares": {c.value: {"estimate": i.estimate, "low": i.low, "high": i.high}
                         for c, i in verdict.cause_shares.items()
                         if all(np.isfinite(v) for v in (i.estimate, i.low, i.high))},
        "training_events": [training_event_to_json(t) for t in verdict.training_events],
        "sentences": {"what_happened": verdict.sentences.what_happened,
                      "model_or_else": verdict.sentences.model_or_else,
                      "what_to_try": verdict.sentences.what_to_try},
    }
