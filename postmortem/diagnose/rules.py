"""Rules: each reads thresholds from DiagnosisConfig and returns a Finding or None.

Every rule compares the best-loss epoch with the last one (the change the report explains). A threshold
appears in the finding's `thresholds` under the same name as the evidence number it was compared to.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analyze.cartography import persistent_confident_errors
from ..analyze.decomposition import CORRECT_TO_CORRECT, CORRECT_TO_WRONG, TRANSITIONS, WRONG_TO_WRONG
from ..analyze.run import RunAnalysis
from .findings import FigureAnchor, Finding, FindingKind, Severity

__all__ = ["DiagnosisConfig", "diagnose", "verdict", "Answer", "RULES"]


@dataclass(frozen=True)
class DiagnosisConfig:
    """Every threshold the rules compare against, in one place (printed beside each number)."""

    min_relative_loss_rise: float = 0.02     # (L_last - L_best) / L_best that counts as a rise (CI low must be > 0 too)
    min_calibration_share: float = 0.5       # share of dL that is calibration: change of (L - L_TS) / dL
    min_last_temperature: float = 1.05       # fitted T at the last epoch above which the model is overconfident
    min_ece_rise: float = 0.01               # absolute rise of the 15-bin ECE
    min_wrong_share: float = 0.5             # share of dL carried by correct->wrong and wrong->wrong items
    min_class_share: float = 0.5             # share of dL the concentrated classes reach together
    max_concentrated_classes: int = 3        # "one or few" classes
    min_concentration_ratio: float = 2.0     # their share of dL / their share of the items
    min_weight_amplification: float = 3.0    # weight share / frequency share for a class to count as amplified
    min_amplified_share: float = 0.5         # share of dL the amplified classes carry
    min_norm_growth: float = 0.10            # relative rise of the median centred-logit norm
    min_margin_growth: float = 0.10          # relative rise of the median absolute margin
    suspect_min_epochs: int = 3              # "persistently" needs at least this many epochs
    suspect_max_fraction_correct: float = 0.2  # right in at most this share of epochs
    suspect_max_mean_true_confidence: float = 0.1  # mean p(label) over the epochs at most this
    suspect_min_confidence: float = 0.8      # and at least this confident in the wrong class at the last epoch
    suspect_min_loss_share: float = 0.1      # share of the last epoch's loss that makes the finding medium, not low
    min_scaled_loss_rise: float = 0.02       # relative rise of the loss after temperature scaling
    min_macro_f1_drop: float = 0.005         # absolute macro-F1 fall that counts (its CI must exclude 0 too)
    max_listed_items: int = 200              # item ids a finding lists in metrics.json (its text shows 10)
    logged_loss_tolerance: float = 1e-3      # relative difference between logged and recomputed loss that counts


@dataclass(frozen=True)
class Answer:
    """One verdict question, its short answer, and the ids of the findings it cites."""

    question: str
    text: str
    cites: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Change:
    """The best-loss -> last comparison every rule starts from."""

    best: int
    last: int
    best_loss: float
    last_loss: float
    loss_change: float
    relative_rise: float
    rose: bool                       # the loss rose beyond both its threshold and its bootstrap interval


def _change(analysis: RunAnalysis, config: DiagnosisConfig) -> _Change:
    best, last = analysis.best_loss_index, len(analysis.epochs) - 1
    best_loss, last_loss = analysis.epochs[best].metrics.loss, analysis.epochs[last].metrics.loss
    relative = (last_loss - best_loss) / best_loss if best_loss > 0 else 0.0
    rose = best < last and relative >= config.min_relative_loss_rise and analysis.bootstrap.loss_change.low > 0
    return _Change(best, last, best_loss, last_loss, last_loss - best_loss, relative, rose)


def _epoch(analysis: RunAnalysis, index: int) -> int:
    return analysis.epochs[index].epoch


def _pick(analysis: RunAnalysis, criterion: str) -> str:
    """'epoch N' picked by a criterion of the checkpoint table."""
    return f"epoch {_epoch(analysis, analysis.checkpoint_choice.index_by(criterion))}"


IDS_IN_TEXT = 10


def _classes_text(names: tuple[str, ...], singular: str = "", plural: str = "", start: bool = False) -> str:
    """'class fear holds' or 'classes fear, joy hold' (verb forms optional; `start` capitalises the first word)."""
    word = ("C" if start else "c") + "lass"
    if len(names) == 1:
        return f"{word} {names[0]}" + (f" {singular}" if singular else "")
    return f"{word}es " + ", ".join(names) + (f" {plural}" if plural else "")


def _ids_text(ids: tuple[str, ...], total: int) -> str:
    """The first ids, and where the rest are."""
    shown = ", ".join(ids[:IDS_IN_TEXT])
    if total <= IDS_IN_TEXT:
        return shown
    listed = "all listed" if len(ids) == total else f"the first {len(ids)} listed"
    return shown + f" … ({total} in all; {listed} in metrics.json)"


def nll_overfit_accuracy_holds(analysis: RunAnalysis, config: DiagnosisConfig) -> Finding | None:
    """Loss rose beyond its CI after its minimum; the best accuracy came later and accuracy's change is in its CI."""
    change = _change(analysis, config)
    accuracies = analysis.accuracies
    latest_best_accuracy = int(np.flatnonzero(accuracies == accuracies.max())[-1])
    accuracy = analysis.bootstrap.accuracy_change
    if not change.rose or latest_best_accuracy <= change.best or accuracy.high < 0:
        return None
    loss_ci = analysis.bootstrap.loss_change
    best_epoch, last_epoch = _epoch(analysis, change.best), _epoch(analysis, change.last)
    return Finding(
        id=FindingKind.NLL_OVERFIT_ACCURACY_HOLDS.value,
        severity=Severity.HIGH,
        score=change.relative_rise,
        title=f"Loss rose {change.relative_rise:.0%} after epoch {best_epoch} while accuracy held",
        summary=(f"Validation loss bottomed out at {change.best_loss:.4f} (epoch {best_epoch}) and rose to "
                 f"{change.last_loss:.4f} by epoch {last_epoch} (+{change.relative_rise:.1%}, threshold "
                 f"{config.min_relative_loss_rise:.0%}; 95% CI of the change "
                 f"[{loss_ci.low:+.4f}, {loss_ci.high:+.4f}]). "
                 f"Accuracy changed by {accuracy.estimate:+.2%} (CI [{accuracy.low:+.2%}, {accuracy.high:+.2%}], "
                 f"not below zero) and is best at epoch {_epoch(analysis, latest_best_accuracy)}."),
        evidence={"best_loss_epoch": best_epoch, "best_accuracy_epoch": _epoch(analysis, latest_best_accuracy),
                  "best_loss": change.best_loss, "last_loss": change.last_loss,
                  "relative_loss_rise": change.relative_rise, "loss_change_ci_low": loss_ci.low,
                  "accuracy_change": accuracy.estimate, "accuracy_change_ci_high": accuracy.high},
        thresholds={"relative_loss_rise": config.min_relative_loss_rise, "loss_change_ci_low": 0.0,
                    "accuracy_change_ci_high": 0.0},
        next_steps=(f"Select the checkpoint by the metric you care about (see the checkpoint table): "
                    f"{_pick(analysis, 'lowest loss')} by loss, {_pick(analysis, 'highest accuracy')} by accuracy, "
                    f"{_pick(analysis, 'highest macro F1')} by macro F1.",
                    "Early-stop on the metric you deploy, not on the loss alone."),
        figure=FigureAnchor.CURVES,
    )


