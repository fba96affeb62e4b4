"""What a loaded checkpoint holds: the model's weights, EMA weights beside them, and the metadata that
orders it and names its architecture. Works alike on plain containers, on real objects (a trusted full
unpickle) and on the inert placeholders of inert_pickle, so no class named in the file is imported.

Layouts recognised (README, "Checkpoint layouts"):
- a bare state_dict; a dict holding one under state_dict, model_state_dict, model or module (PyTorch
  Lightning, torchvision's reference scripts, most hand-written loops), found up to a few dicts deep;
- EMA weights under state_dict_ema (timm), model_ema (torchvision), ema_state_dict, ema, ema_model; and
  Lightning's WeightAveraging/EMAWeightAveraging callbacks, which store the averaged weights under
  state_dict and the model's own under current_model_state;
- a whole pickled nn.Module (torch.save(model); ultralytics' 'model' and 'ema'): its state_dict is
  rebuilt from the module tree's _parameters, _buffers (persistent ones) and _modules;
- metadata: epoch, global_step, step; the architecture as timm stores it, `arch` or `args.model`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .discovery import ORDER_KEYS
from .inert_pickle import InertObject

__all__ = ["WEIGHT_KINDS", "MODEL_KEYS", "EMA_KEYS", "CheckpointContents", "checkpoint_contents", "order_metadata",
           "as_int", "attributes", "missing_weights"]

WEIGHT_KINDS = ("model", "ema")
MODEL_KEYS = ("state_dict", "model_state_dict", "model", "module")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema", "ema_model")
# Lightning's WeightAveraging callbacks move the model's own weights here and put the average under state_dict.
AVERAGED_MODEL_KEY = "current_model_state"
MAX_DEPTH = 3   # how many dicts deep a state_dict is looked for ({'checkpoint': {'model': {...}}})


@dataclass(frozen=True)
class CheckpointContents:
    """The chosen weights of one checkpoint and what else it says about itself.

    `weights` is the kind chosen ('model' or 'ema'); `available` every kind the file holds; `order` the
    stored epoch/global_step/step; `architecture` a timm model name when the file stores one."""

    state_dict: dict[str, Any]
    weights: str
    available: tuple[str, ...]
    order: dict[str, int]
    architecture: str | None = None


def as_int(value: Any) -> int | None:
    """An order value as int: ints, integral floats, one-element tensors and numpy scalars; None otherwise."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return int(number) if number == number and abs(number) != float("inf") and number == int(number) else None


def order_metadata(source: Mapping[str, Any]) -> dict[str, int]:
    return {key: v for key in ORDER_KEYS if key in source and (v := as_int(source[key])) is not None}


def attributes(obj: Any) -> Mapping[str, Any]:
    """An object's fields without running its code: a mapping as is, a placeholder's recorded state (an
    omegaconf DictConfig's content, node values unwrapped), a real object's __dict__; else {}."""
    if isinstance(obj, Mapping):
        return obj
    if isinstance(obj, InertObject):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and all(isinstance(s, (dict, type(None))) for s in state):
            state = {**(state[0] or {}), **(state[1] or {})}          # (__dict__, __slots__ values)
        if not isinstance(state, dict):
            return obj.set_items
        if obj.module.startswith("omegaconf.") and isinstance(state.get("_content"), dict):
            return {key: _node_value(node) for key, node in state["_content"].items()}
        return state
    fields = getattr(obj, "__dict__", None)
    return fields if isinstance(fields, dict) else {}


def _node_value(node: Any) -> Any:
    """An omegaconf value node's value (AnyNode, StringNode, ... keep it in '_val'); a container as it is."""
    if isinstance(node, InertObject) and node.module.startswith("omegaconf.nodes"):
        return attributes(node).get("_val")
    return node


def _is_tensor_mapping(value: Any) -> bool:
    import torch

    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _is_module_tree(value: Any) -> bool:
    fields = attributes(value) if isinstance(value, InertObject) else {}
    return "_parameters" in fields and "_modules" in fields


