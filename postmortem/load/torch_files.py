"""Read files written by torch.save (checkpoints, .pt data, predictions) and safetensors, running no code.

Three readers, in this order:
1. torch.load(weights_only=True): tensors and plain containers only; most state_dict files stop here.
2. torch.load with the inert unpickler (inert_pickle): any other global becomes a placeholder that records
   what it was called with, so argparse.Namespace args, omegaconf configs, numpy scalars and whole pickled
   modules read without importing their classes.
3. Only when the user trusts the file (--trust-checkpoints) and the inert reading cannot represent it:
   torch.load(weights_only=False), which imports and runs what the pickle names.
Every failure becomes one CheckpointError line naming the file.
"""
from __future__ import annotations

import io
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = ["ZIP_MAGIC", "LEGACY_TORCH_MAGIC", "first_line", "is_torch_data", "is_torchscript", "load_torch_file",
           "load_torch_data", "read_safetensors_file", "why_not_torch_data"]

ZIP_MAGIC = b"PK\x03\x04"
# Legacy (non-zip) torch.save files open with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1).
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
PICKLE_PROTOCOL_BYTE = 0x80
# The number legacy (non-zip) torch.save pickles first, whatever the pickle protocol.
TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
NUMPY_MAGIC = b"\x93NUMPY"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
PLAIN_PICKLE = ("a plain pickle (pickle.dump, not torch.save): not read, since unpickling it could run code; "
                "save it with torch.save")
TRUST_HINT = ("If you made this file yourself, pass --trust-checkpoints (or trust-checkpoints = true in "
              "postmortem.toml) to unpickle it with its code")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _head(path: Path, n: int = 64) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(n)


def _is_safetensors_bytes(head: bytes, size: int) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header."""
    return len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def is_torchscript(path: Path) -> bool:
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in _zip_names(path))


def _opening_opcodes(head: bytes) -> list[tuple[str, object]]:
    """The opcodes (name, argument) a pickle's opening bytes decode to, by pickletools' scanner, which decodes
    and never builds or calls anything; it stops where the bytes end or stop being a pickle."""
    decoded = []
    try:
        for opcode, argument, _ in pickletools.genops(io.BytesIO(head)):
            decoded.append((opcode.name, argument))
    except ValueError:   # cut off here, or not a pickle from here on
        pass
    return decoded


def _looks_like_pickle(head: bytes) -> bool:
    """A protocol-2+ pickle: the PROTO opcode and at least one more decode (b'\\x80\\x02garbage' does not)."""
    return head[:1] == bytes([PICKLE_PROTOCOL_BYTE]) and len(_opening_opcodes(head)) >= 2


def _is_legacy_torch_pickle(head: bytes) -> bool:
    """A legacy torch.save file: a pickle whose first value is torch's magic number (any protocol)."""
    values = [argument for name, argument in _opening_opcodes(head) if name not in ("PROTO", "FRAME")]
    return head.startswith(LEGACY_TORCH_MAGIC) or (
        head[:1] == bytes([PICKLE_PROTOCOL_BYTE]) and values[:1] == [TORCH_MAGIC_NUMBER])


def is_torch_data(path: Path) -> bool:
    """Whether a file's content is torch data (torch.save zip or legacy pickle, TorchScript, safetensors),
    told from its first bytes and, for a zip, its member names; unreadable files are not."""
    try:
        head, size = _head(path), path.stat().st_size
    except OSError:
        return False
    if head.startswith(ZIP_MAGIC):
        return any(n.endswith("/data.pkl") for n in _zip_names(path))
    return _is_legacy_torch_pickle(head) or _is_safetensors_bytes(head, size)


def why_not_torch_data(path: Path) -> str:
    """What a file that is not torch data is, told from its first bytes only (nothing is unpickled): the reason a
    checkpoint folder's file is not read, for the report's list of files not read."""
    try:
        head = _head(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "empty (0 bytes)"
    if head.startswith(NUMPY_MAGIC) or (head.startswith(ZIP_MAGIC) and path.suffix == ".npz"):
        return "numpy arrays, not a checkpoint (saved per-epoch outputs are read with --predictions DIR)"
    if head.startswith(ZIP_MAGIC):
        return "a zip archive holding no torch data"
    if head.startswith(HDF5_MAGIC):
        return "an HDF5 file (Keras, h5py), not a torch checkpoint"
    if _looks_like_pickle(head):
        return PLAIN_PICKLE
    if b"\0" not in head and _is_text(head):
        return "a text file, not a checkpoint"
    return f"an unknown format (it starts with {head[:8]!r})"


def _is_text(head: bytes) -> bool:
    """UTF-8 text, allowing a character cut off at the end of the bytes read."""
    for cut in range(4):
        try:
            head[:len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def _check_container(path: Path, what: str) -> bool:
    """Fail early, with a clear line, on files torch.load would misread; True for a safetensors file."""
    head = _head(path)
    if not head:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a {what}")
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path):   # reads the central directory, which truncation loses
                return False
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CheckpointError(f"{path}: truncated or corrupt {what}: the zip archive written by torch.save "
                                  f"is incomplete ({first_line(exc)})") from exc
    if _is_safetensors_bytes(head, path.stat().st_size):
        return True
    if _looks_like_pickle(head) and not _is_legacy_torch_pickle(head):
        raise CheckpointError(f"{path}: {PLAIN_PICKLE}")
    if head[0] != PICKLE_PROTOCOL_BYTE:
        raise CheckpointError(f"{path}: not a {what}: not a zip archive (torch.save), a pickle (legacy "
                              f"torch.save) or a safetensors file (it starts with {head[:8]!r})")
    return False


def _torch_load(path: Path, map_location: str, mmap: bool = False, **how: Any) -> Any:
    """torch.load, quiet; `mmap` maps a zip file's tensors instead of reading them (legacy files are read whole)."""
    import torch

    if mmap and _head(path).startswith(ZIP_MAGIC):
        how["mmap"] = True
    with warnings.catch_warnings():   # torch warns about legacy whole-module sources it cannot check
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=map_location, **how)