def overconfidence(analysis: RunAnalysis, config: DiagnosisConfig) -> Finding | None:
    """Most of dL is calibration (L - L_TS), the fitted T ends above 1 and rose, and ECE rose."""
    change = _change(analysis, config)
    if not change.rose:
        return None
    best, last = analysis.epochs[change.best], analysis.epochs[change.last]
    calibration_share = (last.calibration_loss - best.calibration_loss) / change.loss_change
    ece_best = best.calibration.expected_calibration_error
    ece_last = last.calibration.expected_calibration_error
    if calibration_share < config.min_calibration_share or last.temperature < config.min_last_temperature \
            or last.temperature <= best.temperature or ece_last - ece_best < config.min_ece_rise:
        return None
    return Finding(
        id=FindingKind.OVERCONFIDENCE.value,
        severity=Severity.HIGH,
        score=calibration_share,
        title=f"Overconfidence: temperature scaling removes {calibration_share:.0%} of the loss rise",
        summary=(f"From epoch {best.epoch} to {last.epoch} the loss rose {change.loss_change:+.4f}, of which "
                 f"{calibration_share:.0%} (threshold {config.min_calibration_share:.0%}) is calibration gap "
                 f"L − L_TS ({best.calibration_loss:.4f} → {last.calibration_loss:.4f}); the loss after "
                 f"temperature scaling went {best.scaled_loss:.4f} → {last.scaled_loss:.4f}. The fitted temperature "
                 f"rose {best.temperature:.2f} → {last.temperature:.2f} "
                 f"(threshold {config.min_last_temperature:.2f}) "
                 f"and ECE {ece_best:.3f} → {ece_last:.3f} (rise threshold {config.min_ece_rise:.3f})."),
        evidence={"calibration_share": calibration_share, "calibration_loss_best": best.calibration_loss,
                  "calibration_loss_last": last.calibration_loss, "scaled_loss_best": best.scaled_loss,
                  "scaled_loss_last": last.scaled_loss, "temperature_best": best.temperature,
                  "temperature_last": last.temperature, "ece_best": ece_best, "ece_last": ece_last,
                  "ece_rise": ece_last - ece_best},
        thresholds={"calibration_share": config.min_calibration_share,
                    "temperature_last": config.min_last_temperature, "ece_rise": config.min_ece_rise},
        next_steps=(f"Temperature-scale the checkpoint you deploy (T ≈ {last.temperature:.2f} at epoch {last.epoch}, "
                    f"fitted on held-out data): its loss goes from {last.metrics.loss:.4f} to about "
                    f"{last.scaled_loss:.4f} with accuracy unchanged.",
                    f"Or select the checkpoint by the loss after scaling "
                    f"({_pick(analysis, 'lowest loss after temperature scaling')}).",
                    "To train better-calibrated models: label smoothing (e.g. 0.1) or focal loss; raise weight decay."),
        figure=FigureAnchor.CALIBRATION,
    )


