"""Evaluation cache: one .npz per checkpoint under OUT/cache, keyed by checkpoint content and settings."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import CacheError
from ..load.training_setup import TrainingSetup
from .records import ITEM_SCALARS, EpochRecords, ItemTable

__all__ = ["CachedEpoch", "EvaluationCache", "remember_data", "recall_data", "write_atomically", "derived_key",
           "CACHE_FORMAT"]

CACHE_FORMAT = 5   # bump when EpochRecords or metadata change meaning, so old entries are recomputed


@dataclass(frozen=True)
class CachedEpoch:
    """What a checkpoint's evaluation leaves behind: its items, records, metadata and the training setup it records
    (stored as TrainingSetup.to_json in the entry's metadata, so a re-render from the cache has it)."""

    items: ItemTable
    records: EpochRecords
    metadata: dict[str, Any]
    training_setup: TrainingSetup | None = None


def _checksum(arrays: dict[str, np.ndarray]) -> int:
    """CRC-32 over every array's name, dtype, shape and bytes: an entry rewritten with other arrays fails it.
    (CRC, not sha256: the checksum sits in the same file, so it guards against accidents, not against someone who
    rewrites the file, and a CRC costs a fifth of the time.)"""
    crc = 0
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        crc = zlib.crc32(f"{name}{value.dtype.str}{value.shape}".encode(), crc)
        crc = zlib.crc32(memoryview(value).cast("B"), crc)
    return crc


class EvaluationCache:
    """Reads and writes cached evaluations; a corrupt entry reads as a miss, is noted in `problems`,
    and is recomputed and rewritten by the caller."""

    def __init__(self, directory: Path, settings_key: str):
        self.directory = directory
        self.settings_key = settings_key
        self.problems: list[str] = []

    def path_for(self, content_sha256: str) -> Path:
        return self.directory / f"{content_sha256[:32]}-{self.settings_key[:16]}.npz"

    def load(self, content_sha256: str) -> CachedEpoch | None:
        path = self.path_for(content_sha256)
        if not path.is_file():
            return None
        try:
            return self._read(path)
        except CacheError as exc:
            self.problems.append(f"cache entry recomputed: {exc}")
            return None

    @staticmethod
    def _read(path: Path) -> CachedEpoch:
        """An entry, every array read whole: zip's CRC-32 of each array is checked as it is read (a changed byte
        raises BadZipFile), the entry's own checksum catches arrays written by something else, and a partial write
        cannot happen (store renames a complete file into place)."""
        try:
            with np.load(path, allow_pickle=False) as archive:
                meta = json.loads(bytes(archive["meta"]).decode())
                if meta.get("format") != CACHE_FORMAT:
                    raise CacheError(f"{path}: cache format {meta.get('format')} is not {CACHE_FORMAT}")
                arrays = {name: archive[name] for name in (*ITEM_SCALARS, "labels", "ids", "groups",
                                                           *(("input_hashes",) if "input_hashes" in archive else ()))}
                records = EpochRecords(n_classes=int(meta["n_classes"]), temperature=float(meta["temperature"]),
                                       scaled_loss=float(meta["scaled_loss"]),
                                       **{name: arrays[name] for name in ITEM_SCALARS})
                items = ItemTable(labels=arrays["labels"], ids=arrays["ids"], groups=arrays["groups"],
                                  input_hashes=arrays.get("input_hashes"))
                setup = None if meta["training_setup"] is None else TrainingSetup.from_json(meta["training_setup"])
                expected = meta["checksum"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile, EOFError) as exc:
            raise CacheError(f"{path}: unreadable cache entry ({type(exc).__name__}: {exc})") from exc
        if _checksum(arrays) != expected:
            raise CacheError(f"{path}: cache entry does not match its checksum")
        lengths = {len(items.labels), *(len(getattr(records, name)) for name in ITEM_SCALARS),
                   *(() if items.input_hashes is None else (len(items.input_hashes),))}
        if len(lengths) != 1:
            raise CacheError(f"{path}: arrays of different lengths")
        n = records.n_classes
        if len(items.labels) and not (items.labels.min() >= 0 and items.labels.max() < n
                                      and records.pred.min() >= 0 and records.pred.max() < n):
            raise CacheError(f"{path}: labels or predictions outside [0, {n})")
        return CachedEpoch(items, records, meta["metadata"], setup)

    def store(self, content_sha256: str, entry: CachedEpoch) -> None:
        """Write one checkpoint's entry (atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        arrays = {"labels": entry.items.labels, "ids": entry.items.ids.astype(str), "groups": entry.items.groups,
                  **({} if entry.items.input_hashes is None else {"input_hashes": entry.items.input_hashes}),
                  **entry.records.arrays()}
        meta = {"format": CACHE_FORMAT, "n_classes": entry.records.n_classes,
                "temperature": entry.records.temperature, "scaled_loss": entry.records.scaled_loss,
                "metadata": entry.metadata, "checksum": _checksum(arrays),
                "training_setup": None if entry.training_setup is None else entry.training_setup.to_json()}
        write_atomically(self.path_for(content_sha256), lambda stream: np.savez(
            stream, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays))


def derived_key(base: str, *parts: Any) -> str:
    """A settings key for entries that depend on `base`'s and on more (a pass in train mode, a training subset):
    hashed, since an entry's file name keeps only the first characters of its key."""
    return hashlib.sha256(json.dumps([base, *parts], default=str).encode()).hexdigest()


def _data_record_path(directory: Path, data_key: str) -> Path:
    return directory / f"data-{data_key[:32]}.json"


def remember_data(directory: Path, data_key: str, fingerprint: str) -> None:
    """Keep beside the cache entries the fingerprint of the batches read from the data file named by `data_key` (its
    bytes and how it is read), so that a later run finds its entries without reading the data (and importing torch)."""
    directory.mkdir(parents=True, exist_ok=True)
    content = json.dumps({"fingerprint": fingerprint}).encode()
    write_atomically(_data_record_path(directory, data_key), lambda stream: stream.write(content))


def recall_data(directory: Path, data_key: str) -> str | None:
    """The fingerprint remember_data kept for this key; None when there is none or it cannot be read."""
    try:
        return str(json.loads(_data_record_path(directory, data_key).read_text(encoding="utf-8"))["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_atomically(path: Path, write: Callable[[Any], Any]) -> None:
    """write(stream) into a temporary file in the same folder, then a rename: never a partial file."""
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
