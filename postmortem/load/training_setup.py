"""The training setup a checkpoint records: which optimizer, each param group's learning rate, weight decay, betas
or momentum, how its weight decay acts, the scheduler and its last learning rate. Read from the optimizer and
scheduler state that training tools save beside the weights, without running code (README, "Training setup").

Where it is read (the layouts of README's "Checkpoint layouts"):
- a checkpoint dict's optimizer state under optimizer_state_dict, optimizer, optim, optimizer_state (your own
  loop, timm, torchvision) or Lightning's optimizer_states list, its scheduler's under scheduler_state_dict,
  lr_scheduler, scheduler, lr_scheduler_state_dict or Lightning's lr_schedulers, and timm's and torchvision's
  `args` Namespace (opt, lr, weight_decay, momentum, sched / lr_scheduler), read from its inert placeholder;
- a Hugging Face checkpoint-N/ folder: optimizer.pt and scheduler.pt (memory-mapped, so the optimizer's moment
  tensors are never read), training_args.bin (inertly: optim, learning_rate, weight_decay, lr_scheduler_type) and
  trainer_state.json's log_history (the learning rate logged at or before the checkpoint's step);
- a predictions file: lr (one value, or one per param group), optimizer (a class name), weight_decay.

Which optimizer it was: a name the file gives (a pickled optimizer's class, a predictions file's 'optimizer', a
training config's optimizer name), else *inferred* from the param groups' keys, which say no more than they show:
torch saves the same keys for Adam and AdamW, told apart only by decoupled_weight_decay (torch >= 2.6), so an older
state dict reads "Adam or AdamW" with its weight-decay mode unknown. Nothing absent is filled in.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .checkpoint_contents import as_int, attributes
from .inert_pickle import InertObject

__all__ = ["WeightDecayMode", "KindBasis", "ParamGroupSetup", "OptimizerSetup", "SchedulerSetup", "ConfiguredSetup",
           "TrainingSetup", "TrainingSetupRead", "OPTIMIZER_KEYS", "SCHEDULER_KEYS", "checkpoint_training_setup",
           "folder_training_setup", "predictions_training_setup"]

OPTIMIZER_KEYS = ("optimizer_state_dict", "optimizer", "optim", "optimizer_state", "optimizer_states")
SCHEDULER_KEYS = ("scheduler_state_dict", "lr_scheduler", "scheduler", "lr_scheduler_state_dict", "lr_schedulers")
ARGS_KEY = "args"                        # timm's and torchvision's train.py: the argparse.Namespace
HF_OPTIMIZER_FILE, HF_SCHEDULER_FILE, HF_ARGS_FILE = "optimizer.pt", "scheduler.pt", "training_args.bin"
HF_STATE_FILE = "trainer_state.json"
PREDICTION_KEYS = ("lr", "optimizer", "weight_decay")
# A training config's fields: (optimizer, lr, weight_decay, momentum, scheduler names to try).
ARGS_FIELDS = ("opt", "lr", "weight_decay", "momentum", ("sched", "lr_scheduler"))
HF_ARGS_FIELDS = ("optim", "learning_rate", "weight_decay", None, ("lr_scheduler_type",))
CONFIG_OPTIMIZER_FIELD = {ARGS_KEY: "args.opt", HF_ARGS_FILE: "training_args.bin optim"}


class WeightDecayMode(str, Enum):
    """How the optimizer applies its weight decay."""

    COUPLED = "coupled"        # L2: wd * w added to the gradient (SGD, Adam(weight_decay=...)): Adam's step rescales it
    DECOUPLED = "decoupled"    # the weights shrink by lr * wd * w directly (AdamW, Adam(decoupled_weight_decay=True))
    NONE = "none"              # weight_decay 0 in every param group, or an optimizer without weight decay
    UNKNOWN = "unknown"        # the state cannot tell (Adam or AdamW before torch 2.6; an optimizer not known here)


class KindBasis(str, Enum):
    """How the optimizer's kind is known."""

    NAMED = "named"            # the file names its class (a pickled optimizer, a predictions file's 'optimizer')
    CONFIG = "config"          # a training config names it (timm / torchvision args.opt, training_args.bin optim)
    INFERRED = "inferred"      # inferred from the param groups' keys, no further than they show


