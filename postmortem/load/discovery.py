"""Find a run's checkpoints and put them in training order.

What is found (see README, "Checkpoint layouts"):
- files named *.pt *.pth *.ckpt *.bin *.safetensors, and files whose content is torch data whatever their
  name: timm's checkpoint-N.pth.tar, older torchvision's *.tar, files with no suffix, .pkl files written by
  torch.save;
- folders holding one weights file, e.g. Hugging Face Trainer's checkpoint-N/ (model.safetensors,
  pytorch_model.bin, sharded weights through their *.index.json);
- what --checkpoints names explicitly (files, folders or globs): files are taken as given.
Every other file of a searched folder is listed as not read, with what it is (`unread_files`).
Copies such as timm's last.pth.tar and model_best.pth.tar or torchvision's checkpoint.pth are found too;
they order after the numbered file of the same epoch and are left out as duplicates once evaluated.
"""
from __future__ import annotations

import glob
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping, Sequence

from ..errors import CheckpointError, InputError
from .torch_files import first_line, is_torch_data, why_not_torch_data

__all__ = [
    "WEIGHT_SUFFIXES",
    "PREFERRED_WEIGHT_NAMES",
    "SHARD_INDEX_NAMES",
    "ORDER_KEYS",
    "CheckpointFile",
    "UnreadFile",
    "discover_checkpoints",
    "unread_files",
    "weights_in_folder",
    "shard_files",
    "file_sha256",
    "last_integer",
    "name_number",
    "choose_order_key",
    "order_checkpoints",
]

WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
# Other suffixes torch data is saved under (timm's .pth.tar, pickles): taken when their content is torch data.
SNIFFED_SUFFIXES = (".tar", ".pkl", "")
# In a checkpoint folder (e.g. Hugging Face's checkpoint-500/), the model weights by preference.
PREFERRED_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")
# Sharded Hugging Face weights: an index naming the shard of every key.
SHARD_INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Files that sit beside model weights in training folders but are not model weights.
NOT_MODEL_WEIGHTS = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "scaler.pt"}
ORDER_KEYS = ("epoch", "global_step", "step")


@dataclass(frozen=True)
class CheckpointFile:
    """One checkpoint on disk: `path` is what the user sees (file or folder), `weights` what is read."""

    path: Path
    weights: Path

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class UnreadFile:
    """A file of a searched checkpoint folder that is not read, and what it is (listed in the report)."""

    path: Path
    reason: str

    @property
    def name(self) -> str:
        return self.path.name


def last_integer(name: str) -> int | None:
    """The last run of digits in a name ('epoch=10-step=500.ckpt' -> 500), or None."""
    numbers = re.findall(r"\d+", name)
    return int(numbers[-1]) if numbers else None


def name_number(name: str) -> int | None:
    """The number a checkpoint's name orders by: the one labelled epoch ('epoch=3-step=150.ckpt' -> 3, as Lightning
    names them; 'epoch_10.pt' -> 10), else the last integer ('checkpoint-500' -> 500, 'run3_ep7.pt' -> 7); a
    weights suffix is left out first. None when the name holds no digits."""
    stem = Path(name).stem if Path(name).suffix in WEIGHT_SUFFIXES else name
    labelled = re.findall(r"epoch[=_\-]?(\d+)", stem, flags=re.IGNORECASE)
    return int(labelled[-1]) if labelled else last_integer(stem)