def _read_inert(path: Path, map_location: str, what: str, mmap: bool = False) -> Any:
    from .inert_pickle import INERT_PICKLE_MODULE, RefusedOpcode

    try:
        return _torch_load(path, map_location, mmap, weights_only=False, pickle_module=INERT_PICKLE_MODULE)
    except RefusedOpcode as exc:
        raise UnsafeCheckpointError(
            f"{path}: not readable without running code: its pickle {first_line(exc)} (postmortem reads pickles "
            f"without importing or calling what they name). {TRUST_HINT}") from exc
    except Exception as exc:   # a damaged or hand-made pickle makes the interpreter raise many unrelated types
        raise CheckpointError(f"{path}: truncated or corrupt {what} ({type(exc).__name__}: {first_line(exc)})") from exc


def _names_unsafe_globals(path: Path) -> bool:
    """Whether weights-only loading would refuse a zip checkpoint, told by torch's static scan of its pickle:
    such a file goes straight to the inert reader instead of being read twice (a weights-only attempt loads
    every tensor before the first refused global: for a 100 MB timm file of ResNet-50 size, 0.062 -> 0.028 s,
    medians of 21 alternating loads).
    Legacy files and files the scan cannot follow try weights-only loading first."""
    import torch

    if not _head(path).startswith(ZIP_MAGIC):
        return False
    try:
        return bool(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:   # the scan knows fewer opcodes than the unpickler: let the readers decide
        return False


def _read_running_code(path: Path, map_location: str, what: str) -> Any:
    try:
        return _torch_load(path, map_location, weights_only=False)
    except Exception as exc:   # a trusted pickle can raise anything at all
        hint = "; the classes it names must be importable here" if isinstance(exc, (ImportError, AttributeError)) else ""
        raise CheckpointError(f"{path}: not a readable {what}, truncated or corrupt? "
                              f"({type(exc).__name__}: {first_line(exc)}){hint}") from exc


def load_torch_file(path: Path, *, map_location: str = "cpu", what: str = "checkpoint", run_code: bool = False,
                    mmap: bool = False) -> Any:
    """What a torch.save file holds: weights-only reading first, then the inert unpickler (module doc).

    `run_code` (only for files the user trusts) unpickles with the full pickle instead, importing and
    calling what it names. A safetensors file under another suffix is read as safetensors. `mmap` maps the
    tensors of a zip file rather than reading them (for files whose tensors are not needed: an optimizer's
    moments), except when running code.
    """
    if _check_container(path, what):
        return read_safetensors_file(path, map_location)[0]
    if run_code:
        return _read_running_code(path, map_location, what)
    if _names_unsafe_globals(path):
        return _read_inert(path, map_location, what, mmap)
    try:
        return _torch_load(path, map_location, mmap, weights_only=True)
    except Exception:   # globals beyond tensors (or a file it cannot read): the inert reader says which
        return _read_inert(path, map_location, what, mmap)


def load_torch_data(path: Path, *, trust: bool = False, map_location: str = "cpu", what: str = "checkpoint",
                    mmap: bool = False) -> Any:
    """load_torch_file, then, when the inert reading refused the file and the user trusts it, with its code."""
    try:
        return load_torch_file(path, map_location=map_location, what=what, mmap=mmap)
    except UnsafeCheckpointError:
        if not trust:
            raise
    return load_torch_file(path, map_location=map_location, what=what, run_code=True)


def read_safetensors_file(path: Path, map_location: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Every tensor of a safetensors file, and its string metadata."""
    from safetensors import SafetensorError, safe_open

    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    try:
        with safe_open(str(path), framework="pt", device=map_location) as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({first_line(exc)})") from exc
