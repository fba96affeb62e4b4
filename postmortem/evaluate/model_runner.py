"""Run one checkpoint over the validation batches (torch lives here and in load/ only)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import CheckpointError, DataError
from ..load.auto_model import build_described_model
from ..load.checkpoint_reader import LoadedCheckpoint
from ..load.discovery import CheckpointFile
from ..load.state_dict_fit import fit_state_dict
from ..load.data import ID_KEYS, batch_fields, batch_ids
from ..load.spec import UserCallable, call_user_code
from .records import OutputsAccumulator, counted_rows, detect_output_kind

__all__ = ["to_device", "prepare_model", "run_checkpoint", "item_input_hashes", "NOT_INPUT_KEYS"]

# Batch keys that describe items rather than feed the model: never part of an item's input hash.
NOT_INPUT_KEYS = ("labels", "mask", "groups", *ID_KEYS)


def to_device(value: Any, device: str) -> Any:
    """Move every tensor inside a batch (dicts, lists, tuples) to a device, once."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def prepare_model(loaded: LoadedCheckpoint, checkpoint: CheckpointFile,
                  build_model: UserCallable | None, device: str) -> Any:
    """An eval-mode module holding the checkpoint's weights: TorchScript as is, else the model from
    build_model() (--model / postmortem_spec.py) or, without one, the model the checkpoint describes
    (Hugging Face config.json, timm arch), then a strict load."""
    import torch

    if loaded.scripted is not None:
        return loaded.scripted.to(device).eval()
    model = build_model() if build_model is not None else build_described_model(checkpoint, loaded)
    if not isinstance(model, torch.nn.Module):
        raise CheckpointError(f"{build_model.reference}: returned a {type(model).__name__}, not a torch.nn.Module")
    state = fit_state_dict(loaded.state_dict, model.state_dict(), checkpoint.weights)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{checkpoint.weights}: weights do not load into the model ({first})") from exc
    return model.to(device).eval()


def _model_outputs(output: Any) -> Any:
    """The class scores inside what a model returns: a tensor, .logits (Hugging Face), or a tuple's first."""
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if isinstance(output, (list, tuple)):
        return output[0]
    return output


def _call_model(model: Any, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    return model(inputs)


def _default_forward(model: Any, batch: Any, data_source: str = "validation data") -> tuple[Any, Any, Any]:
    """model(inputs) with labels and mask from the batch; the model's own errors are the user's code."""
    try:
        inputs, labels, mask, _, _ = batch_fields(batch)
    except DataError as exc:
        raise DataError(f"{data_source}: {exc}") from exc
    output = call_user_code(f"{type(model).__name__}.forward on a batch of {data_source}", _call_model, model, inputs)
    return _model_outputs(output), labels, mask


def _input_leaves(value: Any, shape: tuple[int, ...], skip: tuple[Any, ...], key: str | None = None) -> list[Any]:
    """The tensors and arrays inside a batch whose leading dimensions are the labels' `shape`: the items' inputs
    (the labels and mask themselves, and the keys in NOT_INPUT_KEYS, left out)."""
    import torch

    if key in NOT_INPUT_KEYS or any(value is s for s in skip):
        return []
    if isinstance(value, dict):
        return [leaf for k in sorted(value, key=str) for leaf in _input_leaves(value[k], shape, skip, str(k))]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _input_leaves(v, shape, skip)]
    if isinstance(value, (torch.Tensor, np.ndarray)) and tuple(value.shape[:len(shape)]) == shape:
        return [value]
    return []


def item_input_hashes(batch: Any, labels: Any, mask: Any) -> np.ndarray:
    """A 64-bit hash (blake2b) of each position's inputs, one per element of the labels (flattened): the bytes of
    every input tensor's row at that position, in key order. Two items hash alike exactly when their inputs are
    byte-for-byte equal (the leakage check); an item with no input tensor of its own hashes as the empty input."""
    import hashlib

    shape = tuple(np.shape(_as_numpy(labels)))
    rows = int(np.prod(shape)) if shape else 0
    parts = []
    for leaf in _input_leaves(batch, shape, (labels, mask)):
        array = np.ascontiguousarray(_as_numpy(leaf)).reshape(rows, -1)
        parts.append(array.view(np.uint8).reshape(rows, -1))
    joined = np.concatenate(parts, axis=1) if parts else np.zeros((rows, 0), np.uint8)
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in joined],
                    dtype=np.uint64)


def run_checkpoint(model: Any, batches: list[Any], forward: UserCallable | None, output_kind: str,
                   accumulator: OutputsAccumulator, on_device: bool = False,
                   input_hashes: list | None = None) -> str:
    """Forward every batch in eval mode under inference_mode, handing the outputs to `accumulator` as they
    come (float32, or float64 where the model computes in float64): as tensors where they are when `on_device`
    (its store is a DeviceOutputs), else as numpy arrays on the host. Returns the output kind (auto resolved).

    Item ids are forward's fourth returned value when it gives one (not None), else the batch's (load.data.batch_ids:
    a dict's 'ids', 'utterance_ids' or 'vid'). `input_hashes` (one slot per batch, filled on first use and kept for
    the next checkpoints) asks for each item's input hash (item_input_hashes) beside its outputs."""
    import torch

    call: Callable[[Any, Any], Any] = forward if forward is not None else \
        (lambda m, b: _default_forward(m, b, accumulator.source))
    resolved = output_kind
    with torch.inference_mode():
        for index, batch in enumerate(batches):
            result = call(model, batch)
            if not isinstance(result, (tuple, list)) or len(result) not in (2, 3, 4):
                raise DataError(f"{getattr(forward, 'reference', 'forward')}: must return (outputs, labels), "
                                f"(outputs, labels, mask) or (outputs, labels, mask, ids), got "
                                f"{type(result).__name__}" + (f" of {len(result)}" if isinstance(result, (tuple, list))
                                                               else ""))
            outputs, labels, mask, ids = (*result, None, None)[:4]
            outputs = torch.as_tensor(_model_outputs(outputs))
            if outputs.ndim < 2:
                raise DataError(f"{accumulator.source}: model outputs of shape {tuple(outputs.shape)}; "
                                "expected (B, C) or (B, T, C) class scores")
            scores = outputs.detach() if outputs.dtype == torch.float64 else outputs.detach().float()
            if resolved == "auto":   # decided on the first counted rows: padded rows may hold anything
                sample = counted_rows(_as_numpy(scores), _as_numpy(labels), None if mask is None else _as_numpy(mask),
                                      accumulator.ignore_index, limit=256)
                resolved = detect_output_kind(sample) if len(sample) else "auto"
            ids = batch_ids(batch) if ids is None else ids
            groups = batch.get("groups") if isinstance(batch, dict) else None
            hashes = None
            if input_hashes is not None:
                if input_hashes[index] is None:
                    input_hashes[index] = item_input_hashes(batch, labels, mask)
                hashes = input_hashes[index]
            accumulator.add(scores if on_device else _as_numpy(scores), _as_numpy(labels),
                            None if mask is None else _as_numpy(mask),
                            ids=_as_list(ids), groups=None if groups is None else _as_numpy(groups),
                            input_hashes=hashes)
    return resolved if resolved != "auto" else "logits"


def _as_numpy(value: Any) -> np.ndarray:
    import torch

    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _as_list(ids: Any) -> list | None:
    """Ids as a list (a tensor's or array's values; a tuple's items); strings stay strings."""
    if ids is None or isinstance(ids, list):
        return ids
    if isinstance(ids, tuple):
        return list(ids)
    return _as_numpy(ids).tolist()
