"""Rules: each reads thresholds from DiagnosisConfig and returns a Finding or None."""
from __future__ import annotations

from dataclasses import dataclass

from ..analyze.run import RunAnalysis
from .findings import Finding, Severity

__all__ = ["DiagnosisConfig", "diagnose", "verdict", "Answer"]


@dataclass(frozen=True)
class DiagnosisConfig:
    """Every threshold the rules compare against, in one place (printed beside each number)."""

    min_loss_rise: float = 0.05          # relative rise of the loss after its minimum that counts as a rise
    max_accuracy_drop: float = 0.01      # absolute accuracy drop still called "held"


@dataclass(frozen=True)
class Answer:
    question: str
    text: str


def nll_overfit_accuracy_holds(analysis: RunAnalysis, config: DiagnosisConfig) -> Finding | None:
    """Loss rose after its minimum while accuracy held or improved."""
    best, last = analysis.epochs[analysis.best_loss_index], analysis.epochs[-1]
    rise = (last.metrics.loss - best.metrics.loss) / best.metrics.loss
    accuracy_change = last.metrics.accuracy - best.metrics.accuracy
    if analysis.best_loss_index == len(analysis.epochs) - 1 or rise < config.min_loss_rise \
            or accuracy_change < -config.max_accuracy_drop:
        return None
    return Finding(
        id="nll_overfit_accuracy_holds",
        severity=Severity.HIGH,
        score=rise,
        title=f"Loss rose {rise:.0%} after epoch {best.epoch} while accuracy held",
        summary=(f"Validation loss bottomed out at {best.metrics.loss:.4f} (epoch {best.epoch}) and rose to "
                 f"{last.metrics.loss:.4f} by epoch {last.epoch}; accuracy went from {best.metrics.accuracy:.2%} "
                 f"to {last.metrics.accuracy:.2%}."),
        evidence={"best_epoch": best.epoch, "best_loss": best.metrics.loss, "last_loss": last.metrics.loss,
                  "relative_loss_rise": rise, "accuracy_change": accuracy_change},
        thresholds={"relative_loss_rise": config.min_loss_rise, "accuracy_change": -config.max_accuracy_drop},
        next_steps=(f"Select the checkpoint by the metric you care about: epoch {best.epoch} by loss, "
                    f"epoch {analysis.epochs[analysis.best_accuracy_index].epoch} by accuracy.",),
        figure="fig-curves",
    )


RULES = (nll_overfit_accuracy_holds,)


def diagnose(analysis: RunAnalysis, config: DiagnosisConfig = DiagnosisConfig()) -> list[Finding]:
    """All findings that fire, highest severity and score first."""
    order = {Severity.HIGH: 0, Severity.MEDIUM: 1, Severity.LOW: 2}
    found = [f for rule in RULES if (f := rule(analysis, config)) is not None]
    return sorted(found, key=lambda f: (order[f.severity], -f.score))


def verdict(analysis: RunAnalysis, findings: list[Finding]) -> list[Answer]:
    """Short answers to: what happened, is it the model or something else, what to try."""
    best, last = analysis.epochs[analysis.best_loss_index], analysis.epochs[-1]
    what = (f"Validation loss is lowest at epoch {best.epoch} ({best.metrics.loss:.4f}) and ends at "
            f"{last.metrics.loss:.4f}; accuracy {best.metrics.accuracy:.2%} → {last.metrics.accuracy:.2%}.")
    if findings:
        what += " Main finding: " + findings[0].title + "."
    steps = findings[0].next_steps[0] if findings and findings[0].next_steps else \
        "Nothing stands out; keep the checkpoint with the lowest validation loss."
    return [Answer("What happened?", what),
            Answer("Model or something else?", "See the findings below; each cites its numbers."),
            Answer("What to try?", steps)]