# How each optimizer class applies weight decay (torch's, timm's and Hugging Face's names).
C, D, N = WeightDecayMode.COUPLED, WeightDecayMode.DECOUPLED, WeightDecayMode.NONE
CLASS_WEIGHT_DECAY = {"SGD": C, "Adam": C, "AdamW": D, "NAdam": C, "NAdamW": D, "RAdam": C, "Adamax": C, "RMSprop": C,
                      "RMSpropTF": C, "Adagrad": C, "Adadelta": C, "ASGD": C, "Rprop": N, "LBFGS": N, "SparseAdam": N,
                      "Adafactor": D, "Lion": D}
# A name's words that name a class: 'adamw_torch_fused' (Hugging Face), 'lookahead_adam', 'momentum' (timm), 'sgd'.
NAME_WORDS = {name.lower(): name for name in CLASS_WEIGHT_DECAY} | {"momentum": "SGD", "nesterov": "SGD"}
TORCH_FLAGS = frozenset({"maximize", "foreach", "capturable", "differentiable", "fused"})
# Param-group keys that say nothing about the optimizer: its parameters and their names (torch >= 2.5), what
# schedulers write (initial_lr; OneCycleLR's and CyclicLR's max_lr, min_lr, base_momentum, max_momentum), timm's
# layer-decay scale and a group's name.
NEUTRAL_GROUP_KEYS = frozenset({"params", "param_names", "initial_lr", "max_lr", "min_lr", "base_momentum",
                                "max_momentum", "lr_scale", "name"})
# torch's optimizers by their param-group keys beside TORCH_FLAGS: (keys every version saves, keys some versions add).
# "Adam" stands for Adam and AdamW, which save the same keys; decoupled_weight_decay (torch >= 2.6) tells them apart.
TORCH_OPTIMIZER_KEYS = {
    "Adam": ({"lr", "betas", "eps", "weight_decay", "amsgrad"}, {"decoupled_weight_decay"}),
    "NAdam": ({"lr", "betas", "eps", "weight_decay", "momentum_decay"}, {"decoupled_weight_decay"}),
    "RAdam": ({"lr", "betas", "eps", "weight_decay"}, {"decoupled_weight_decay"}),
    "Adamax": ({"lr", "betas", "eps", "weight_decay"}, set()),
    "SGD": ({"lr", "momentum", "dampening", "weight_decay", "nesterov"}, set()),
    "RMSprop": ({"lr", "alpha", "eps", "weight_decay", "momentum", "centered"}, set()),
    "Adagrad": ({"lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"}, set()),
    "Adadelta": ({"lr", "rho", "eps", "weight_decay"}, set()),
    "ASGD": ({"lr", "lambd", "alpha", "t0", "weight_decay"}, set()),
    "Rprop": ({"lr", "etas", "step_sizes"}, set()),
    "LBFGS": ({"lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change", "history_size", "line_search_fn"},
              set()),
    "SparseAdam": ({"lr", "betas", "eps"}, set()),
    "Adafactor": ({"lr", "beta2_decay", "eps", "d", "weight_decay"}, set()),
}
# torch's schedulers by their state_dict keys: (keys that identify it, its other keys); beside SCHEDULER_BASE_KEYS.
SCHEDULER_BASE_KEYS = frozenset({"base_lrs", "last_epoch", "_step_count", "_get_lr_called_within_step", "_is_initial",
                                 "_last_lr", "verbose", "_initial_step"})