def confident_errors_dominate(analysis: RunAnalysis, config: DiagnosisConfig) -> Finding | None:
    """correct->wrong and wrong->wrong items carry at least min_wrong_share of dL."""
    change = _change(analysis, config)
    if not change.rose:
        return None
    d = analysis.decomposition
    shares = d.share(d.by_transition)
    wrong_share = float(shares[CORRECT_TO_WRONG] + shares[WRONG_TO_WRONG])
    if wrong_share < config.min_wrong_share:
        return None
    counts = d.item_counts.sum(axis=0)
    listed = tuple(e.id for e in analysis.confident_errors[:config.max_listed_items])
    best, last = analysis.epochs[change.best].calibration, analysis.epochs[change.last].calibration
    entropy = (f" Mean entropy of wrong predictions {best.mean_entropy_wrong:.3f} → "
               f"{last.mean_entropy_wrong:.3f} nats." if np.isfinite(best.mean_entropy_wrong)
               else "")                                # NaN when nothing was wrong at the loss minimum
    return Finding(
        id=FindingKind.CONFIDENT_ERRORS_DOMINATE.value,
        severity=Severity.MEDIUM,
        score=wrong_share,
        title=f"Wrong predictions carry {wrong_share:.0%} of the loss rise"
              + (" while correct ones improved" if shares[CORRECT_TO_CORRECT] < 0 else ""),
        summary=(f"Of the loss change {change.loss_change:+.4f}, items wrong at epoch "
                 f"{_epoch(analysis, change.last)} carry {wrong_share:.0%} "
                 f"(threshold {config.min_wrong_share:.0%}): correct→wrong "
                 f"{shares[CORRECT_TO_WRONG]:.0%} ({counts[CORRECT_TO_WRONG]} items), wrong→wrong "
                 f"{shares[WRONG_TO_WRONG]:.0%} ({counts[WRONG_TO_WRONG]} items). The top 1% of items carry "
                 f"{d.top_1_percent_share:.0%} and the top 5% {d.top_5_percent_share:.0%}.{entropy} "
                 f"Largest: {', '.join(listed[:IDS_IN_TEXT])} (see the confident-errors table)."),
        evidence={**{f"share_{name.replace('->', '_to_')}": float(s) for name, s in zip(TRANSITIONS, shares)},
                  "wrong_share": wrong_share, "top_1_percent_share": d.top_1_percent_share,
                  "top_5_percent_share": d.top_5_percent_share,
                  "n_correct_to_wrong": float(counts[CORRECT_TO_WRONG]),
                  "n_wrong_to_wrong": float(counts[WRONG_TO_WRONG]),
                  "mean_entropy_wrong_best": best.mean_entropy_wrong,
                  "mean_entropy_wrong_last": last.mean_entropy_wrong},
        thresholds={"wrong_share": config.min_wrong_share},
        next_steps=(f"Audit the items that carry the rise, largest first: {', '.join(listed[:IDS_IN_TEXT])}.",
                    "Penalise confident mistakes: label smoothing or focal loss; raise weight decay.",
                    f"If decisions are what you deploy, select by accuracy or macro F1 "
                    f"({_pick(analysis, 'highest macro F1')})."),
        figure=FigureAnchor.DECOMPOSITION,
        item_ids=listed,
    )