def _module_state_dict(module: InertObject, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """The state_dict nn.Module.state_dict() would give, rebuilt from a placeholder module tree."""
    import torch

    if depth > 100:
        raise CheckpointError("a pickled module nests more than 100 levels deep")
    fields = attributes(module)
    state: dict[str, Any] = {}
    skipped = fields.get("_non_persistent_buffers_set") or set()
    for group, keep in (("_parameters", lambda name: True), ("_buffers", lambda name: name not in skipped)):
        for name, tensor in attributes(fields.get(group)).items():
            if isinstance(tensor, torch.Tensor) and keep(name):
                state[prefix + name] = tensor
    for name, child in attributes(fields.get("_modules")).items():
        if _is_module_tree(child):
            state.update(_module_state_dict(child, f"{prefix}{name}.", depth + 1))
    return state


def _weights_of(value: Any) -> dict[str, Any] | None:
    """The state_dict a value stands for: a tensor mapping, a whole module (real or placeholder), or None."""
    import torch

    if _is_tensor_mapping(value):
        return dict(value)
    if isinstance(value, torch.nn.Module):
        return dict(value.state_dict())
    if _is_module_tree(value):
        return _module_state_dict(value) or None
    return None


def _find_under(container: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The first state_dict under one of `keys`, in this dict or in dicts nested in it (breadth first)."""
    level, seen = [container], set()
    for _ in range(MAX_DEPTH):
        for mapping in level:
            for key in keys:
                if key in mapping and (weights := _weights_of(mapping[key])) is not None:
                    return weights
        seen.update(id(m) for m in level)
        level = [v for m in level for v in m.values() if isinstance(v, Mapping) and id(v) not in seen]
    return None


def _all_weights(obj: Any) -> dict[str, dict[str, Any]]:
    """Every kind of weights the checkpoint holds: {'model': ..., 'ema': ...} (either may be missing)."""
    if (whole := _weights_of(obj)) is not None:
        return {"model": whole}
    if not isinstance(obj, Mapping):
        return {}
    if AVERAGED_MODEL_KEY in obj and (model := _weights_of(obj[AVERAGED_MODEL_KEY])) is not None:
        average = _weights_of(obj.get("state_dict"))
        return {"model": model, **({"ema": average} if average is not None else {})}
    found = {"model": _find_under(obj, MODEL_KEYS), "ema": _find_under(obj, EMA_KEYS)}
    return {kind: weights for kind, weights in found.items() if weights is not None}


def _architecture(obj: Any) -> str | None:
    """The model name timm's CheckpointSaver stores: 'arch', else the training script's args.model."""
    if not isinstance(obj, Mapping):
        return None
    for value in (obj.get("arch"), attributes(obj.get("args")).get("model")):
        if isinstance(value, str) and value:
            return value
    return None


def missing_weights(path: Path, wanted: str, held: str) -> CheckpointError:
    return CheckpointError(f"{path}: holds no {wanted} weights, only {held} weights; pass --weights {held} to "
                           "evaluate those")


def _describe(obj: Any) -> str:
    return f"a pickled {obj.qualified_name()}" if isinstance(obj, InertObject) else f"a {type(obj).__name__}"


def checkpoint_contents(obj: Any, path: Path, weights: str = "model") -> CheckpointContents:
    """The `weights` ('model' or 'ema') a loaded checkpoint holds, with its order metadata and architecture.

    Raises CheckpointError naming the file when it holds no state_dict, or not the kind asked for."""
    found = _all_weights(obj)
    available = tuple(kind for kind in WEIGHT_KINDS if kind in found)
    if weights in found:
        return CheckpointContents(state_dict=found[weights], weights=weights, available=available,
                                  order=order_metadata(obj) if isinstance(obj, Mapping) else {},
                                  architecture=_architecture(obj))
    if found:
        raise missing_weights(path, weights, available[0])
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds {_describe(obj)}, not a state_dict or a dict holding one")
    keys = ", ".join(repr(k) for k in list(obj)[:8])
    raise CheckpointError(f"{path}: no state_dict found (top-level keys: {keys}; expected tensors, one of "
                          f"{', '.join(MODEL_KEYS)} or a pickled nn.Module)")
