"""How the diagnosis words its numbers, in one place for the causes, the findings and the verdict: intervals,
shares of the rise, item ids, and the epoch a checkpoint criterion picks."""
from __future__ import annotations

from ..analyze.bootstrap import Interval
from ..analyze.run import RunAnalysis
from ..analyze.training import TrainingComparison

__all__ = ["IDS_IN_TEXT", "CLASSES_IN_TEXT", "ci_text", "share_text", "ids_text", "listed_text", "epoch_picked_by",
           "gap_text"]

IDS_IN_TEXT = 10          # item ids a sentence shows; metrics.json lists up to DiagnosisConfig.max_listed_items
CLASSES_IN_TEXT = 10      # classes a sentence lists (at 1,000 classes one cause's facts listed 300 and filled
                          # four PDF pages); metrics.json has every class's numbers


def ci_text(interval: Interval, spec: str = "+.4f") -> str:
    """'CI [low, high]' in the given format."""
    return f"CI [{interval.low:{spec}}, {interval.high:{spec}}]"


def share_text(share: Interval) -> str:
    """'87% of the rise (CI 67% to 145%)'."""
    return f"{share.estimate:.0%} of the rise (CI {share.low:.0%} to {share.high:.0%})"


def ids_text(ids: tuple[str, ...], total: int) -> str:
    """The first ids, and where the rest are."""
    shown = ", ".join(ids[:IDS_IN_TEXT])
    if total <= IDS_IN_TEXT:
        return shown
    listed = "all listed" if len(ids) == total else f"the first {len(ids)} listed"
    return shown + f" … ({total} in all; {listed} in metrics.json)"


def listed_text(parts: list[str], separator: str = ", ") -> str:
    """The first CLASSES_IN_TEXT parts (a class each, most important first), and how many more there are."""
    shown = separator.join(parts[:CLASSES_IN_TEXT])
    if len(parts) <= CLASSES_IN_TEXT:
        return shown
    return shown + f" … and {len(parts) - CLASSES_IN_TEXT} more ({len(parts)} classes in all; all in metrics.json)"


def epoch_picked_by(analysis: RunAnalysis, criterion: str) -> str:
    """'epoch N': the epoch a criterion of the checkpoint table picks."""
    return f"epoch {analysis.epochs[analysis.checkpoint_choice.index_by(criterion)].epoch}"


def gap_text(training: TrainingComparison) -> str:
    """'the generalisation gap (validation minus training-subset loss) went +0.0500 → +0.3100 (change ...)', saying
    when the change's interval includes 0."""
    return (f"the generalisation gap (validation minus training-subset loss) went {training.gap_before.estimate:+.4f} → "
            f"{training.gap_after.estimate:+.4f} (change {training.gap_change.estimate:+.4f}, "
            f"{ci_text(training.gap_change)}{'' if training.gap_change.excludes_zero else ', within noise'}), "
            "the training-subset loss changed "
            f"{training.train_loss_change.estimate:+.4f} ({ci_text(training.train_loss_change)})")
