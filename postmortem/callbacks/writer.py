"""Write one epoch's validation outputs as a `--predictions` file (README, "--predictions DIR"), atomically.

The file is an uncompressed .npz (read back without unpickling): `outputs` (N, C) or (N, T, C) as the model gave
them (logits, log-probabilities or probabilities; float32, or float16 when asked), `labels`, optional `mask`,
`ids` and `groups`, the `epoch` and `global_step` it was written at, and, when an optimizer is given, its class
name (`optimizer`), learning rate (`lr`) and weight decay (`weight_decay`), one float64 per parameter group.
Tensors are read through their own methods (detach, cpu, numpy), so this module imports no torch: hand-written
loops of any framework can use it with numpy arrays.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["save_predictions", "write_predictions", "predictions_file_name", "OutputBatches", "optimizer_settings",
           "item_keys", "first_present"]

WHERE = "save_predictions"


def _as_array(value: Any) -> np.ndarray:
    """A tensor (any device; bfloat16, which numpy lacks, as float32: exact), an array or a list, as numpy."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        tensor = value.detach()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.cpu().numpy()
    return np.asarray(value)


def item_keys(values: Any) -> np.ndarray:
    """Ids or groups as an array an .npz holds without pickling: integers as they are, anything else as text."""
    array = _as_array(values)
    return array if array.dtype.kind in "iub" else array.astype(str)


class OutputBatches:
    """One validation pass's batches, kept as given (tensors stay on their device) until `arrays` joins them.

    Batches of sequences (B, T, C) may differ in T: they are padded to the longest, and a `mask` marks the real
    steps (1) and the padding (0). `float16` halves each batch's outputs as it arrives."""

    def __init__(self, float16: bool = False, where: str = WHERE) -> None:
        self.float16 = float16
        self.where = where
        self._outputs: list[Any] = []
        self._labels: list[Any] = []
        self._masks: list[Any] = []
        self._ids: list[Any] = []
        self._groups: list[Any] = []

    def __len__(self) -> int:
        return len(self._outputs)

    def add(self, outputs: Any, labels: Any, mask: Any = None, ids: Any = None, groups: Any = None) -> None:
        if hasattr(outputs, "detach"):
            outputs = outputs.detach()
            if self.float16:
                outputs = outputs.half()
        elif self.float16:
            outputs = np.asarray(outputs, dtype=np.float16)
        self._outputs.append(outputs)
        self._labels.append(labels.detach() if hasattr(labels, "detach") else labels)
        self._masks.append(mask)
        self._ids.append(ids)
        self._groups.append(groups)

    def arrays(self) -> dict[str, np.ndarray]:
        """The batches joined: outputs, labels, and mask, ids and groups where any batch had them."""
        outputs = [_as_array(o) for o in self._outputs]
        labels = [_as_array(y) for y in self._labels]
        if not outputs:
            raise DataError(f"{self.where}: no batches of outputs to save")
        for o, y in zip(outputs, labels):
            if o.ndim not in (2, 3) or o.shape[:-1] != y.shape:
                raise DataError(f"{self.where}: outputs of shape {o.shape} do not fit labels of shape {y.shape} "
                                "(expected outputs (N, C) or (N, T, C) and labels (N,) or (N, T))")
        if len({o.ndim for o in outputs}) > 1 or len({o.shape[-1] for o in outputs}) > 1:
            raise DataError(f"{self.where}: batches of outputs of shapes {sorted({o.shape for o in outputs})} do not "
                            "join (every batch must have the same number of classes and dimensions)")
        masks = [None if m is None else _as_array(m) for m in self._masks]
        for m, y in zip(masks, labels):
            if m is not None and m.shape != y.shape:
                raise DataError(f"{self.where}: mask of shape {m.shape} does not match labels of shape {y.shape}")
        steps = {o.shape[1] for o in outputs if o.ndim == 3}
        if len(steps) > 1 or any(m is not None for m in masks):
            masks = [np.ones(y.shape, np.uint8) if m is None else (m != 0).astype(np.uint8)
                     for m, y in zip(masks, labels)]
        if len(steps) > 1:   # padded steps count nowhere: their mask is 0 (their label 0 is never read)
            longest = max(steps)
            outputs, labels, masks = ([_pad(a, longest) for a in part] for part in (outputs, labels, masks))
        arrays: dict[str, np.ndarray] = {}
        arrays["outputs"] = np.concatenate(outputs)
        arrays["labels"] = np.concatenate(labels)
        if any(m is not None for m in masks):
            arrays["mask"] = np.concatenate(masks)
        for name, values in (("ids", self._ids), ("groups", self._groups)):
            if any(v is not None for v in values):
                if any(v is None for v in values):
                    raise DataError(f"{self.where}: some batches have {name} and others do not")
                arrays[name] = np.concatenate([item_keys(v).reshape(-1) for v in values])
        return arrays


def _pad(values: np.ndarray, steps: int) -> np.ndarray:
    """A (B, T, ...) batch padded with zeros to (B, steps, ...)."""
    if values.shape[1] == steps:
        return values
    padding = [(0, 0), (0, steps - values.shape[1])] + [(0, 0)] * (values.ndim - 2)
    return np.pad(values, padding)