def class_concentration(analysis: RunAnalysis, config: DiagnosisConfig) -> Finding | None:
    """At most max_concentrated_classes classes carry min_class_share of dL, well beyond their share of items."""
    change = _change(analysis, config)
    if not change.rose:
        return None
    d = analysis.decomposition
    shares = d.share(d.by_class)
    order = np.argsort(-shares, kind="stable")
    k = int(np.searchsorted(np.cumsum(shares[order]), config.min_class_share)) + 1
    if k > config.max_concentrated_classes or k > len(order):
        return None
    chosen = order[:k]
    class_share = float(shares[chosen].sum())
    frequency = float(analysis.class_shares.frequency_share[chosen].sum())
    ratio = class_share / frequency
    if ratio < config.min_concentration_ratio:
        return None
    names = tuple(analysis.classes[c] for c in chosen)
    best, last = analysis.epochs[change.best].metrics, analysis.epochs[change.last].metrics
    recall = {name: (best.per_class[c].recall, last.per_class[c].recall) for name, c in zip(names, chosen)}
    trend = "; ".join(f"{name}: share {shares[c]:.0%}, recall {recall[name][0]:.2%} → {recall[name][1]:.2%}"
                      for name, c in zip(names, chosen))
    return Finding(
        id=FindingKind.CLASS_CONCENTRATION.value,
        severity=Severity.MEDIUM,
        score=class_share,
        title=f"{_classes_text(names, 'carries', 'carry', start=True)} {class_share:.0%} of the loss rise",
        summary=(f"{_classes_text(names, 'holds', 'hold', start=True)} {frequency:.0%} of the items but "
                 f"{class_share:.0%} of the loss change "
                 f"(threshold {config.min_class_share:.0%} within {config.max_concentrated_classes} classes; "
                 f"ratio {ratio:.1f}, threshold {config.min_concentration_ratio:.1f}). {trend}."),
        classes=names,
        evidence={"class_share": class_share, "frequency_share": frequency, "concentration_ratio": ratio,
                  "n_classes": float(k),
                  **{f"share_{name}": float(shares[c]) for name, c in zip(names, chosen)},
                  **{f"recall_best_{name}": recall[name][0] for name in names if recall[name][0] is not None},
                  **{f"recall_last_{name}": recall[name][1] for name in names if recall[name][1] is not None}},
        thresholds={"class_share": config.min_class_share, "concentration_ratio": config.min_concentration_ratio,
                    "n_classes": float(config.max_concentrated_classes)},
        next_steps=(f"Look at the errors of {_classes_text(names)} (confusion matrix rows, the confident-errors "
                    "table).",
                    "Collect or re-check data for these classes; if their recall fell, consider class-balanced "
                    "sampling or per-class early stopping.",
                    f"If these classes matter, select the checkpoint by macro F1 "
                    f"({_pick(analysis, 'highest macro F1')})."),
        figure=FigureAnchor.DECOMPOSITION,
    )


