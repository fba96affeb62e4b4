"""Find a run's checkpoints, put them in training order, and read their weights without running code."""
from __future__ import annotations

import glob
import hashlib
import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping

from ..errors import CheckpointError, InputError, UnsafeCheckpointError

__all__ = [
    "WEIGHT_SUFFIXES",
    "CheckpointFile",
    "LoadedCheckpoint",
    "discover_checkpoints",
    "file_sha256",
    "read_checkpoint",
    "order_checkpoints",
    "fit_state_dict",
    "last_integer",
]

WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
# In a checkpoint folder (e.g. Hugging Face's checkpoint-500/), the model weights by preference.
PREFERRED_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")
# Files that sit beside model weights in training folders but are not model weights.
NOT_MODEL_WEIGHTS = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "scaler.pt"}
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module")
ORDER_KEYS = ("epoch", "global_step", "step")
KNOWN_PREFIXES = ("module.", "model.", "_orig_mod.")


@dataclass(frozen=True)
class CheckpointFile:
    """One checkpoint on disk: `path` is what the user sees (file or folder), `weights` what is read."""

    path: Path
    weights: Path

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class LoadedCheckpoint:
    """What one checkpoint holds: a state_dict, or a whole TorchScript module, plus its order metadata."""

    state_dict: dict[str, Any] | None = None
    scripted: Any = None
    metadata: dict[str, int] = field(default_factory=dict)


def last_integer(name: str) -> int | None:
    """The last run of digits in a name ('epoch=10-step=500.ckpt' -> 500), or None."""
    numbers = re.findall(r"\d+", name)
    return int(numbers[-1]) if numbers else None


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _weights_in_folder(folder: Path) -> Path | None:
    """The one model-weights file of a checkpoint folder, None if it holds none."""
    candidates = sorted(p for p in folder.iterdir()
                        if p.is_file() and p.suffix in WEIGHT_SUFFIXES and p.name not in NOT_MODEL_WEIGHTS)
    if not candidates:
        return None
    for preferred in PREFERRED_WEIGHT_NAMES:
        if folder / preferred in candidates:
            return folder / preferred
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates[:5])
        raise CheckpointError(f"{folder}: holds several weights files ({names}); point --checkpoints at one")
    return candidates[0]


def discover_checkpoints(location: str | None, run: Path, exclude: Collection[Path] = ()) -> list[CheckpointFile]:
    """Checkpoint files and folders at --checkpoints (a folder or a glob), default RUN/checkpoints else RUN."""
    excluded = {p.resolve() for p in exclude}
    if location is None:
        root = run / "checkpoints" if (run / "checkpoints").is_dir() else run
        entries = sorted(root.iterdir()) if root.is_dir() else []
        where = str(root)
    elif any(ch in location for ch in "*?["):
        entries = sorted(Path(p) for p in glob.glob(location))
        where = location
    else:
        root = Path(location)
        if root.is_file():
            entries, where = [root], str(root)
        elif root.is_dir():
            entries, where = sorted(root.iterdir()), str(root)
        else:
            raise InputError(f"{root}: checkpoint directory not found")
    if location is None and not (run / "checkpoints").is_dir() and not run.is_dir():
        raise InputError(f"{run}: run directory not found")

    found = []
    for entry in entries:
        if entry.resolve() in excluded or entry.name.startswith((".", "__")):
            continue
        if entry.is_file() and entry.suffix in WEIGHT_SUFFIXES and entry.name not in NOT_MODEL_WEIGHTS:
            found.append(CheckpointFile(entry, entry))
        elif entry.is_dir():
            try:
                weights = _weights_in_folder(entry)
            except CheckpointError:
                found.append(CheckpointFile(entry, entry))   # reported as skipped when read
                continue
            if weights is not None:
                found.append(CheckpointFile(entry, weights))
    if not found:
        suffixes = " ".join(f"*{s}" for s in WEIGHT_SUFFIXES)
        raise InputError(f"{where}: no checkpoints found (looked for {suffixes} and folders holding one)")
    return found


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _as_int(value: Any) -> int | None:
    """An order value as int: ints, integral floats and one-element tensors; None otherwise."""
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return int(number) if number == int(number) else None


def _order_metadata(source: Mapping[str, Any]) -> dict[str, int]:
    return {key: v for key in ORDER_KEYS if key in source and (v := _as_int(source[key])) is not None}


