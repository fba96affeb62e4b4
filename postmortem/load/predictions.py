"""Saved per-epoch predictions (--predictions DIR): the files, and each one's arrays, read without running code."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError, InputError
from .discovery import CheckpointFile

__all__ = ["PREDICTION_SUFFIXES", "discover_prediction_files", "read_prediction_file"]

PREDICTION_SUFFIXES = (".npz", ".pt")


def discover_prediction_files(root: Path) -> list[CheckpointFile]:
    """The .npz/.pt files of a predictions folder, in name order (ordered later like checkpoints)."""
    if not root.is_dir():
        raise InputError(f"{root}: predictions directory not found")
    sources = [CheckpointFile(p, p) for p in sorted(root.iterdir()) if p.is_file() and p.suffix in PREDICTION_SUFFIXES]
    if not sources:
        raise InputError(f"{root}: no predictions files (*.npz, *.pt) found")
    return sources


def read_prediction_file(path: Path, trust: bool = False) -> dict[str, Any]:
    """A predictions file: 'outputs' (N, C) or (N, T, C), 'labels', optional 'mask', 'ids', 'groups', 'epoch'."""
    if path.suffix == ".npz":
        from .data import read_npz
        content = read_npz(path, ".npz predictions file")
    else:
        from .torch_files import load_torch_data
        raw = load_torch_data(path, trust=trust, what="predictions file")
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected a dict with 'outputs' and 'labels', got {type(raw).__name__}")
        content = {k: _tensor_as_array(v) for k, v in raw.items()}
    missing = [key for key in ("outputs", "labels") if key not in content]
    if missing:
        raise DataError(f"{path}: missing {', '.join(repr(k) for k in missing)} (found {sorted(content)})")
    return content


def _tensor_as_array(value: Any) -> Any:
    """A tensor as a numpy array (bfloat16, which numpy lacks, as float32: exact); anything else as it is."""
    if not hasattr(value, "numpy"):
        return value
    import torch

    tensor = value.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