def class_weight_amplification(analysis: RunAnalysis, config: DiagnosisConfig) -> Finding | None:
    """Classes weighted >= min_weight_amplification times their frequency carry min_amplified_share of dL."""
    change = _change(analysis, config)
    if not change.rose or np.allclose(analysis.class_weights, analysis.class_weights[0]):
        return None
    shares = analysis.class_shares
    amplified = np.flatnonzero(np.nan_to_num(shares.amplification) >= config.min_weight_amplification)
    d = analysis.decomposition
    amplified_share = float(d.share(d.by_class)[amplified].sum())
    if len(amplified) == 0 or amplified_share < config.min_amplified_share:
        return None
    names = tuple(analysis.classes[c] for c in amplified)
    evidence = {"amplified_share": amplified_share,
                "weight_share": float(shares.weight_share[amplified].sum()),
                "frequency_share": float(shares.frequency_share[amplified].sum()),
                "min_amplification": float(shares.amplification[amplified].min())}
    weights = analysis.class_weights
    unweighted = ""
    if (weights > 0).all():
        # by_class[c] = w_c sum_{i in c} d(nll_i) / A and A / N is the mean item weight, so the unweighted
        # loss change is sum_c by_class[c] * (A / N) / w_c.
        mean_weight = float(weights @ shares.frequency_share)
        evidence["unweighted_loss_change"] = float((d.by_class * mean_weight / weights).sum())
        unweighted = (f" Without class weights the loss would have changed by "
                      f"{evidence['unweighted_loss_change']:+.4f}.")
    return Finding(
        id=FindingKind.CLASS_WEIGHT_AMPLIFICATION.value,
        severity=Severity.MEDIUM,
        score=amplified_share,
        title=f"Class weights amplify the loss rise: {_classes_text(names, 'carries', 'carry')} "
              f"{amplified_share:.0%} of it",
        summary=(f"{_classes_text(names, 'holds', 'hold', start=True)} {evidence['frequency_share']:.1%} of the "
                 f"items but {evidence['weight_share']:.1%} of the loss weight (at least "
                 f"{evidence['min_amplification']:.1f}× the frequency; threshold "
                 f"{config.min_weight_amplification:.1f}×) and {amplified_share:.0%} of the loss change "
                 f"{change.loss_change:+.4f} (threshold {config.min_amplified_share:.0%}).{unweighted}"),
        classes=names,
        evidence=evidence,
        thresholds={"amplified_share": config.min_amplified_share,
                    "min_amplification": config.min_weight_amplification},
        next_steps=("Soften the class weights (e.g. the square root of inverse frequency) or replace them with "
                    "class-balanced sampling.",
                    "Judge checkpoints by the unweighted loss or macro F1 as well as the weighted loss."),
        figure=FigureAnchor.LOSS_SHARES,
    )


def _growth(before: float, after: float) -> float:
    """after / before - 1; from 0, any rise is infinite growth."""
    if before > 0:
        return after / before - 1.0
    return float("inf") if after > 0 else 0.0


def logit_growth(analysis: RunAnalysis, config: DiagnosisConfig) -> Finding | None:
    """Median logit norm and absolute margin grew after the loss minimum; predictions flipped less often."""
    change = _change(analysis, config)
    if change.best == change.last:
        return None
    best, last = analysis.epochs[change.best], analysis.epochs[change.last]
    norm_growth = _growth(best.logits.median_logit_norm, last.logits.median_logit_norm)
    margin_growth = _growth(best.logits.median_absolute_margin, last.logits.median_absolute_margin)
    split = max(change.best, 1)        # flips up to the loss minimum against flips after it
    before, after = analysis.flip_rates[:split], analysis.flip_rates[split:]
    if norm_growth < config.min_norm_growth or margin_growth < config.min_margin_growth \
            or (len(after) and after.mean() >= before.mean()):
        return None
    thresholds = {"norm_growth": config.min_norm_growth, "margin_growth": config.min_margin_growth}
    evidence = {"median_logit_norm_best": best.logits.median_logit_norm,
                "median_logit_norm_last": last.logits.median_logit_norm, "norm_growth": norm_growth,
                "median_absolute_margin_best": best.logits.median_absolute_margin,
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
        summary=(f"From epoch {best.epoch} to {last.epoch} the median centred-logit norm went "
                 f"{best.logits.median_logit_norm:.2f} → {last.logits.median_logit_norm:.2f} (threshold "
                 f"+{config.min_norm_growth:.0%}) and the median absolute margin "
                 f"{best.logits.median_absolute_margin:.2f} → {last.logits.median_absolute_margin:.2f} (threshold "
                 f"+{config.min_margin_growth:.0%}).{flips} Larger logits make every mistake cost more without "
                 f"changing the argmax."),
        evidence=evidence,
        thresholds=thresholds,
        next_steps=("Cap logit growth: raise weight decay, or use LogitNorm or label smoothing.",
                    f"Lower the learning rate late in training, or stop near epoch {best.epoch}."),
        figure=FigureAnchor.LOGITS,
    )


