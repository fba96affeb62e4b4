"""The validation set: read once into a fixed list of batches, so every checkpoint sees the same items."""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import CheckpointError, DataError, InputError, UnsafeCheckpointError
from .spec import UserCallable, call_user_code, resolve_callable

__all__ = ["ValidationData", "read_npz", "load_validation_data", "names_data_file", "batch_fields", "batch_ids",
           "fingerprint_batches", "ID_KEYS"]

DATA_KEYS = ("inputs", "labels")
# Batch keys that name the items, by preference: per example, per step of a sequence (utterance_ids), or per
# sequence (vid: COSMIC's and DialogueRNN's dialogue ids). The first one a batch has is taken.
ID_KEYS = ("ids", "utterance_ids", "vid")


@dataclass(frozen=True)
class ValidationData:
    """Batches in a fixed order, where they came from, and a fingerprint of their content."""

    batches: list[Any]
    source: str
    fingerprint: str


def _update_digest(digest: "hashlib._Hash", value: Any) -> None:
    """Feed every tensor, array, number and string inside a batch into a digest, structure included."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, np.ndarray):
        digest.update(f"A{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes() if value.dtype != object else repr(value.tolist()).encode())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(f"K{key!s}".encode())
            _update_digest(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _update_digest(digest, item)
    else:
        digest.update(f"V{value!r}".encode())


def fingerprint_batches(batches: Sequence[Any]) -> str:
    digest = hashlib.sha256()
    _update_digest(digest, list(batches))
    return digest.hexdigest()


def _slice(value: Any, start: int, stop: int) -> Any:
    if isinstance(value, dict):
        return {k: _slice(v, start, stop) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_slice(v, start, stop) for v in value)
    return value[start:stop]


def _length(value: Any) -> int:
    if isinstance(value, dict):
        return _length(next(iter(value.values())))
    if isinstance(value, tuple):
        return _length(value[0])
    return len(value)


def _batches_from_mapping(content: dict, path: Path, batch_size: int) -> list[dict]:
    """Split a {'inputs', 'labels', 'mask'?, 'ids'?} mapping of whole-set tensors into batches."""
    import torch

    missing = [key for key in DATA_KEYS if key not in content]
    if missing:
        raise DataError(f"{path}: missing {', '.join(repr(k) for k in missing)} "
                        f"(a data file holds 'inputs', 'labels' and optionally 'mask', 'ids'; found {sorted(map(str, content))})")
    items = {key: content[key] for key in ("inputs", "labels", "mask", *ID_KEYS, "groups") if key in content}
    for key, value in list(items.items()):
        if hasattr(value, "dtype") and not isinstance(value, torch.Tensor):   # numpy from .npz
            items[key] = torch.from_numpy(value) if value.dtype.kind in "biuf" else list(value.tolist())
    n = _length(items["labels"])
    for key, value in items.items():
        if _length(value) != n:
            raise DataError(f"{path}: '{key}' has {_length(value)} items but 'labels' has {n}")
    return [{key: _slice(value, start, start + batch_size) for key, value in items.items()}
            for start in range(0, n, batch_size)]


def _read_data_file(path: Path, batch_size: int, trust: bool = False, what: str = "validation data") -> list[Any]:
    from .torch_files import load_torch_data

    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    if path.suffix == ".npz":
        return _batches_from_mapping(read_npz(path, ".npz file"), path, batch_size)
    try:
        content = load_torch_data(path, trust=trust, what=".pt data file")
    except UnsafeCheckpointError:
        raise
    except CheckpointError as exc:
        raise DataError(str(exc)) from exc
    if isinstance(content, dict):
        return _batches_from_mapping(content, path, batch_size)
    if isinstance(content, (list, tuple)) and content:
        return list(content)
    raise DataError(f"{path}: expected a dict with 'inputs' and 'labels' or a list of batches, got {type(content).__name__}")


def read_npz(path: Path, what: str) -> dict[str, Any]:
    """Every array of an .npz file, read without unpickling (allow_pickle=False)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable {what}, truncated or corrupt? ({exc})") from exc


