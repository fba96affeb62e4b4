"""Run one checkpoint over the validation batches (torch lives here and in load/ only)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import CheckpointError, DataError
from ..load.auto_model import build_described_model
from ..load.checkpoint_reader import LoadedCheckpoint
from ..load.discovery import CheckpointFile
from ..load.state_dict_fit import fit_state_dict
from ..load.data import batch_fields
from ..load.spec import UserCallable, call_user_code
from .records import OutputsAccumulator, counted_rows, detect_output_kind

__all__ = ["to_device", "prepare_model", "run_checkpoint"]


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


def run_checkpoint(model: Any, batches: list[Any], forward: UserCallable | None, output_kind: str,
                   accumulator: OutputsAccumulator, on_device: bool = False) -> str:
    """Forward every batch in eval mode under inference_mode, handing the outputs to `accumulator` as they
    come (float32, or float64 where the model computes in float64): as tensors where they are when `on_device`
    (its store is a DeviceOutputs), else as numpy arrays on the host. Returns the output kind (auto resolved)."""
    import torch

    call: Callable[[Any, Any], Any] = forward if forward is not None else \
        (lambda m, b: _default_forward(m, b, accumulator.source))
    resolved = output_kind
    with torch.inference_mode():
        for batch in batches:
            result = call(model, batch)
            if not isinstance(result, (tuple, list)) or len(result) not in (2, 3):
                raise DataError(f"{getattr(forward, 'reference', 'forward')}: must return (outputs, labels) or "
                                f"(outputs, labels, mask), got {type(result).__name__}")
            outputs, labels, mask = (*result, None)[:3]
            outputs = torch.as_tensor(_model_outputs(outputs))
            if outputs.ndim < 2:
                raise DataError(f"{accumulator.source}: model outputs of shape {tuple(outputs.shape)}; "
                                "expected (B, C) or (B, T, C) class scores")
            scores = outputs.detach() if outputs.dtype == torch.float64 else outputs.detach().float()
            if resolved == "auto":   # decided on the first counted rows: padded rows may hold anything
                sample = counted_rows(_as_numpy(scores), _as_numpy(labels), None if mask is None else _as_numpy(mask),
                                      accumulator.ignore_index, limit=256)
                resolved = detect_output_kind(sample) if len(sample) else "auto"
            ids = batch.get("ids") if isinstance(batch, dict) else None
            groups = batch.get("groups") if isinstance(batch, dict) else None
            accumulator.add(scores if on_device else _as_numpy(scores), _as_numpy(labels),
                            None if mask is None else _as_numpy(mask),
                            ids=_as_list(ids), groups=None if groups is None else _as_numpy(groups))
    return resolved if resolved != "auto" else "logits"


def _as_numpy(value: Any) -> np.ndarray:
    import torch

    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _as_list(ids: Any) -> list | None:
    if ids is None:
        return None
    return _as_numpy(ids).tolist() if not isinstance(ids, list) else ids