def suspect_labels(analysis: RunAnalysis, config: DiagnosisConfig) -> Finding | None:
    """Items right in at most suspect_max_fraction_correct of epochs and confidently wrong at the last one."""
    if len(analysis.epochs) < config.suspect_min_epochs:
        return None
    table = analysis.cartography
    chosen = persistent_confident_errors(table, config.suspect_max_fraction_correct,
                                         config.suspect_max_mean_true_confidence, config.suspect_min_confidence)
    if len(chosen) == 0:
        return None
    weighted_nll = analysis.class_weights[table.labels] * table.final_nll
    loss_share = float(weighted_nll[chosen].sum() / weighted_nll.sum())
    keep = np.ones(len(table.labels), bool)
    keep[chosen] = False
    item_weights = analysis.class_weights[table.labels]
    last_loss = analysis.epochs[-1].metrics.loss
    listed = tuple(str(i) for i in table.ids[chosen[:config.max_listed_items]])
    evidence = {"n_suspect_items": float(len(chosen)), "suspect_item_share": len(chosen) / len(table.labels),
                "max_fraction_correct": float(table.fraction_correct[chosen].max()),
                "max_mean_true_confidence": float(table.mean_true_confidence[chosen].max()),
                "min_final_confidence": float(table.final_confidence[chosen].min()),
                "suspect_loss_share": loss_share, "last_loss": last_loss}
    if keep.any() and item_weights[keep].sum() > 0:
        evidence["last_loss_without_suspects"] = float(weighted_nll[keep].sum() / item_weights[keep].sum())
    return Finding(
        id=FindingKind.SUSPECT_LABELS.value,
        severity=Severity.MEDIUM if loss_share >= config.suspect_min_loss_share else Severity.LOW,
        score=loss_share,
        title=f"{len(chosen)} item{'s are' if len(chosen) > 1 else ' is'} persistently and confidently wrong: "
              f"possible label errors",
        summary=(f"{len(chosen)} items ({evidence['suspect_item_share']:.2%}) were right in at most "
                 f"{config.suspect_max_fraction_correct:.0%} of the {len(analysis.epochs)} epochs, gave their label a "
                 f"mean probability of at most {config.suspect_max_mean_true_confidence:.0%}, and are predicted "
                 f"as another class with confidence ≥ {config.suspect_min_confidence:.0%} at the last epoch; they "
                 f"carry {loss_share:.0%} of its loss (medium at ≥ {config.suspect_min_loss_share:.0%}). "
                 f"Ids: {_ids_text(listed, len(chosen))}."),
        classes=tuple(dict.fromkeys(analysis.classes[c] for c in table.labels[chosen])),
        evidence=evidence,
        thresholds={"max_fraction_correct": config.suspect_max_fraction_correct,
                    "max_mean_true_confidence": config.suspect_max_mean_true_confidence,
                    "min_final_confidence": config.suspect_min_confidence,
                    "suspect_loss_share": config.suspect_min_loss_share},
        next_steps=(f"Audit these ids: {_ids_text(listed, len(chosen))}.",
                    "Relabel or drop the ones that are mislabelled, then re-evaluate; "
                    "a noise-robust loss or label smoothing limits what the rest can cost."),
        figure=FigureAnchor.CONFIDENT_ERRORS,
        item_ids=listed,
    )


def genuine_degradation(analysis: RunAnalysis, config: DiagnosisConfig) -> Finding | None:
    """The loss after temperature scaling rose beyond noise, or macro F1 fell beyond its CI."""
    change = _change(analysis, config)
    if change.best == change.last:
        return None
    best, last = analysis.epochs[change.best], analysis.epochs[change.last]
    scaled_rise = (last.scaled_loss - best.scaled_loss) / best.scaled_loss if best.scaled_loss > 0 else 0.0
    loss_ci = analysis.bootstrap.loss_change
    # Per-item scaled losses are not kept, so the raw loss change's interval stands in for the noise of the
    # scaled one (scaling shrinks the heavy tail of confident errors, so the raw interval is the wider one).
    noise_half_width = (loss_ci.high - loss_ci.low) / 2.0
    scaled_rose = scaled_rise >= config.min_scaled_loss_rise and last.scaled_loss - best.scaled_loss > noise_half_width
    f1 = analysis.bootstrap.macro_f1_change
    f1_fell = f1.high < 0 and -f1.estimate >= config.min_macro_f1_drop
    if not (scaled_rose or f1_fell):
        return None
    what = " and ".join(
        part for part, holds in ((f"the loss after temperature scaling rose {best.scaled_loss:.4f} → "
                                  f"{last.scaled_loss:.4f} (+{scaled_rise:.1%}, threshold "
                                  f"{config.min_scaled_loss_rise:.0%}, beyond the noise half-width "
                                  f"{noise_half_width:.4f})", scaled_rose),
                                 (f"macro F1 fell {best.macro_f1_score:.4f} → {last.macro_f1_score:.4f} (CI of the "
                                  f"change [{f1.low:+.4f}, {f1.high:+.4f}], drop threshold {config.min_macro_f1_drop})",
                                  f1_fell)) if holds)
    return Finding(
        id=FindingKind.GENUINE_DEGRADATION.value,
        severity=Severity.HIGH,
        score=max(scaled_rise, -f1.estimate),
        title="Genuine degradation: the model got worse, not only overconfident",
        summary=f"From epoch {best.epoch} to {last.epoch}, {what}. Temperature scaling cannot undo this.",
        evidence={"scaled_loss_best": best.scaled_loss, "scaled_loss_last": last.scaled_loss,
                  "scaled_loss_rise": scaled_rise, "scaled_loss_change": last.scaled_loss - best.scaled_loss,
                  "macro_f1_best": best.macro_f1_score, "macro_f1_last": last.macro_f1_score,
                  "macro_f1_drop": -f1.estimate, "macro_f1_change_ci_high": f1.high},
        thresholds={"scaled_loss_rise": config.min_scaled_loss_rise, "scaled_loss_change": noise_half_width,
                    "macro_f1_drop": config.min_macro_f1_drop,
                    "macro_f1_change_ci_high": 0.0},
        next_steps=(f"This is real overfitting: stop earlier "
                    f"({_pick(analysis, 'lowest loss after temperature scaling')} "
                    f"has the lowest loss after scaling, {_pick(analysis, 'highest macro F1')} the best macro F1).",
                    "Regularise: raise weight decay or dropout, add data augmentation or more data; "
                    "lower the learning rate or shorten the schedule."),
        figure=FigureAnchor.CALIBRATION,
    )