def shard_files(index: Path) -> list[Path]:
    """The shard files a Hugging Face *.index.json names, in name order."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [index.parent / name for name in sorted(set(weight_map.values()))]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: not a readable shard index ({first_line(exc)})") from exc


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes; of a shard index, of the index and every shard it names."""
    digest = hashlib.sha256()
    paths = [path] + (shard_files(path) if path.name in SHARD_INDEX_NAMES else [])
    for part in paths:
        with open(part, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def _looks_like_checkpoint_folder(folder: Path) -> bool:
    return bool(re.fullmatch(r"checkpoint[-_=]?\d+", folder.name)) or (folder / "trainer_state.json").is_file()


def weights_in_folder(folder: Path) -> Path | None:
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


def _is_checkpoint_file(path: Path) -> bool:
    """A file in a searched folder: a weights suffix, or torch data under another suffix (read to tell)."""
    if path.name in NOT_MODEL_WEIGHTS:
        return False
    if path.suffix in WEIGHT_SUFFIXES:
        return True
    return path.suffix in SNIFFED_SUFFIXES and is_torch_data(path)


def _from_folder_entry(entry: Path) -> CheckpointFile | None:
    """A sub-folder as a checkpoint: the weights inside, or (named like checkpoint-N) one reported as skipped."""
    try:
        weights = weights_in_folder(entry)
    except CheckpointError:
        return CheckpointFile(entry, entry)   # reported as skipped when read
    if weights is not None:
        return CheckpointFile(entry, weights)
    return CheckpointFile(entry, entry) if _looks_like_checkpoint_folder(entry) else None


def _entries(location: str) -> tuple[list[Path], bool]:
    """The paths one --checkpoints value names, and whether they were named one by one (taken as given)."""
    if any(ch in location for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(location)), True
    root = Path(location)
    if root.is_file():
        return [root], True
    if root.is_dir():
        return sorted(root.iterdir()), False
    raise InputError(f"{root}: checkpoint directory not found")


def _listings(locations: Sequence[str] | None, run: Path) -> tuple[list[tuple[list[Path], bool]], str]:
    """What --checkpoints lists (default RUN/checkpoints, else RUN): per value, its paths and whether they were
    named one by one; and where that is, for messages."""
    if locations is None:
        if not run.is_dir():
            raise InputError(f"{run}: run directory not found")
        root = run / "checkpoints" if (run / "checkpoints").is_dir() else run
        return [(sorted(root.iterdir()), False)], str(root)
    return [_entries(location) for location in locations], ", ".join(locations)


def _considered(listed: list[tuple[list[Path], bool]], exclude: Collection[Path]) -> list[tuple[Path, bool]]:
    """Each listed path once, less the excluded ones and hidden or dunder entries (.git, __pycache__)."""
    excluded = {p.resolve() for p in exclude}
    considered, seen = [], set()
    for entries, as_given in listed:
        for entry in entries:
            key = entry.resolve()
            if key in excluded or key in seen or entry.name.startswith((".", "__")):
                continue
            seen.add(key)
            considered.append((entry, as_given))
    return considered


def _as_checkpoint(entry: Path, as_given: bool) -> CheckpointFile | None:
    if entry.is_file() and (as_given or _is_checkpoint_file(entry)):
        return CheckpointFile(entry, entry)
    if entry.is_dir():
        return _from_folder_entry(entry)
    return None


def discover_checkpoints(locations: Sequence[str] | None, run: Path,
                         exclude: Collection[Path] = ()) -> list[CheckpointFile]:
    """Checkpoint files and folders at --checkpoints (folders, files or globs), default RUN/checkpoints else RUN.

    In a searched folder, files are chosen by suffix or content and sub-folders by the weights inside;
    files named one by one (a glob, a file list) are all taken, to be read or reported as skipped. A folder
    named like checkpoint-N (or holding trainer_state.json) without model weights is kept, so that it is
    reported as skipped; other folders without weights (logs, data) are ignored.
    """
    listed, where = _listings(locations, run)
    found = [ckpt for entry, as_given in _considered(listed, exclude)
             if (ckpt := _as_checkpoint(entry, as_given)) is not None]
    if not found:
        suffixes = " ".join(f"*{s}" for s in WEIGHT_SUFFIXES)
        raise InputError(f"{where}: no checkpoints found (looked for {suffixes}, other files holding torch data "
                         "and folders holding one)")
    return found


def unread_files(locations: Sequence[str] | None, run: Path, exclude: Collection[Path] = ()) -> list[UnreadFile]:
    """The files of the searched folders that discover_checkpoints does not take, each with what it is (told from
    its first bytes; nothing is unpickled): a plain pickle named epoch_3.pkl would otherwise leave a silent gap.
    Sub-folders are not files and are left out, as are files named one by one (those are all read)."""
    listed, _ = _listings(locations, run)
    unread = []
    for entry, as_given in _considered(listed, exclude):
        if as_given or not entry.is_file() or _as_checkpoint(entry, as_given) is not None:
            continue
        reason = ("training state beside the model (optimizer, scheduler, RNG or arguments), not model weights"
                  if entry.name in NOT_MODEL_WEIGHTS else why_not_torch_data(entry))
        unread.append(UnreadFile(entry, reason))
    return unread


def choose_order_key(metadata: Sequence[Mapping[str, int]]) -> str:
    """The one order key used for a whole series: the first of epoch, global_step, step that every
    checkpoint stores, else 'name' (the number in the file name, `name_number`).

    One key for all keeps the order consistent when only some files store an epoch (Hugging Face
    folders saved mid-epoch have a fractional epoch, so their global_step orders them all).
    """
    for key in ORDER_KEYS:
        if metadata and all(key in meta for meta in metadata):
            return key
    return "name"


def order_checkpoints(entries: list[tuple[CheckpointFile, Mapping[str, int]]]) -> list[tuple[CheckpointFile, int]]:
    """Training order and the epoch to report: stored epoch, else step, else the name's number (`name_number`:
    the integer labelled epoch, else the last one).

    The key is chosen once for the whole series (`choose_order_key`); a checkpoint that lacks it uses
    the next key it has. Ties put names with a number before names without (checkpoint-3.pth.tar before
    its copies last.pth.tar and model_best.pth.tar; model_3.pth before checkpoint.pth), then natural name
    order, so the numbered file is the one kept when copies are left out. Files with no number at all keep
    name order after the numbered ones and are numbered on from the largest number.
    """
    key = choose_order_key([meta for _, meta in entries])
    fallbacks = ORDER_KEYS[ORDER_KEYS.index(key):] if key in ORDER_KEYS else ()

    def stored(meta: Mapping[str, int], name: str) -> int | None:
        for candidate in fallbacks:
            if candidate in meta:
                return meta[candidate]
        return name_number(name)

    def natural(name: str) -> list:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]

    keyed = [(stored(meta, ckpt.name), ckpt) for ckpt, meta in entries]
    numbered = sorted(((v, c) for v, c in keyed if v is not None),
                      key=lambda pair: (pair[0], name_number(pair[1].name) is None, natural(pair[1].name)))
    unnumbered = sorted((c for v, c in keyed if v is None), key=lambda c: natural(c.name))
    start = (numbered[-1][0] + 1) if numbered else 1
    return [(c, v) for v, c in numbered] + [(c, start + i) for i, c in enumerate(unnumbered)]