TORCH_SCHEDULER_KEYS = {
    "StepLR": ({"step_size", "gamma"}, set()),
    "MultiStepLR": ({"milestones", "gamma"}, set()),
    "ExponentialLR": ({"gamma"}, set()),
    "CosineAnnealingLR": ({"T_max", "eta_min"}, set()),
    "CosineAnnealingWarmRestarts": ({"T_0", "T_mult"}, {"T_i", "T_cur", "eta_min"}),
    "OneCycleLR": ({"total_steps"}, {"_schedule_phases", "_anneal_func_type", "anneal_func", "cycle_momentum",
                                     "use_beta1"}),
    "CyclicLR": ({"max_lrs", "total_size"}, {"step_ratio", "mode", "gamma", "scale_mode", "_scale_fn_ref",
                                             "_scale_fn_custom", "scale_fn", "cycle_momentum", "base_momentums",
                                             "max_momentums", "use_beta1"}),
    "ReduceLROnPlateau": ({"min_lrs", "patience"}, {"factor", "cooldown", "cooldown_counter", "mode", "threshold",
                                                    "threshold_mode", "best", "num_bad_epochs", "mode_worse", "eps",
                                                    "default_min_lr"}),
    # LambdaLR and MultiplicativeLR save the same keys (Hugging Face's linear and cosine schedules are LambdaLRs)
    "LambdaLR or MultiplicativeLR": ({"lr_lambdas"}, set()),
    "ConstantLR": ({"factor", "total_iters"}, set()),
    "LinearLR": ({"start_factor", "end_factor", "total_iters"}, set()),
    "PolynomialLR": ({"power", "total_iters"}, set()),
    "SequentialLR": ({"_schedulers", "_milestones"}, set()),
    "ChainedScheduler": ({"_schedulers"}, {"optimizer"}),
}
SCHEDULER_STATE_KEYS = ("last_epoch", "base_lrs", "_last_lr", "_schedulers")   # any one: a scheduler's state


class _Malformed(ValueError):
    """An optimizer or scheduler entry that looks like one but cannot be read (the setup is left out)."""


# ----------------------------------------------------------------------------- the typed setup
@dataclass(frozen=True)
class ParamGroupSetup:
    """One param group's hyper-parameters as saved (None: not saved). `lr` is the value at save time, after any
    scheduler step before the save; `initial_lr` what a scheduler started from."""

    lr: float | None = None
    initial_lr: float | None = None
    weight_decay: float | None = None
    betas: tuple[float, ...] | None = None
    momentum: float | None = None
    eps: float | None = None
    n_params: int | None = None


@dataclass(frozen=True)
class OptimizerSetup:
    """The optimizer: its kind (None: not known), how that is known (`kind_basis`, `kind_detail` in words), how its
    weight decay acts and why (`weight_decay_detail`), its param groups, its step count (the state's largest 'step',
    None where the state keeps none, as SGD's) and where it was read (`source`: a key or a file)."""

    kind: str | None
    kind_basis: KindBasis | None
    kind_detail: str
    weight_decay_mode: WeightDecayMode
    weight_decay_detail: str
    param_groups: tuple[ParamGroupSetup, ...]
    step: int | None
    source: str


@dataclass(frozen=True)
class SchedulerSetup:
    """The LR scheduler: its kind inferred from its state keys (or its pickled class), the name a training config
    gives it (`configured`), its last lr per param group, its last_epoch (steps taken) and where it was read."""

    kind: str | None
    kind_detail: str
    configured: str | None
    last_lr: tuple[float, ...] | None
    last_epoch: int | None
    source: str


@dataclass(frozen=True)
class ConfiguredSetup:
    """What the training script's configuration says (timm / torchvision `args`, Hugging Face training_args.bin):
    the configured starting values, not the state at this checkpoint."""

    source: str
    optimizer: str | None
    lr: float | None
    weight_decay: float | None
    momentum: float | None
    scheduler: str | None