def noise(analysis: RunAnalysis, config: DiagnosisConfig) -> Finding | None:
    """Loss, accuracy and macro-F1 changes all lie within their bootstrap intervals."""
    b = analysis.bootstrap
    intervals = {"loss_change": b.loss_change, "accuracy_change": b.accuracy_change,
                 "macro_f1_change": b.macro_f1_change}
    if b.from_index == b.to_index or any(i.excludes_zero for i in intervals.values()):
        return None
    return Finding(
        id=FindingKind.NOISE.value,
        severity=Severity.MEDIUM,
        score=0.0,
        title="The changes are within noise: don't over-interpret them",
        summary=(f"From epoch {_epoch(analysis, b.from_index)} to {_epoch(analysis, b.to_index)}, every "
                 f"{b.confidence_level:.0%} bootstrap interval ({b.n_resamples} resamples of {b.n_units} "
                 f"{b.resampled_unit}) contains zero: "
                 + "; ".join(f"{name.replace('_', ' ')} {i.estimate:+.4f} [{i.low:+.4f}, {i.high:+.4f}]"
                             for name, i in intervals.items()) + "."),
        evidence={**{name: i.estimate for name, i in intervals.items()},
                  **{f"{name}_ci_low": i.low for name, i in intervals.items()},
                  **{f"{name}_ci_high": i.high for name, i in intervals.items()}},
        next_steps=("Don't act on these differences alone: enlarge the validation set or compare several seeds.",
                    "Any of the candidate checkpoints will do; pick by the metric you deploy."),
        figure=FigureAnchor.CURVES,
    )


RULES = (nll_overfit_accuracy_holds, overconfidence, confident_errors_dominate, class_concentration,
         class_weight_amplification, logit_growth, suspect_labels, genuine_degradation, noise)
SEVERITY_ORDER = {Severity.HIGH: 0, Severity.MEDIUM: 1, Severity.LOW: 2}


def logged_loss_mismatch(reconciliation, config: DiagnosisConfig) -> Finding | None:
    """The training log's validation loss is not the loss of these checkpoints on this data."""
    if reconciliation is None or reconciliation.agrees:
        return None
    rows = reconciliation.rows
    worst = rows.loc[rows["relative_difference"].idxmax()]
    cause = reconciliation.explanation_text
    return Finding(
        id=FindingKind.LOGGED_LOSS_MISMATCH.value,
        severity=Severity.HIGH,
        score=float(min(reconciliation.max_relative_difference, 1e6)),
        title=f"The logged validation loss differs from the recomputed one by up to "
              f"{reconciliation.max_relative_difference:.1%}",
        summary=(f"At {reconciliation.key} {int(worst[reconciliation.key])} the training log says "
                 f"{worst['logged_val_loss']:.4f}, the checkpoint gives {worst['recomputed_loss']:.4f} on this "
                 f"validation set ({reconciliation.n_matched} epochs compared, tolerance "
                 f"{config.logged_loss_tolerance:.0e} relative). It matches {cause}. {reconciliation.batch_note}."),
        evidence={"max_relative_difference": reconciliation.max_relative_difference,
                  "n_matched": reconciliation.n_matched,
                  "logged_val_loss": float(worst["logged_val_loss"]), "recomputed_loss": float(worst["recomputed_loss"])},
        thresholds={"max_relative_difference": config.logged_loss_tolerance},
        next_steps=("Fix the logged loss before reading its curve: reduce as your loss does (sum of weighted NLL "
                    "over the sum of weights, over all items), validate in eval mode, and log the weights you save.",
                    "Judge the run by the recomputed curve in this report meanwhile."),
        figure=FigureAnchor.TRAIN_LOG,
    )


