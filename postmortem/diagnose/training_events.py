"""The rise tied to the training setup: learning-rate events it begins right after, and the optimizer's weight decay
named where the advice is to regularise.

A rise begins at the first checkpoint after the lower epoch compared (comparison.from_index + 1: the loss there is
above its minimum). An LR event (analyze.schedule.lr_events) first shows in the checkpoint at its `to_index`; a
checkpoint saved after `scheduler.step()` already holds the next epoch's lr, one saved before it the lr it trained
with, so the same schedule shows one checkpoint apart depending on the loop. The rise is tied to an event when

    0 <= onset_index - event.to_index <= DiagnosisConfig.lr_event_window

which covers both orders. Where several events fall in the window, the one nearest the onset is kept (an annealing
that ends one checkpoint before a warm restart is not what the restart's rise follows). A tie is a coincidence in
time, measured to the checkpoint, not a proof: the sentence says so and names what would test it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..analyze.schedule import LrEvent, LrEventKind
from ..load.training_setup import TrainingSetup, WeightDecayMode
from .comparison import Comparison, Status
from .config import DiagnosisConfig

__all__ = ["TrainingEvent", "tie_to_lr_events", "training_event_text", "training_event_step", "weight_decay_advice",
           "training_event_to_json"]

@dataclass(frozen=True)
class TrainingEvent:
    """An LR event the rise begins right after: the event, the checkpoint the rise begins at (index, epoch), and how
    many checkpoints after the event's last one that is (0: the same checkpoint)."""

    event: LrEvent
    rise_onset_index: int
    rise_onset_epoch: int
    checkpoints_to_rise: int

    @property
    def name(self) -> str:
        """'lr_drop', 'lr_restart' or 'lr_warmup' (metrics.json's kind)."""
        return f"lr_{self.event.kind.value}"


def tie_to_lr_events(comparison: Comparison, events: tuple[LrEvent, ...], epochs: list[int],
                     window: int) -> tuple[TrainingEvent, ...]:
    """The LR event(s) nearest before a loss rise (status RISE) that begins within `window` checkpoints after them
    (module doc; two only where a drop and a rise in different param groups share a checkpoint); `epochs` are the
    evaluated epoch numbers by index."""
    if comparison.status is not Status.RISE or comparison.from_index + 1 >= len(epochs):
        return ()
    onset = comparison.from_index + 1
    within = [e for e in events if 0 <= onset - e.to_index <= window]
    nearest = max((e.to_index for e in within), default=None)
    return tuple(TrainingEvent(event=e, rise_onset_index=onset, rise_onset_epoch=epochs[onset],
                               checkpoints_to_rise=onset - e.to_index)
                 for e in within if e.to_index == nearest)


def _lr_text(rates: tuple[float, ...]) -> str:
    """Each param group's lr ('0.1' or '0.1/0.01'); an event has at least one group with both values."""
    return "/".join(f"{r:.3g}" for r in rates)


def _checkpoints_text(tie: TrainingEvent) -> str:
    n = tie.checkpoints_to_rise
    return "at the same checkpoint" if n == 0 else f"{n} checkpoint{'s' if n > 1 else ''} later"


def training_event_text(tie: TrainingEvent, config: DiagnosisConfig, comparison: Comparison) -> str:
    """One sentence tying the rise to the event, with the numbers and the reading it supports (where the accuracy
    change's interval is below 0, a drop's rise is not only the NLL overfitting, and the sentence says so)."""
    e = tie.event
    accuracy_fell = comparison.ledger.accuracy_change.below_zero
    what = {LrEventKind.DROP: "dropped", LrEventKind.RESTART: "was raised again (a warm restart)",
            LrEventKind.WARMUP: "was raised (warm-up)"}[e.kind]
    head = (f"The rise begins at epoch {tie.rise_onset_epoch}, {_checkpoints_text(tie)} than the learning rate "
            f"{what}: {_lr_text(e.lr_before)} → {_lr_text(e.lr_after)} between epochs {e.from_epoch} and "
            f"{e.to_epoch} (change {e.relative_change:+.0%} relative to the larger; an event is a change of at least "
            f"{config.min_lr_change:.0%}, tied when the rise begins within {config.lr_event_window} checkpoints)")
    reading = {
        LrEventKind.DROP: ("after a drop the model fits the training set more tightly; its NLL often overfits "
                           "while accuracy still improves (Guo et al. 2017)"
                           + ("; here accuracy fell too" if accuracy_fell else "")),
        LrEventKind.RESTART: ("a restart moves the weights out of the minimum they reached; the loss often rises "
                              "and falls again as the cycle anneals"),
        LrEventKind.WARMUP: "a learning rate this high may be too high for this model",
    }[e.kind]
    return f"{head}: {reading}. This is a coincidence in time, measured to the checkpoint."