@dataclass(frozen=True)
class TrainingSetup:
    """One checkpoint's training setup: each part None when the checkpoint holds no trace of it.

    `logged_lr` is the learning rate a Hugging Face trainer_state.json logged at or before the checkpoint's step;
    `sources` the keys and files read; `notes` what a reader should know (several optimizers, a contradiction)."""

    optimizer: OptimizerSetup | None = None
    scheduler: SchedulerSetup | None = None
    configured: ConfiguredSetup | None = None
    logged_lr: float | None = None
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def learning_rates(self) -> tuple[float, ...] | None:
        """Each param group's lr at this checkpoint: the optimizer's param groups, else the scheduler's last lr, else
        the logged lr; None when none is saved."""
        groups = self.optimizer.param_groups if self.optimizer else ()
        if groups and all(g.lr is not None for g in groups):
            return tuple(g.lr for g in groups)
        if self.scheduler is not None and self.scheduler.last_lr:
            return self.scheduler.last_lr
        return None if self.logged_lr is None else (self.logged_lr,)

    @property
    def learning_rate_source(self) -> str | None:
        """Where learning_rates comes from, in words."""
        groups = self.optimizer.param_groups if self.optimizer else ()
        if groups and all(g.lr is not None for g in groups):
            return f"the optimizer's param groups ({self.optimizer.source})"
        if self.scheduler is not None and self.scheduler.last_lr:
            return f"the scheduler's last lr ({self.scheduler.source})"
        return None if self.logged_lr is None else f"the lr logged in {HF_STATE_FILE}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (metrics.json's epochs[i].training_setup, the evaluation cache's metadata)."""
        def plain(value: Any) -> Any:
            if isinstance(value, Enum):
                return value.value
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if hasattr(value, "__dataclass_fields__"):
                return {name: plain(getattr(value, name)) for name in value.__dataclass_fields__}
            return value
        return plain(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingSetup:
        """The inverse of to_json (raises KeyError, TypeError or ValueError on anything else)."""
        optimizer, scheduler, configured = data["optimizer"], data["scheduler"], data["configured"]
        return cls(
            optimizer=None if optimizer is None else OptimizerSetup(
                kind=optimizer["kind"],
                kind_basis=None if optimizer["kind_basis"] is None else KindBasis(optimizer["kind_basis"]),
                kind_detail=str(optimizer["kind_detail"]),
                weight_decay_mode=WeightDecayMode(optimizer["weight_decay_mode"]),
                weight_decay_detail=str(optimizer["weight_decay_detail"]),
                param_groups=tuple(ParamGroupSetup(**{**g, "betas": None if g["betas"] is None else tuple(g["betas"])})
                                   for g in optimizer["param_groups"]),
                step=optimizer["step"], source=str(optimizer["source"])),
            scheduler=None if scheduler is None else SchedulerSetup(
                kind=scheduler["kind"], kind_detail=str(scheduler["kind_detail"]), configured=scheduler["configured"],
                last_lr=None if scheduler["last_lr"] is None else tuple(float(v) for v in scheduler["last_lr"]),
                last_epoch=scheduler["last_epoch"], source=str(scheduler["source"])),
            configured=None if configured is None else ConfiguredSetup(**configured),
            logged_lr=data["logged_lr"], sources=tuple(data["sources"]), notes=tuple(data["notes"]))


@dataclass(frozen=True)
class TrainingSetupRead:
    """What reading a checkpoint's training setup gave: the setup (None when it holds none, or it could not be read)
    and, when an entry was there but unreadable, one line naming the file and why (`problem`)."""

    setup: TrainingSetup | None = None
    problem: str | None = None


# ----------------------------------------------------------------------------- values
def _number(value: Any) -> float | None:
    """A finite number (int, float, one-element tensor or numpy scalar) as float; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


def _numbers(value: Any) -> tuple[float, ...] | None:
    """A tuple or list of numbers (betas) as floats; None unless every element is one."""
    if not isinstance(value, (tuple, list)) or not value:
        return None
    numbers = tuple(_number(v) for v in value)
    return None if any(n is None for n in numbers) else numbers


def _text(value: Any) -> str | None:
    """A name: a str, a str-valued enum (real, or the inert placeholder of one: OptimizerNames('adamw_torch'))."""
    if isinstance(value, Enum):
        value = value.value
    elif isinstance(value, InertObject) and len(value.args) == 1:
        value = value.args[0]
    return value if isinstance(value, str) and value else None


def _describe(value: Any) -> str:
    return f"a pickled {value.qualified_name()}" if isinstance(value, InertObject) else f"a {type(value).__name__}"


# ----------------------------------------------------------------------------- the optimizer's kind
def _class_named(name: str) -> str | None:
    """The optimizer class a name means, by its first word that names one ('adamw_torch_fused' -> AdamW)."""
    return next((NAME_WORDS[word] for word in re.split(r"[^a-z0-9]+", name.lower()) if word in NAME_WORDS), None)


def _group_keys(groups: Sequence[Mapping]) -> set[str]:
    return {str(key) for group in groups for key in group} - NEUTRAL_GROUP_KEYS


def _decoupled_flag(groups: Sequence[Mapping]) -> bool | None | str:
    """decoupled_weight_decay as the groups save it: True, False, None (not saved) or 'mixed'."""
    flags = {bool(g["decoupled_weight_decay"]) for g in groups if "decoupled_weight_decay" in g}
    return flags.pop() if len(flags) == 1 else (None if not flags else "mixed")


def _inferred_classes(groups: Sequence[Mapping]) -> tuple[str, ...]:
    """The torch optimizers whose param-group keys these groups carry: every key they must save present, no key they
    never save (so another library's optimizer, with keys of its own, matches none)."""
    keys = _group_keys(groups)
    matches = [name for name, (required, optional) in TORCH_OPTIMIZER_KEYS.items()
               if required <= keys <= required | optional | TORCH_FLAGS]
    if matches == ["Adam"]:
        flag = _decoupled_flag(groups)
        return ("Adam", "AdamW") if flag is None or flag == "mixed" else (("AdamW",) if flag else ("Adam",))
    return tuple(matches)


def _compatible(named_class: str, inferred: Sequence[str]) -> bool:
    """Whether a named class fits the classes the keys show: one of them, or Adam where the keys show AdamW's
    update (Adam(decoupled_weight_decay=True)); AdamW where decoupled_weight_decay = False does not fit."""
    return named_class in inferred or (named_class == "Adam" and tuple(inferred) == ("AdamW",))


def _weight_decay_mode(classes: Sequence[str], groups: Sequence[Mapping],
                       configured_decay: float | None = None) -> tuple[WeightDecayMode, str]:
    """How the weight decay acts, and why: no decay in any group (or, with no groups, in the config); else the
    decoupled_weight_decay flag saved in the groups; else the class's own way (one mode for every candidate class);
    else unknown."""
    decays = [_number(g.get("weight_decay")) for g in groups if "weight_decay" in g]
    if decays and all(d == 0 for d in decays):
        return WeightDecayMode.NONE, "weight_decay is 0 in every param group"
    if not groups and configured_decay == 0:
        return WeightDecayMode.NONE, "the configured weight_decay is 0"
    flag = _decoupled_flag(groups)
    if flag == "mixed":
        return WeightDecayMode.UNKNOWN, "decoupled_weight_decay differs between the param groups"
    if flag is not None:
        mode = WeightDecayMode.DECOUPLED if flag else WeightDecayMode.COUPLED
        return mode, f"decoupled_weight_decay = {flag} in the param groups"
    modes = {CLASS_WEIGHT_DECAY[c] for c in classes if c in CLASS_WEIGHT_DECAY}
    if len(modes) == 1 and len(classes) == len([c for c in classes if c in CLASS_WEIGHT_DECAY]):
        mode = modes.pop()
        names = " and ".join(classes)
        how = {WeightDecayMode.COUPLED: "as L2, added to the gradient",
               WeightDecayMode.DECOUPLED: "to the weights directly, apart from the gradient",
               WeightDecayMode.NONE: "not at all (no weight decay)"}[mode]
        return mode, f"{names} {'apply' if len(classes) > 1 else 'applies'} weight decay {how}"
    if set(classes) == {"Adam", "AdamW"}:
        return WeightDecayMode.UNKNOWN, ("Adam (coupled L2) and AdamW (decoupled) save the same keys; this state has "
                                         "no decoupled_weight_decay (saved by torch >= 2.6) to tell them apart")
    return WeightDecayMode.UNKNOWN, "the state does not say how its weight decay acts"


def _optimizer_setup(groups: Sequence[Mapping], state: Any, named: str | None, basis: KindBasis | None,
                     named_detail: str, source: str,
                     configured_decay: float | None = None) -> tuple[OptimizerSetup, list[str]]:
    """The optimizer from its param groups and state, with a name the file or a config gives (if any); and the notes
    to add (the keys contradicting the name)."""
    inferred = _inferred_classes(groups) if groups else ()
    named_class = _class_named(named) if named else None
    notes = []
    if named and named_class and inferred and not _compatible(named_class, inferred):
        notes.append(f"{named_detail}, but the param_group keys of {source} are those of {' or '.join(inferred)}: "
                     "the saved state is shown")
        named = None
    if named:
        kind, detail = named_class or named, named_detail
        classes: tuple[str, ...] = (named_class,) if named_class else ()
    elif inferred:
        kind, basis, classes = " or ".join(inferred), KindBasis.INFERRED, inferred
        flag = _decoupled_flag(groups)
        detail = "inferred from its param_group keys" + (f", decoupled_weight_decay = {flag}"
                                                         if isinstance(flag, bool) else "")
    else:
        keys = ", ".join(sorted(_group_keys(groups))) or "none"
        kind, basis, classes, detail = None, None, (), f"not recognised from its param_group keys ({keys})"
    mode, mode_detail = _weight_decay_mode(classes, groups, configured_decay)
    return OptimizerSetup(kind=kind, kind_basis=basis, kind_detail=detail, weight_decay_mode=mode,
                          weight_decay_detail=mode_detail,
                          param_groups=tuple(_param_group(g, i) for i, g in enumerate(groups)),
                          step=_optimizer_step(state), source=source), notes


def _param_group(group: Mapping, index: int) -> ParamGroupSetup:
    lr = _number(group.get("lr"))
    if "lr" in group and lr is None:
        raise _Malformed(f"param group {index}'s lr is {_describe(group['lr'])}, not a number")
    params = group.get("params")
    return ParamGroupSetup(lr=lr, initial_lr=_number(group.get("initial_lr")),
                           weight_decay=_number(group.get("weight_decay")), betas=_numbers(group.get("betas")),
                           momentum=_number(group.get("momentum")), eps=_number(group.get("eps")),
                           n_params=len(params) if isinstance(params, (list, tuple)) else None)


def _optimizer_step(state: Any) -> int | None:
    """The optimizer's step count: the largest 'step' its per-parameter state holds (Adam's; SGD keeps none)."""
    if not isinstance(state, Mapping):
        return None
    steps = [as_int(s["step"]) for s in state.values() if isinstance(s, Mapping) and "step" in s]
    steps = [s for s in steps if s is not None]
    return max(steps) if steps else None


def _read_optimizer(value: Any, source: str, named: str | None, basis: KindBasis | None,
                    named_detail: str) -> tuple[OptimizerSetup | None, list[str]]:
    """An optimizer entry: a state_dict, a pickled optimizer (its class names it) or a class name as text, with the
    name a config gives (if any); None (no notes) when the value is none of these. Raises _Malformed when it has
    param_groups that cannot be read."""
    if isinstance(value, str) and value:
        return _optimizer_setup([], None, value, KindBasis.NAMED, f"the checkpoint's {source!r} = {value!r}", source)
    fields = attributes(value)
    if "param_groups" not in fields:
        return None, []
    if not isinstance(value, Mapping):          # a whole pickled optimizer: its class says what it is
        class_name = value.name if isinstance(value, InertObject) else type(value).__name__
        named, basis, named_detail = class_name, KindBasis.NAMED, f"its pickled class {class_name}"
    groups = fields["param_groups"]
    if not isinstance(groups, (list, tuple)):
        raise _Malformed(f"{source!r} has param_groups of {_describe(groups)}, not a list")
    for i, group in enumerate(groups):
        if not isinstance(group, Mapping):
            raise _Malformed(f"{source!r} param group {i} is {_describe(group)}, not a dict")
    return _optimizer_setup(groups, fields.get("state"), named, basis, named_detail, source)


# ----------------------------------------------------------------------------- the scheduler
def _scheduler_kind(keys: set[str]) -> str | None:
    matches = [name for name, (required, other) in TORCH_SCHEDULER_KEYS.items()
               if required <= keys <= required | other | SCHEDULER_BASE_KEYS]
    return " or ".join(matches) if matches else None


def _read_scheduler(value: Any, source: str, configured: ConfiguredSetup | None) -> SchedulerSetup | None:
    """A scheduler entry: its state_dict or a pickled scheduler; None when the value is neither."""
    fields = attributes(value)
    if not any(key in fields for key in SCHEDULER_STATE_KEYS):
        return None
    keys = {str(k) for k in fields}
    if not isinstance(value, Mapping):
        kind = value.name if isinstance(value, InertObject) else type(value).__name__
        detail = f"its pickled class {kind}"
    else:
        kind = _scheduler_kind(keys)
        detail = "inferred from its state keys" if kind else \
            f"not recognised from its state keys ({', '.join(sorted(keys - SCHEDULER_BASE_KEYS)) or 'none'})"
    last_lr = fields.get("_last_lr")
    if last_lr is not None and not isinstance(last_lr, (list, tuple)):
        raise _Malformed(f"{source!r} has _last_lr of {_describe(last_lr)}, not a list")
    return SchedulerSetup(kind=kind, kind_detail=detail, configured=configured.scheduler if configured else None,
                          last_lr=_numbers(list(last_lr)) if last_lr is not None else None,
                          last_epoch=as_int(fields.get("last_epoch")), source=source)


# ----------------------------------------------------------------------------- configs
def _configured(value: Any, source: str, names: tuple) -> ConfiguredSetup | None:
    """A training config's optimizer, lr, weight decay, momentum and scheduler (each None where it has none)."""
    fields = attributes(value)
    optimizer, lr, weight_decay, momentum, schedulers = names
    found = ConfiguredSetup(source=source, optimizer=_text(fields.get(optimizer)), lr=_number(fields.get(lr)),
                            weight_decay=_number(fields.get(weight_decay)),
                            momentum=_number(fields.get(momentum)) if momentum else None,
                            scheduler=next((s for name in schedulers if (s := _text(fields.get(name)))), None))
    empty = ConfiguredSetup(source=source, optimizer=None, lr=None, weight_decay=None, momentum=None, scheduler=None)
    return None if found == empty else found


# ----------------------------------------------------------------------------- reading
READ_ERRORS = (_Malformed, CheckpointError, TypeError, ValueError, KeyError, AttributeError, IndexError)


def _first_entry(container: Mapping, keys: Sequence[str], notes: list[str]) -> tuple[str, Any] | None:
    """The first of `keys` the checkpoint holds (not None); of a list (Lightning's), the first element, noting the rest."""
    for key in keys:
        value = container.get(key)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            if len(value) > 1:
                notes.append(f"{key} holds {len(value)} entries; the first is shown")
            return f"{key}[0]", value[0]
        return key, value
    return None


def _setup_of(optimizer_entry: tuple[str, Any] | None, scheduler_entry: tuple[str, Any] | None,
              configured: ConfiguredSetup | None, notes: list[str], logged_lr: float | None = None) -> TrainingSetup | None:
    """The setup from the entries found (key or file, value) and a training config; None when nothing was found."""
    named = configured.optimizer if configured is not None else None
    detail = f"{CONFIG_OPTIMIZER_FIELD[configured.source]} = {named!r}" if named else ""
    basis = KindBasis.CONFIG if named else None
    optimizer = scheduler = None
    if optimizer_entry is not None:
        optimizer, more = _read_optimizer(optimizer_entry[1], optimizer_entry[0], named, basis, detail)
        notes.extend(more)
    if optimizer is None and named:             # the config names it, but no optimizer state was saved
        optimizer, more = _optimizer_setup([], None, named, basis, detail, configured.source,
                                           configured_decay=configured.weight_decay)
        notes.extend(more)
    if scheduler_entry is not None:
        scheduler = _read_scheduler(scheduler_entry[1], scheduler_entry[0], configured)
    if optimizer is None and scheduler is None and configured is None and logged_lr is None:
        return None
    sources = [part.source for part in (optimizer, scheduler, configured) if part is not None]
    return TrainingSetup(optimizer=optimizer, scheduler=scheduler, configured=configured, logged_lr=logged_lr,
                         sources=tuple(dict.fromkeys(sources + ([HF_STATE_FILE] if logged_lr is not None else []))),
                         notes=tuple(notes))


def checkpoint_training_setup(obj: Any, path: Path) -> TrainingSetupRead:
    """The training setup a loaded checkpoint (a dict, as torch.save wrote it) holds beside its weights."""
    if not isinstance(obj, Mapping):
        return TrainingSetupRead()
    notes: list[str] = []
    try:
        configured = _configured(obj[ARGS_KEY], ARGS_KEY, ARGS_FIELDS) if obj.get(ARGS_KEY) is not None else None
        optimizer_entry = _first_entry(obj, OPTIMIZER_KEYS, notes)
        scheduler_entry = _first_entry(obj, SCHEDULER_KEYS, notes)
        return TrainingSetupRead(_setup_of(optimizer_entry, scheduler_entry, configured, notes))
    except READ_ERRORS as exc:
        return TrainingSetupRead(problem=f"{path}: {exc}; its training setup is left out")


def _logged_lr(trainer_state: Mapping | None) -> float | None:
    """The last learning_rate trainer_state.json's log_history holds at or before its global_step."""
    if not isinstance(trainer_state, Mapping) or not isinstance(trainer_state.get("log_history"), list):
        return None
    step = as_int(trainer_state.get("global_step"))
    logged = [entry for entry in trainer_state["log_history"] if isinstance(entry, Mapping)
              and _number(entry.get("learning_rate")) is not None
              and (step is None or (as_int(entry.get("step")) or 0) <= step)]
    return _number(logged[-1]["learning_rate"]) if logged else None


def folder_training_setup(folder: Path, trainer_state: Mapping | None, trust: bool = False) -> TrainingSetupRead:
    """The training setup of a Hugging Face checkpoint-N/ folder: optimizer.pt and scheduler.pt (memory-mapped),
    training_args.bin (inertly; left out with a note when it cannot be read so) and trainer_state.json's logged lr."""
    from .torch_files import load_torch_data

    notes: list[str] = []
    entries: dict[str, tuple[str, Any] | None] = {}
    configured = None
    try:
        for name in (HF_OPTIMIZER_FILE, HF_SCHEDULER_FILE):
            path = folder / name
            entries[name] = (name, load_torch_data(path, trust=trust, what=name.replace(".pt", " state"), mmap=True)) \
                if path.is_file() else None
        if (folder / HF_ARGS_FILE).is_file():
            try:
                configured = _configured(load_torch_data(folder / HF_ARGS_FILE, what="training arguments file"),
                                         HF_ARGS_FILE, HF_ARGS_FIELDS)
            except CheckpointError as exc:
                notes.append(f"{exc}; its settings are left out")
        return TrainingSetupRead(_setup_of(entries[HF_OPTIMIZER_FILE], entries[HF_SCHEDULER_FILE], configured, notes,
                                           _logged_lr(trainer_state)))
    except READ_ERRORS as exc:
        return TrainingSetupRead(problem=f"{folder}: {exc}; its training setup is left out")


def predictions_training_setup(content: Mapping[str, Any], path: Path) -> TrainingSetupRead:
    """The setup a predictions file records: 'lr' (one value, or one per param group), 'optimizer' (a class name)
    and 'weight_decay' (one value for every group, or one per group)."""
    import numpy as np

    if not any(key in content for key in PREDICTION_KEYS):
        return TrainingSetupRead()
    try:
        name = content.get("optimizer")
        name = str(name.item()) if isinstance(name, np.ndarray) and name.size == 1 and name.dtype.kind in "US" \
            else name
        if name is not None and not (isinstance(name, str) and name):
            raise _Malformed(f"'optimizer' is {_describe(name)}, not a class name")
        values = {}
        for key in ("lr", "weight_decay"):
            if key in content:
                array = np.asarray(content[key])
                if array.dtype.kind not in "iuf" or array.ndim > 1 or array.size == 0 or \
                        not np.isfinite(array).all():
                    raise _Malformed(f"{key!r} holds {array.dtype} values of shape {array.shape}; expected one "
                                     "finite number or one per param group")
                values[key] = [float(v) for v in array.ravel()]
        sizes = {len(v) for v in values.values()} - {1}
        if len(sizes) > 1:
            raise _Malformed(f"'lr' and 'weight_decay' give {len(values['lr'])} and {len(values['weight_decay'])} "
                             "param groups")
        n_groups = sizes.pop() if sizes else (1 if values else 0)
        groups = [{key: (v * n_groups if len(v) == 1 else v)[i] for key, v in values.items()} for i in range(n_groups)]
        named = name or None
        optimizer, notes = _optimizer_setup(groups, None, named, KindBasis.NAMED if named else None,
                                            f"the predictions file's 'optimizer' = {named!r}", "predictions file")
        if not named:
            optimizer = OptimizerSetup(**{**vars(optimizer), "kind": None, "kind_basis": None,
                                          "kind_detail": "the predictions file names no optimizer"})
        keys = [key for key in PREDICTION_KEYS if key in content]
        return TrainingSetupRead(TrainingSetup(optimizer=optimizer, sources=tuple(f"predictions file {k!r}" for k in keys),
                                               notes=tuple(notes)))
    except READ_ERRORS as exc:
        return TrainingSetupRead(problem=f"{path}: {exc}; its training setup is left out")

