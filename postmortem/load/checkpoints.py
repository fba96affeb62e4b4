"""Find a run's checkpoints, put them in training order, and read their weights without running code.

Supported layouts (see README, "Inputs"):
- files *.pt *.pth *.ckpt *.bin *.safetensors holding a bare state_dict, or a dict with one under
  'state_dict' (PyTorch Lightning), 'model_state_dict', 'model' or 'module';
- TorchScript archives (torch.jit.save), which need no model code;
- folders holding one weights file, e.g. Hugging Face Trainer's checkpoint-N/ with model.safetensors or
  pytorch_model.bin (sharded ones through their *.index.json) and trainer_state.json (epoch, global_step).
Keys saved through nn.DataParallel/DistributedDataParallel ('module.'), torch.compile ('_orig_mod.') or a
LightningModule attribute ('model.') are matched to the model's own keys by `fit_state_dict`.
"""
from __future__ import annotations

import glob
import hashlib
import json
import pickle
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from ..errors import CheckpointError, InputError, UnsafeCheckpointError

__all__ = [
    "WEIGHT_SUFFIXES",
    "ORDER_KEYS",
    "CheckpointFile",
    "LoadedCheckpoint",
    "discover_checkpoints",
    "file_sha256",
    "read_checkpoint",
    "choose_order_key",
    "order_checkpoints",
    "fit_state_dict",
    "last_integer",
    "load_torch_file",
]

WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
# In a checkpoint folder (e.g. Hugging Face's checkpoint-500/), the model weights by preference.
PREFERRED_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")
# Sharded Hugging Face weights: an index naming the shard of every key.
SHARD_INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Files that sit beside model weights in training folders but are not model weights.
NOT_MODEL_WEIGHTS = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "scaler.pt"}
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module")
ORDER_KEYS = ("epoch", "global_step", "step")
KNOWN_PREFIXES = ("module.", "model.", "_orig_mod.")
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_BYTE = 0x80


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
    """sha256 of a file's bytes; of a shard index, of the index and every shard it names."""
    digest = hashlib.sha256()
    paths = [path] + (_shard_files(path) if path.name in SHARD_INDEX_NAMES else [])
    for part in paths:
        with open(part, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def _looks_like_checkpoint_folder(folder: Path) -> bool:
    return bool(re.fullmatch(r"checkpoint[-_=]?\d+", folder.name)) or (folder / "trainer_state.json").is_file()


def _weights_in_folder(folder: Path) -> Path | None:
    """The one model-weights file of a checkpoint folder, None if it holds none."""
    for index in SHARD_INDEX_NAMES:
        if (folder / index).is_file() and not (folder / index.removesuffix(".index.json")).is_file():
            return folder / index
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
    """Checkpoint files and folders at --checkpoints (a folder or a glob), default RUN/checkpoints else RUN.

    A folder named like checkpoint-N (or holding trainer_state.json) without model weights is kept, so
    that it is reported as skipped; other folders without weights (logs, data) are ignored.
    """
    excluded = {p.resolve() for p in exclude}
    if location is None:
        if not run.is_dir():
            raise InputError(f"{run}: run directory not found")
        root = run / "checkpoints" if (run / "checkpoints").is_dir() else run
        entries, where = sorted(root.iterdir()), str(root)
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
            elif _looks_like_checkpoint_folder(entry):
                found.append(CheckpointFile(entry, entry))   # reported as skipped: no weights inside
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
    if isinstance(value, bool):
        return None
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return int(number) if number == number and abs(number) != float("inf") and number == int(number) else None


def _order_metadata(source: Mapping[str, Any]) -> dict[str, int]:
    return {key: v for key in ORDER_KEYS if key in source and (v := _as_int(source[key])) is not None}


def _trainer_state_metadata(folder: Path) -> dict[str, int]:
    """epoch/global_step from a Hugging Face trainer_state.json beside the weights, if any.

    Its 'epoch' is a float (1.5 after half of the second epoch): kept only when it is whole.
    """
    state_file = folder / "trainer_state.json"
    if not state_file.is_file():
        return {}
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return _order_metadata(state) if isinstance(state, dict) else {}


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _head(path: Path, n: int = 9) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(n)


def _is_safetensors_bytes(head: bytes, size: int) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header."""
    return len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size


def _refusal(path: Path, exc: BaseException) -> UnsafeCheckpointError:
    """The message for a pickle that weights_only loading refused: what it would import, and the way out."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    detail = next((line.strip() for line in text.splitlines() if "Unsupported" in line), _first_line(exc))
    what = f"it would import and call {found.group(1)}" if found else f"its pickle asks for more than tensors ({detail})"
    return UnsafeCheckpointError(
        f"{path}: refused: {what}, that is, run code while loading; postmortem reads files with "
        "torch.load(weights_only=True). If you made this file yourself, pass --trust-checkpoints "
        "(or trust-checkpoints = true in postmortem.toml) to allow it")


def load_torch_file(path: Path, *, trust: bool = False, map_location: str = "cpu", what: str = "checkpoint") -> Any:
    """torch.load with weights_only unless `trust`; every failure becomes one CheckpointError line naming
    the file (UnsafeCheckpointError when the pickle would run code). Also reads .pt data and predictions;
    a safetensors file under another suffix is read as safetensors."""
    import torch

    head = _head(path)
    size = path.stat().st_size
    if not head:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a {what}")
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path):   # reads the central directory, which truncation loses
                pass
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CheckpointError(f"{path}: truncated or corrupt {what}: the zip archive written by torch.save "
                                  f"is incomplete ({_first_line(exc)})") from exc
    elif _is_safetensors_bytes(head, size):
        return _read_safetensors(path, map_location)[0]
    elif head[0] != PICKLE_PROTOCOL_BYTE:
        raise CheckpointError(f"{path}: not a {what}: not a zip archive (torch.save), a pickle (legacy "
                              f"torch.save) or a safetensors file (it starts with {head[:8]!r})")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust and re.search(r"Unsupported global|GLOBAL [\w.]+ was not an allowed global", str(exc)):
            raise _refusal(path, exc) from exc
        if not trust and ("weights only" in str(exc).lower() or "weights_only" in str(exc)):
            found = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
            detail = found.group(1).strip() if found else _first_line(exc)
            raise CheckpointError(f"{path}: not a readable {what}: the weights-only unpickler stopped ({detail}); "
                                  "the file is corrupt, or its pickle uses more than tensors and plain containers") from exc
        raise CheckpointError(f"{path}: not a readable {what} ({_first_line(exc)})") from exc
    except (EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt {what} ({type(exc).__name__}: {_first_line(exc)})") from exc
    except Exception as exc:   # torch.load raises many unrelated types; a trusted pickle, anything at all
        hint = "; the classes it names must be importable here" if trust and isinstance(exc, (ImportError, AttributeError)) else ""
        raise CheckpointError(f"{path}: not a readable {what}, truncated or corrupt? "
                              f"({type(exc).__name__}: {_first_line(exc)}){hint}") from exc


def _read_safetensors(path: Path, map_location: str) -> tuple[dict[str, Any], dict[str, int]]:
    from safetensors import SafetensorError, safe_open

    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    try:
        with safe_open(str(path), framework="pt", device=map_location) as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys()}
            meta = _order_metadata(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({_first_line(exc)})") from exc
    return state, meta


def _shard_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [index.parent / name for name in sorted(set(weight_map.values()))]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: not a readable shard index ({_first_line(exc)})") from exc


def _read_shards(index: Path, trust: bool, map_location: str) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for shard in _shard_files(index):
        if not shard.is_file():
            raise CheckpointError(f"{index}: names shard {shard.name}, which is missing")
        if shard.suffix == ".safetensors":
            state.update(_read_safetensors(shard, map_location)[0])
        else:
            state.update(_extract_state_dict(load_torch_file(shard, trust=trust, map_location=map_location), shard)[0])
    return state


def read_checkpoint(checkpoint: CheckpointFile, *, trust: bool = False, map_location: str = "cpu") -> LoadedCheckpoint:
    """Read one checkpoint's weights onto `map_location` (a GPU-saved file loads on the CPU).

    Never unpickles code unless `trust` (--trust-checkpoints): a pickle that names anything but tensors
    and plain containers raises UnsafeCheckpointError, and nothing in it runs.
    """
    import torch

    path = checkpoint.weights
    if not path.is_file() and checkpoint.path.is_dir():
        path = _weights_in_folder(checkpoint.path) or path     # raises when it holds several
    if not path.is_file():
        names = ", ".join(PREFERRED_WEIGHT_NAMES[:2])
        raise CheckpointError(f"{checkpoint.path}: holds no model weights (looked for {names} and other "
                              f"{'/'.join(WEIGHT_SUFFIXES)} files besides optimizer and scheduler state)")
    folder_meta = _trainer_state_metadata(checkpoint.path) if checkpoint.path.is_dir() else {}
    if path.name in SHARD_INDEX_NAMES:
        return LoadedCheckpoint(state_dict=_read_shards(path, trust, map_location), metadata=folder_meta)
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path, map_location)
        return LoadedCheckpoint(state_dict=state, metadata={**meta, **folder_meta})
    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location=map_location)
        except Exception as exc:  # torch raises RuntimeError subclasses without a common type
            raise CheckpointError(f"{path}: not a readable TorchScript archive ({_first_line(exc)})") from exc
        return LoadedCheckpoint(scripted=module, metadata=folder_meta)
    obj = load_torch_file(path, trust=trust, map_location=map_location)
    state, meta = _extract_state_dict(obj, path)
    return LoadedCheckpoint(state_dict=state, metadata={**meta, **folder_meta})