def optimizer_settings(optimizer: Any) -> dict[str, np.ndarray]:
    """The optimizer's class name and, per parameter group, its learning rate and weight decay as float64 arrays
    (a key is left out when some group has no number for it, e.g. Adafactor's lr=None). Wrappers that hold the
    real optimizer as `.optimizer` (accelerate's AcceleratedOptimizer, Lightning's LightningOptimizer) are
    looked through."""
    while not hasattr(optimizer, "param_groups") and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    while hasattr(getattr(optimizer, "optimizer", None), "param_groups"):
        optimizer = optimizer.optimizer
    groups = getattr(optimizer, "param_groups", None)
    if not groups:
        raise ConfigError(f"{WHERE}: optimizer: a {type(optimizer).__name__} has no param_groups")
    settings = {"optimizer": np.asarray(type(optimizer).__name__)}
    for key in ("lr", "weight_decay"):
        values = [group.get(key) for group in groups]
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):   # None, or not a number: nothing honest to write
            continue
        if all(math.isfinite(v) for v in numbers):
            settings[key] = np.asarray(numbers, dtype=np.float64)
    return settings


def predictions_file_name(epoch: int | None, global_step: int | None) -> str:
    """epoch_3.npz, epoch_3-step_150.npz, or step_150.npz for an evaluation in the middle of an epoch: the number
    labelled epoch orders the files as the stored epoch does (load/discovery.name_number)."""
    if epoch is None and global_step is None:
        raise ConfigError(f"{WHERE}: give the epoch, the global_step, or both")
    parts = ([f"epoch_{epoch}"] if epoch is not None else []) + \
        ([f"step_{global_step}"] if global_step is not None else [])
    return "-".join(parts) + ".npz"


def _whole_number(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not float(value).is_integer() or value < 0:
        raise ConfigError(f"{WHERE}: {name} must be a whole number >= 0, got {value!r}")
    return int(value)


def save_predictions(directory: str | os.PathLike, epoch: int | None, outputs: Any, labels: Any, mask: Any = None,
                     ids: Any = None, groups: Any = None, *, global_step: int | None = None, optimizer: Any = None,
                     float16: bool = False) -> Path:
    """Write one epoch's validation outputs into `directory` as a --predictions file; returns its path.

    `outputs` are the model's class scores as it gives them, (N, C) or (N, T, C) for sequences, and `labels`
    (N,) or (N, T); each may also be a list of per-batch arrays or tensors (sequences of different lengths are
    padded, with a mask). `mask` marks the items that count, `ids` names each of the N items (or sequences) and
    `groups` puts them in groups for the bootstrap. `epoch` may be None for an evaluation in the middle of an
    epoch, when `global_step` says where. `optimizer` (any object with param_groups) adds its class name, lr and
    weight_decay per group. `float16` halves the outputs' size (the report's numbers then move by ~1e-3).

    The file appears whole or not at all: it is written under a temporary name and renamed.
    """
    epoch, global_step = _whole_number("epoch", epoch), _whole_number("global_step", global_step)
    batches = OutputBatches(float16)
    if _is_batch_list(outputs):
        for i, batch in enumerate(outputs):
            batches.add(batch, labels[i], None if mask is None else mask[i], None if ids is None else ids[i],
                        None if groups is None else groups[i])
    else:
        batches.add(outputs, labels, mask, ids, groups)
    arrays = batches.arrays()
    return write_predictions(directory, arrays, epoch, global_step, optimizer)


def _is_batch_list(values: Any) -> bool:
    """A list or tuple of per-batch arrays or tensors (not one nested list of numbers)."""
    return isinstance(values, (list, tuple)) and bool(values) and hasattr(values[0], "shape")


def write_predictions(directory: str | os.PathLike, arrays: Mapping[str, np.ndarray], epoch: int | None,
                      global_step: int | None, optimizer: Any = None) -> Path:
    """`arrays` with the epoch, step and optimizer settings, into DIR/predictions_file_name(...), atomically."""
    content = dict(arrays)
    if len(content["outputs"]) != len(content["labels"]):
        raise DataError(f"{WHERE}: {len(content['outputs'])} outputs for {len(content['labels'])} labels")
    for name in ("ids", "groups"):
        if name in content and len(content[name]) != len(content["labels"]):
            raise DataError(f"{WHERE}: {len(content[name])} {name} for {len(content['labels'])} items")
    if epoch is not None:
        content["epoch"] = np.asarray(epoch, dtype=np.int64)
    if global_step is not None:
        content["global_step"] = np.asarray(global_step, dtype=np.int64)
    if optimizer is not None:
        content.update(optimizer_settings(optimizer))
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / predictions_file_name(epoch, global_step)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **content)
        os.chmod(tmp, 0o644)   # mkstemp makes 0600
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def first_present(mapping: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """The value of the first of `keys` the mapping holds (None when none)."""
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None