def diagnose(analysis: RunAnalysis, config: DiagnosisConfig = DiagnosisConfig(),
             reconciliation=None) -> list[Finding]:
    """All findings that fire, highest severity and score first; `reconciliation` compares a training log."""
    found = [f for rule in RULES if (f := rule(analysis, config)) is not None]
    if (mismatch := logged_loss_mismatch(reconciliation, config)) is not None:
        found.append(mismatch)
    return sorted(found, key=lambda f: (SEVERITY_ORDER[f.severity], -f.score))


# What each finding says about "model or something else?", in the order the verdict cites them.
CAUSES = (
    (FindingKind.NOISE, "Possibly nothing at all"),
    (FindingKind.OVERCONFIDENCE, "Mostly calibration, not the model's decisions"),
    (FindingKind.GENUINE_DEGRADATION, "The model really got worse"),
    (FindingKind.CONFIDENT_ERRORS_DOMINATE, "The rise sits in wrong predictions made more confidently"),
    (FindingKind.LOGIT_GROWTH, "The mechanism is growing logits"),
    (FindingKind.SUSPECT_LABELS, "Partly the labels"),
    (FindingKind.CLASS_WEIGHT_AMPLIFICATION, "Partly the class weights"),
    (FindingKind.CLASS_CONCENTRATION, "Concentrated in a few classes"),
)
MAX_STEPS = 4


def verdict(analysis: RunAnalysis, findings: list[Finding]) -> list[Answer]:
    """Short answers to: what happened, is it the model or something else, what to try (citing findings)."""
    by_id = {f.id: f for f in findings}
    b = analysis.bootstrap
    best, last = analysis.epochs[analysis.best_loss_index], analysis.epochs[-1]
    if analysis.best_loss_index == len(analysis.epochs) - 1:
        what = (f"Validation loss is still falling: it is lowest at the last epoch ({last.epoch}, "
                f"{last.metrics.loss:.4f}), so there is no rise to explain; accuracy {last.metrics.accuracy:.2%}.")
    else:
        what = (f"Validation loss is lowest at epoch {best.epoch} ({best.metrics.loss:.4f}) and ends at "
                f"{last.metrics.loss:.4f} (change {b.loss_change.estimate:+.4f}, {b.confidence_level:.0%} CI "
                f"[{b.loss_change.low:+.4f}, {b.loss_change.high:+.4f}]); accuracy {best.metrics.accuracy:.2%} → "
                f"{last.metrics.accuracy:.2%} (CI of the change [{b.accuracy_change.low:+.2%}, "
                f"{b.accuracy_change.high:+.2%}]); macro F1 {best.macro_f1_score:.3f} → {last.macro_f1_score:.3f}.")
    what_cites = [k.value for k in (FindingKind.NLL_OVERFIT_ACCURACY_HOLDS, FindingKind.GENUINE_DEGRADATION,
                                    FindingKind.NOISE) if k.value in by_id]
    what += "".join(f" See “{by_id[k].title}”." for k in what_cites)
    causes = [(kind.value, label) for kind, label in CAUSES if kind.value in by_id]
    if causes:
        cause = " ".join(f"{label}: “{by_id[kind].title}”." for kind, label in causes)
        if FindingKind.OVERCONFIDENCE.value in by_id and FindingKind.GENUINE_DEGRADATION.value not in by_id:
            cause += " No sign of genuine degradation: the loss after temperature scaling and macro F1 held."
    else:
        cause = "No rule fired: nothing points beyond ordinary variation between checkpoints."
    first_steps = {}                   # each finding's first next step, in rank order, without repeats
    for f in findings:
        if f.next_steps and f.next_steps[0] not in first_steps.values() and len(first_steps) < MAX_STEPS:
            first_steps[f.id] = f.next_steps[0]
    try_text = " ".join(first_steps.values()) if first_steps else \
        "Nothing stands out; keep the checkpoint with the lowest validation loss."
    return [Answer("What happened?", what, tuple(what_cites)),
            Answer("Is it the model or something else?", cause, tuple(kind for kind, _ in causes)),
            Answer("What to try?", try_text, tuple(first_steps))]