def _name_number(name: str) -> int | None:
    return last_integer(Path(name).stem if Path(name).suffix in WEIGHT_SUFFIXES else name)


def choose_order_key(metadata: Sequence[Mapping[str, int]]) -> str:
    """The one order key used for a whole series: the first of epoch, global_step, step that every
    checkpoint stores, else 'name' (the last integer in the file name).

    One key for all keeps the order consistent when only some files store an epoch (Hugging Face
    folders saved mid-epoch have a fractional epoch, so their global_step orders them all).
    """
    for key in ORDER_KEYS:
        if metadata and all(key in meta for meta in metadata):
            return key
    return "name"


def order_checkpoints(entries: list[tuple[CheckpointFile, dict[str, int]]]) -> list[tuple[CheckpointFile, int]]:
    """Training order and the epoch to report: stored epoch, else step, else the name's last integer.

    The key is chosen once for the whole series (`choose_order_key`); a checkpoint that lacks it uses
    the next key it has. Ties keep natural name order; files with no number at all keep name order
    after the numbered ones and are numbered on from the largest number.
    """
    key = choose_order_key([meta for _, meta in entries])
    fallbacks = ORDER_KEYS[ORDER_KEYS.index(key):] if key in ORDER_KEYS else ()

    def stored(meta: Mapping[str, int], name: str) -> int | None:
        for candidate in fallbacks:
            if candidate in meta:
                return meta[candidate]
        return _name_number(name)

    def natural(name: str) -> list:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]

    keyed = [(stored(meta, ckpt.name), ckpt) for ckpt, meta in entries]
    numbered = sorted(((v, c) for v, c in keyed if v is not None), key=lambda pair: (pair[0], natural(pair[1].name)))
    unnumbered = sorted((c for v, c in keyed if v is None), key=lambda c: natural(c.name))
    start = (numbered[-1][0] + 1) if numbered else 1
    return [(c, v) for v, c in numbered] + [(c, start + i) for i, c in enumerate(unnumbered)]


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
