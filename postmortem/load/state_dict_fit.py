"""Fit a checkpoint's state_dict to the model's keys: prefixes that wrappers add or drop, a sub-module
saved beside others, tied weights saved once; then every key and shape is checked, so the strict
load_state_dict that follows never fails half-way.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from ..errors import CheckpointError

__all__ = ["KNOWN_PREFIXES", "fit_state_dict"]

KNOWN_PREFIXES = ("module.", "model.", "_orig_mod.")


def _strip_prefixes(state: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
    """Strip common key prefixes the model lacks, one at a time ('_orig_mod.module.' takes two)."""
    for _ in range(4):
        if set(state) == wanted:
            break
        heads = {key.split(".", 1)[0] + "." for key in state}
        if len(heads) != 1 or not all("." in key for key in state):
            break
        prefix = heads.pop()
        stripped = {key[len(prefix):]: value for key, value in state.items()}
        if len(set(stripped) & wanted) <= len(set(state) & wanted) and prefix not in KNOWN_PREFIXES:
            break
        state = stripped
    return state


def _sub_state(state: dict[str, Any], wanted: set[str]) -> dict[str, Any] | None:
    """The part of a state_dict under one prefix whose keys are exactly the model's, if any.

    A LightningModule saves its network as 'model.*' beside other modules' state (a loss's class
    weights as 'loss_fn.weight', a teacher, an EMA copy); the network alone is what the model takes.
    Prefixes that the model's keys lack are also added ('net.' when the model wraps the network).
    """
    counts = Counter(key[:i + 1] for key in state for i, ch in enumerate(key) if ch == ".")
    for prefix in sorted((p for p, n in counts.items() if n == len(wanted)), key=len):
        sub = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if set(sub) == wanted:
            return sub
    model_prefixes = {key[:i + 1] for key in wanted for i, ch in enumerate(key) if ch == "."}
    for prefix in sorted(model_prefixes, key=len):
        if all(key.startswith(prefix) for key in wanted) and {prefix + key for key in state} == wanted:
            return {prefix + key: value for key, value in state.items()}
    return None


def _fill_tied(state: dict[str, Any], model_state: Mapping[str, Any]) -> dict[str, Any]:
    """Keys the model ties to another (an output layer sharing the embedding), which savers such as
    Hugging Face's save_pretrained write once: copy the saved twin's value."""
    missing = [key for key in model_state if key not in state]
    if not missing:
        return state
    def storage(key: str):
        tensor = model_state[key]
        return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)) \
            if hasattr(tensor, "untyped_storage") and tensor.numel() else None
    by_storage: dict[Any, str] = {}
    for key in model_state:
        if key in state and (where := storage(key)) is not None:
            by_storage.setdefault(where, key)
    filled = dict(state)
    for key in missing:
        twin = by_storage.get(storage(key)) if storage(key) is not None else None
        if twin is not None:
            filled[key] = state[twin]
    return filled


def fit_state_dict(state: dict[str, Any], model_state: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """Match a checkpoint's keys to the model's, then check every key and shape.

    Strips a common prefix the model lacks ('module.' from DataParallel/DDP, '_orig_mod.' from
    torch.compile, 'model.' from Lightning), takes the sub-dict under one prefix when that is exactly
    the model, and fills tied weights saved once. Raises CheckpointError listing the first offending
    keys, so the strict load that follows never fails. Dtypes are not checked: float16/bfloat16 weights
    are cast to the model's dtype by load_state_dict.
    """
    wanted = set(model_state)
    state = _strip_prefixes(dict(state), wanted)
    if set(state) != wanted:
        state = _sub_state(state, wanted) or state
    if set(state) != wanted:
        state = _fill_tied(state, model_state)
    missing = sorted(wanted - set(state))
    unexpected = sorted(set(state) - wanted)
    mismatched = [key for key in sorted(wanted & set(state))
                  if hasattr(state[key], "shape") and tuple(state[key].shape) != tuple(model_state[key].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:4])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:4])}")
    if mismatched:
        shapes = "; ".join(f"{key} {tuple(state[key].shape)} vs model {tuple(model_state[key].shape)}"
                           for key in mismatched[:3])
        problems.append(f"{len(mismatched)} shape mismatch(es): {shapes}{_classes_hint(mismatched, state, model_state)}")
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: {'; '.join(problems)}")
    return state


def _classes_hint(mismatched: list[str], state: Mapping[str, Any], model_state: Mapping[str, Any]) -> str:
    """When only the first dimension of one layer differs, that is most often the number of classes."""
    layers = {key.rsplit(".", 1)[0] for key in mismatched}
    if len(layers) != 1:
        return ""
    first_dims = {(tuple(state[k].shape)[:1], tuple(model_state[k].shape)[:1]) for k in mismatched}
    rest_equal = all(tuple(state[k].shape)[1:] == tuple(model_state[k].shape)[1:] for k in mismatched)
    if len(first_dims) == 1 and rest_equal:
        (saved,), (model,) = first_dims.pop()
        return f" (the checkpoint has {saved} outputs in {layers.pop()}, the model {model}: a different number of classes?)"
    return ""