def _batches_from_factory(factory: UserCallable, batch_size: int, workers: int = 0) -> list[Any]:
    import torch
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    produced = factory()
    if isinstance(produced, (Dataset, IterableDataset)) and not isinstance(produced, (list, tuple)):
        produced = DataLoader(produced, batch_size=batch_size, shuffle=False, num_workers=workers)
    if isinstance(produced, DataLoader) and isinstance(produced.sampler, torch.utils.data.RandomSampler):
        raise DataError(f"{factory.reference}: returns a DataLoader with shuffle=True; "
                        "items must come in the same order for every checkpoint")
    if isinstance(produced, dict):
        return _batches_from_mapping(produced, Path(factory.reference), batch_size)
    try:
        iterator = iter(produced)
    except TypeError as exc:
        raise DataError(f"{factory.reference}: returned a {type(produced).__name__}, "
                        "expected a Dataset, a DataLoader or an iterable of batches") from exc
    batches = call_user_code(factory.reference, list, iterator)   # iterating runs the user's data code
    if not batches:
        raise DataError(f"{factory.reference}: returned no batches")
    return batches


DATA_FILE_SUFFIXES = (".pt", ".npz")


def names_data_file(reference: str | None) -> bool:
    """Whether --data names a data file (read as data), not a factory FILE.py:FUNC whose code must run."""
    return reference is not None and Path(reference).suffix in DATA_FILE_SUFFIXES


def load_validation_data(reference: str | None, run: Path, spec_file: Path, batch_size: int,
                         trust: bool = False, workers: int = 0, what: str = "validation data") -> ValidationData:
    """Read --data (a .pt/.npz file or FILE.py:FUNC), default RUN/postmortem_spec.py:val_data; the training subset
    (--train-data, `what` naming it in messages) is read the same way, from a reference resolved by the caller.

    A .pt file is read without running code (torch_files: weights-only, else inert placeholders); with its
    code only when that refuses it and `trust` (--trust-checkpoints). A Dataset
    is batched by a DataLoader with `workers` processes (--workers), read once for every checkpoint.
    """
    if reference is None:
        if not spec_file.is_file():
            raise InputError(f"{run}: no validation data: pass --data FILE.pt|FILE.npz|FILE.py:FUNC "
                             f"or define val_data() in {spec_file.name}")
        reference = f"{spec_file}:val_data"
    if names_data_file(reference):
        batches = _read_data_file(Path(reference), batch_size, trust, what)
    else:
        batches = _batches_from_factory(resolve_callable(reference, what), batch_size, workers)
    return ValidationData(batches=batches, source=reference, fingerprint=fingerprint_batches(batches))


BATCH_META_KEYS = ("labels", "mask", *ID_KEYS, "groups")


def batch_ids(batch: Any) -> Any:
    """The ids a batch gives its items: the first of ID_KEYS a dict batch has; None for other batches."""
    if isinstance(batch, dict):
        for key in ID_KEYS:
            if key in batch:
                return batch[key]
    return None


def batch_fields(batch: Any) -> tuple[Any, Any, Any, Any, Any]:
    """(inputs, labels, mask, ids, groups) of a batch: a dict, or an (inputs, labels[, mask]) tuple.

    A dict without 'inputs' (a Hugging Face batch: input_ids, attention_mask, labels) passes all its
    keys except labels, mask, groups and the id keys (ID_KEYS) to the model as keyword arguments.
    """
    if isinstance(batch, dict):
        if "labels" not in batch:
            raise DataError(f"a batch has keys {sorted(map(str, batch))}; without --forward it needs 'labels' "
                            "(and 'inputs', or the model's keyword arguments); define forward(model, batch) "
                            "for other layouts")
        inputs = batch["inputs"] if "inputs" in batch else \
            {k: v for k, v in batch.items() if k not in BATCH_META_KEYS}
        if isinstance(inputs, dict) and not inputs:
            raise DataError(f"a batch has only {sorted(map(str, batch))}: no inputs for the model")
        return inputs, batch["labels"], batch.get("mask"), batch_ids(batch), batch.get("groups")
    if isinstance(batch, (list, tuple)) and len(batch) in (2, 3):
        return batch[0], batch[1], (batch[2] if len(batch) == 3 else None), None, None
    raise DataError(f"a batch is a {type(batch).__name__}; without --forward it must be a dict with 'inputs' and "
                    "'labels' or a tuple (inputs, labels[, mask])")