def training_event_step(tie: TrainingEvent, best_epoch: int) -> str:
    """What to try about the event."""
    e = tie.event
    if e.kind is LrEventKind.DROP:
        return (f"Around the LR drop at epoch {e.to_epoch}: keep the checkpoint from just before the rise (epoch "
                f"{best_epoch}), or make the low-lr phase shorter or regularise it (weight decay, label smoothing); "
                "a run with the drop moved later would show whether the rise moves with it.")
    if e.kind is LrEventKind.RESTART:
        return (f"Judge the run at the end of each LR cycle, not across the restart at epoch {e.to_epoch}: compare "
                "the checkpoints where the lr is lowest, and keep the best of those.")
    return (f"Try a lower peak learning rate or a longer warm-up than {_lr_text(e.lr_after)} reached by epoch "
            f"{e.to_epoch}.")


def weight_decay_advice(setup: TrainingSetup | None) -> str:
    """One sentence on regularising with the optimizer the checkpoints record: Adam's coupled L2 against AdamW's
    decoupled decay (Loshchilov & Hutter 2019), or what is missing; never a guess where the state is absent."""
    optimizer = setup.optimizer if setup is not None else None
    if optimizer is None:
        return ("Weight decay: the checkpoints record no optimizer state, so what the run used is unknown; check the "
                "training script.")
    decays = sorted({g.weight_decay for g in optimizer.param_groups if g.weight_decay is not None})
    decay = "/".join(f"{d:g}" for d in decays) or "unknown"
    kind = optimizer.kind or "the optimizer (kind not recorded)"
    adam = (optimizer.kind or "").lower().startswith("adam")
    if optimizer.weight_decay_mode is WeightDecayMode.NONE:
        return (f"Weight decay: {kind} ran with none (weight_decay 0 in every param group); add some"
                + (", decoupled: torch.optim.AdamW." if adam else "."))
    if optimizer.weight_decay_mode is WeightDecayMode.COUPLED and adam:
        return (f"Weight decay: {kind} applies weight_decay={decay} as L2 added to the gradient (coupled), which "
                "Adam's per-parameter scaling weakens most where gradients are large; switch to torch.optim.AdamW, "
                "whose decoupled decay acts as intended (its useful values are far larger, e.g. 1e-2), rather than "
                "raising the L2 term.")
    if optimizer.weight_decay_mode is WeightDecayMode.DECOUPLED:
        return f"Weight decay: {kind} decays the weights directly (decoupled) with weight_decay={decay}; raise it."
    if optimizer.weight_decay_mode is WeightDecayMode.COUPLED:
        return f"Weight decay: {kind} applies weight_decay={decay} as L2 added to the gradient; raise it."
    return (f"Weight decay: {kind} runs with weight_decay={decay}, but {optimizer.weight_decay_detail}; if it is "
            "Adam's coupled L2, switch to torch.optim.AdamW, otherwise raise it.")


def training_event_to_json(tie: TrainingEvent) -> dict[str, Any]:
    """The metrics.json form (verdict.training_events[i])."""
    e = tie.event
    return {"kind": tie.name, "from_epoch": e.from_epoch, "to_epoch": e.to_epoch, "lr_before": list(e.lr_before),
            "lr_after": list(e.lr_after), "relative_change": e.relative_change,
            "rise_onset_epoch": tie.rise_onset_epoch, "checkpoints_to_rise": tie.checkpoints_to_rise}