def _trainer_state_metadata(folder: Path) -> dict[str, int]:
    """epoch/global_step from a Hugging Face trainer_state.json beside the weights, if any."""
    state_file = folder / "trainer_state.json"
    if not state_file.is_file():
        return {}
    try:
        return _order_metadata(json.loads(state_file.read_text()))
    except (OSError, ValueError):
        return {}


def _extract_state_dict(obj: Any, path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The state_dict inside a loaded checkpoint object, and the order metadata beside it."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return dict(obj.state_dict()), {}
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict or a dict holding one")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), {}
    for key in STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, torch.nn.Module):
            return dict(inner.state_dict()), _order_metadata(obj)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner), _order_metadata(obj)
    keys = ", ".join(repr(k) for k in list(obj)[:8])
    raise CheckpointError(f"{path}: no state_dict found (top-level keys: {keys}; "
                          f"expected tensors or one of {', '.join(STATE_DICT_KEYS)})")


def read_checkpoint(checkpoint: CheckpointFile, *, trust: bool = False, map_location: str = "cpu") -> LoadedCheckpoint:
    """Read one checkpoint's weights; never unpickles code unless `trust` (--trust-checkpoints)."""
    import torch

    path = checkpoint.weights
    if not path.is_file():
        raise CheckpointError(f"{checkpoint.path}: no weights file inside")
    folder_meta = _trainer_state_metadata(checkpoint.path) if checkpoint.path.is_dir() else {}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="pt", device=map_location) as handle:
                state = {key: handle.get_tensor(key) for key in handle.keys()}
                meta = _order_metadata(handle.metadata() or {})
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
        return LoadedCheckpoint(state_dict=state, metadata={**meta, **folder_meta})
    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location=map_location)
        except Exception as exc:  # torch raises RuntimeError subclasses without a common type
            raise CheckpointError(f"{path}: not a readable TorchScript archive ({exc})") from exc
        return LoadedCheckpoint(scripted=module, metadata=folder_meta)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            reason = str(exc).split("\n")[0:3]
            detail = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line), reason[0])
            raise UnsafeCheckpointError(
                f"{path}: refused: loading it would run pickled code ({detail}); "
                f"if you made this file yourself, pass --trust-checkpoints to allow it") from exc
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or corrupt? ({first_line})") from exc
    state, meta = _extract_state_dict(obj, path)
    return LoadedCheckpoint(state_dict=state, metadata={**meta, **folder_meta})


def order_checkpoints(entries: list[tuple[CheckpointFile, dict[str, int]]]) -> list[tuple[CheckpointFile, int]]:
    """Training order and the epoch to report: stored epoch, else step, else the name's last integer.

    Files with none of these keep name order after the numbered ones and are numbered from 1.
    """
    def stored(meta: dict[str, int], name: str) -> int | None:
        for key in ORDER_KEYS:
            if key in meta:
                return meta[key]
        return last_integer(Path(name).stem if Path(name).suffix in WEIGHT_SUFFIXES else name)

    keyed = [(stored(meta, ckpt.name), ckpt) for ckpt, meta in entries]
    numbered = sorted(((v, c) for v, c in keyed if v is not None), key=lambda pair: (pair[0], pair[1].name))
    unnumbered = sorted((c for v, c in keyed if v is None), key=lambda c: c.name)
    start = (numbered[-1][0] + 1) if numbered else 1
    return [(c, v) for v, c in numbered] + [(c, start + i) for i, c in enumerate(unnumbered)]


def fit_state_dict(state: dict[str, Any], model_state: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """Strip a common key prefix the model lacks ('module.', 'model.', '_orig_mod.'), then check keys and shapes.

    Raises CheckpointError listing the first offending keys, so a strict load never fails later.
    """
    wanted = set(model_state)
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
    missing = sorted(wanted - set(state))
    unexpected = sorted(set(state) - wanted)
    shape_errors = [f"{key} {tuple(state[key].shape)} vs model {tuple(model_state[key].shape)}"
                    for key in sorted(wanted & set(state))
                    if hasattr(state[key], "shape") and tuple(state[key].shape) != tuple(model_state[key].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:4])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:4])}")
    if shape_errors:
        problems.append(f"{len(shape_errors)} shape mismatch(es): {'; '.join(shape_errors[:3])}")
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: {'; '.join(problems)}")
    return state
