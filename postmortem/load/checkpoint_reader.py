"""Read one checkpoint (file or folder) into the weights to evaluate, without running code from it.

Safetensors files and sharded Hugging Face folders are read as tensors; TorchScript archives as modules
(they carry their own code, which torch.jit runs in its interpreter, not the pickle's); anything torch.save
wrote goes through torch_files (weights-only, then inert placeholders) and checkpoint_contents (which
weights, which epoch, which architecture); training_setup reads the optimizer and scheduler state beside the
weights (in the file, or a Hugging Face folder's optimizer.pt, scheduler.pt and training_args.bin).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .checkpoint_contents import checkpoint_contents, missing_weights, order_metadata
from .discovery import (PREFERRED_WEIGHT_NAMES, SHARD_INDEX_NAMES, WEIGHT_SUFFIXES, CheckpointFile, shard_files,
                        weights_in_folder)
from .inert_pickle import holds_placeholders
from .torch_files import first_line, is_torchscript, load_torch_data, load_torch_file, read_safetensors_file
from .training_setup import (HF_STATE_FILE, TrainingSetup, TrainingSetupRead, checkpoint_training_setup,
                             folder_training_setup)

__all__ = ["LoadedCheckpoint", "read_checkpoint"]


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What one checkpoint holds: a state_dict or a whole TorchScript module, its order metadata, which
    weights were taken ('model' or 'ema') and which the file holds, the architecture it names, and the training
    setup its optimizer and scheduler state record (`training_setup`; `training_setup_problem` says why it is left
    out when that state was there but unreadable)."""

    state_dict: dict[str, Any] | None = None
    scripted: Any = None
    metadata: dict[str, int] = field(default_factory=dict)
    weights: str = "model"
    available: tuple[str, ...] = ("model",)
    architecture: str | None = None
    training_setup: TrainingSetup | None = None
    training_setup_problem: str | None = None


def _trainer_state(folder: Path) -> dict[str, Any] | None:
    """A Hugging Face trainer_state.json beside the weights, if any and readable."""
    state_file = folder / HF_STATE_FILE
    if not state_file.is_file():
        return None
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _trainer_state_metadata(state: dict[str, Any] | None) -> dict[str, int]:
    """epoch/global_step from a trainer_state.json. Its 'epoch' is a float (1.5 after half of the second epoch):
    kept only when it is whole."""
    return order_metadata(state) if state is not None else {}


def _read_torch_file(path: Path, weights: str, trust: bool, map_location: str) -> LoadedCheckpoint:
    """The chosen weights of a torch.save file and the training setup beside them; when the inert reading cannot
    represent the weights and the user trusts the file, read again with its code (--trust-checkpoints)."""
    loaded = None
    try:
        loaded = load_torch_data(path, trust=trust, map_location=map_location)
        contents = checkpoint_contents(loaded, path, weights)
    except CheckpointError:
        if not (trust and holds_placeholders(loaded)):
            raise
        loaded = load_torch_file(path, map_location=map_location, run_code=True)
        contents = checkpoint_contents(loaded, path, weights)
    setup = checkpoint_training_setup(loaded, path)
    return LoadedCheckpoint(state_dict=contents.state_dict, metadata=contents.order, weights=contents.weights,
                            available=contents.available, architecture=contents.architecture,
                            training_setup=setup.setup, training_setup_problem=setup.problem)


def _read_shards(index: Path, weights: str, trust: bool, map_location: str) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for shard in shard_files(index):
        if not shard.is_file():
            raise CheckpointError(f"{index}: names shard {shard.name}, which is missing")
        if shard.suffix == ".safetensors":
            state.update(read_safetensors_file(shard, map_location)[0])
        else:
            state.update(_read_torch_file(shard, weights, trust, map_location).state_dict)
    return state


def _only_model_weights(path: Path, weights: str) -> None:
    """Safetensors, shards and TorchScript hold one set of weights: the model's."""
    if weights != "model":
        raise missing_weights(path, weights, "model")


def read_checkpoint(checkpoint: CheckpointFile, *, weights: str = "model", trust: bool = False,
                    map_location: str = "cpu") -> LoadedCheckpoint:
    """Read one checkpoint's `weights` ('model' or 'ema') onto `map_location` (a GPU-saved file loads on the CPU).

    Nothing in the file runs unless `trust` (--trust-checkpoints) and the inert reading cannot represent it.
    """
    import torch

    path = checkpoint.weights
    if not path.is_file() and checkpoint.path.is_dir():
        path = weights_in_folder(checkpoint.path) or path     # raises when it holds several
    if not path.is_file():
        names = ", ".join(PREFERRED_WEIGHT_NAMES[:2])
        raise CheckpointError(f"{checkpoint.path}: holds no model weights (looked for {names} and other "
                              f"{'/'.join(WEIGHT_SUFFIXES)} files besides optimizer and scheduler state)")
    in_folder = checkpoint.path.is_dir()
    trainer_state = _trainer_state(checkpoint.path) if in_folder else None
    folder_meta = _trainer_state_metadata(trainer_state)
    folder_setup = folder_training_setup(checkpoint.path, trainer_state, trust) if in_folder else TrainingSetupRead()
    beside = {"training_setup": folder_setup.setup, "training_setup_problem": folder_setup.problem}
    if path.name in SHARD_INDEX_NAMES:
        _only_model_weights(path, weights)
        return LoadedCheckpoint(state_dict=_read_shards(path, weights, trust, map_location), metadata=folder_meta,
                                **beside)
    if path.suffix == ".safetensors":
        _only_model_weights(path, weights)
        state, meta = read_safetensors_file(path, map_location)
        return LoadedCheckpoint(state_dict=state, metadata={**order_metadata(meta), **folder_meta}, **beside)
    if is_torchscript(path):
        _only_model_weights(path, weights)
        try:
            module = torch.jit.load(str(path), map_location=map_location)
        except Exception as exc:  # torch raises RuntimeError subclasses without a common type
            raise CheckpointError(f"{path}: not a readable TorchScript archive ({first_line(exc)})") from exc
        return LoadedCheckpoint(scripted=module, metadata=folder_meta, **beside)
    loaded = _read_torch_file(path, weights, trust, map_location)
    own = loaded.training_setup is not None or loaded.training_setup_problem is not None
    return replace(loaded, metadata={**loaded.metadata, **folder_meta}, **({} if own else beside))
