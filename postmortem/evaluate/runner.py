"""Evaluate every checkpoint of a run (or read saved predictions) into cached per-item records."""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .. import __version__
from ..config import ReportConfig
from ..errors import ConfigError, DataError, InputError
from ..load.checkpoints import CheckpointFile, discover_checkpoints, file_sha256, order_checkpoints
from .cache import CACHE_FORMAT, CachedEpoch, EvaluationCache
from .records import EpochRecords, ItemTable, OutputsAccumulator, detect_output_kind, log_softmax64

__all__ = ["EvaluatedEpoch", "Skipped", "Evaluation", "evaluate_run"]

PREDICTION_SUFFIXES = (".npz", ".pt")


@dataclass(frozen=True)
class EvaluatedEpoch:
    """One checkpoint's evaluation: where it came from, its epoch number and per-item records."""

    checkpoint: str
    path: str
    sha256: str
    epoch: int
    output_kind: str
    records: EpochRecords
    from_cache: bool


@dataclass(frozen=True)
class Skipped:
    checkpoint: str
    error: str


@dataclass(frozen=True)
class Evaluation:
    """Everything the analyses need: the items, the epochs in training order, and what was skipped."""

    items: ItemTable
    epochs: list[EvaluatedEpoch]
    skipped: list[Skipped]
    n_classes: int
    item_weights: np.ndarray
    class_weights: np.ndarray
    data_source: str
    data_fingerprint: str
    mode: str                                   # "model" or "predictions"
    notes: list[str] = field(default_factory=list)


def _progress(total: int, quiet: bool):
    """A per-checkpoint progress bar on a terminal; silent otherwise."""
    from tqdm import tqdm

    return tqdm(total=total, desc="evaluating", unit="ckpt", disable=quiet or not sys.stderr.isatty(),
                file=sys.stderr, leave=False)


def _settings_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_run(config: ReportConfig) -> Evaluation:
    """Evaluate the run named by `config`; one bad checkpoint is skipped and reported, never fatal."""
    if config.predictions:
        return _evaluate_predictions(config)
    return _evaluate_checkpoints(config)


def _collect(config: ReportConfig, sources: list[CheckpointFile], cache: EvaluationCache,
             compute: Callable[[CheckpointFile], CachedEpoch], mode: str, data_source: str,
             data_fingerprint: str) -> Evaluation:
    """Shared loop: cache look-up, compute on a miss, consistency checks, ordering, skipped list."""
    done: list[tuple[CheckpointFile, CachedEpoch, str, bool]] = []
    skipped: list[Skipped] = []
    items: ItemTable | None = None
    with _progress(len(sources), config.quiet) as bar:
        for source in sources:
            bar.set_postfix_str(source.name)
            try:
                sha = file_sha256(source.weights) if source.weights.is_file() else ""
                entry = cache.load(sha) if sha else None
                from_cache = entry is not None
                if entry is None:
                    entry = compute(source)
                    if sha:
                        cache.store(sha, entry)
                items = _check_consistent(items, entry, source, done)
                done.append((source, entry, sha, from_cache))
            except ConfigError:
                raise
            except InputError as exc:
                skipped.append(Skipped(source.name, str(exc)))
            bar.update(1)
    if not done:
        first = skipped[0].error if skipped else "no checkpoints"
        raise InputError(first if len(skipped) == 1 else f"all {len(skipped)} checkpoints failed; the first: {first}")
    ordered = order_checkpoints([(source, entry.metadata) for source, entry, _, _ in done])
    by_name = {source.name: (entry, sha, cached) for source, entry, sha, cached in done}
    epochs = [EvaluatedEpoch(source.name, str(source.path), by_name[source.name][1], epoch,
                             by_name[source.name][0].metadata.get("output_kind", config.outputs),
                             by_name[source.name][0].records, by_name[source.name][2])
              for source, epoch in ordered]
    n_classes = epochs[0].records.n_classes
    class_weights = np.ones(n_classes) if config.class_weights is None else np.asarray(config.class_weights, float)
    return Evaluation(items=items, epochs=epochs, skipped=skipped, n_classes=n_classes,
                      item_weights=class_weights[items.labels], class_weights=class_weights,
                      data_source=data_source, data_fingerprint=data_fingerprint, mode=mode)


def _check_consistent(items: ItemTable | None, entry: CachedEpoch, source: CheckpointFile,
                      done: list) -> ItemTable:
    """Every epoch must score the same items with the same number of classes."""
    if items is None:
        return entry.items
    first_name, first = done[0][0].name, done[0][1]
    if entry.records.n_classes != first.records.n_classes:
        raise DataError(f"{source.path}: outputs have {entry.records.n_classes} classes, "
                        f"but {first_name} has {first.records.n_classes}")
    if len(entry.items.labels) != len(items.labels) or not np.array_equal(entry.items.labels, items.labels):
        raise DataError(f"{source.path}: scores {len(entry.items.labels)} items whose labels differ from "
                        f"the {len(items.labels)} items of {first_name}")
    return items


def _check_class_count(config: ReportConfig, n_classes: int, where: str) -> None:
    if config.class_names is not None and len(config.class_names) != n_classes:
        raise DataError(f"{where}: outputs have {n_classes} classes but {len(config.class_names)} class names were given")


# ----------------------------------------------------------------------------- model mode
def _evaluate_checkpoints(config: ReportConfig) -> Evaluation:
    from ..load.checkpoints import read_checkpoint
    from ..load.data import load_validation_data
    from ..load.spec import DEFAULT_SPEC_FILE, resolve_callable
    from .model_runner import prepare_model, run_checkpoint, to_device

    spec_file = config.run / DEFAULT_SPEC_FILE
    build_model = _spec_callable(config.model, spec_file, "build_model", "model", resolve_callable)
    forward = _spec_callable(config.forward, spec_file, "forward", "forward", resolve_callable)
    data = load_validation_data(config.data, config.run, spec_file, config.batch_size)
    exclude = [config.out_dir] + ([Path(config.data)] if config.data and Path(config.data).is_file() else [])
    sources = discover_checkpoints(config.checkpoints, config.run, exclude)
    batches = to_device(data.batches, config.device) if config.device != "cpu" else data.batches
    settings = _settings_key(data=data.fingerprint, outputs=config.outputs, ignore_index=config.ignore_index,
                             weights=config.class_weights, model=getattr(build_model, "source_sha256", None),
                             forward=getattr(forward, "source_sha256", None))

    def compute(source: CheckpointFile) -> CachedEpoch:
        loaded = read_checkpoint(source, trust=config.trust_checkpoints, map_location=config.device)
        model = prepare_model(loaded, source, build_model, config.device)
        accumulator = OutputsAccumulator(config.class_weights, config.ignore_index, str(source.path))
        kind = run_checkpoint(model, batches, forward, config.outputs, accumulator)
        items, records = accumulator.finish()
        _check_class_count(config, records.n_classes, str(source.path))
        return CachedEpoch(items, records, {**loaded.metadata, "output_kind": kind})

    cache = EvaluationCache(config.out_dir / "cache", settings)
    return _collect(config, sources, cache, compute, "model", data.source, data.fingerprint)


def _spec_callable(reference: str | None, spec_file: Path, default_name: str, what: str, resolve):
    """--model/--forward, else the function of that name in RUN/postmortem_spec.py when it defines one."""
    if reference:
        return resolve(reference, what)
    if spec_file.is_file():
        spec = resolve(f"{spec_file}:{default_name}", what) if _defines(spec_file, default_name) else None
        return spec
    return None


def _defines(spec_file: Path, name: str) -> bool:
    """Whether a spec file defines a top-level function `name` (read as text: importing runs user code)."""
    import ast

    try:
        tree = ast.parse(spec_file.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise InputError(f"{spec_file}: not valid Python ({exc})") from exc
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Assign)) and
               (getattr(node, "name", None) == name or
                any(getattr(t, "id", None) == name for t in getattr(node, "targets", [])))
               for node in tree.body)


# ----------------------------------------------------------------------------- predictions mode
def _read_prediction_file(path: Path) -> dict[str, Any]:
    """A predictions file: 'outputs' (N, C) or (N, T, C), 'labels', optional 'mask', 'ids', 'epoch'."""
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                content = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npz predictions file ({exc})") from exc
    else:
        import torch
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises many unrelated types for a bad file
            raise DataError(f"{path}: not a readable .pt predictions file ({str(exc).splitlines()[0]})") from exc
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected a dict with 'outputs' and 'labels', got {type(raw).__name__}")
        content = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in raw.items()}
    missing = [key for key in ("outputs", "labels") if key not in content]
    if missing:
        raise DataError(f"{path}: missing {', '.join(repr(k) for k in missing)} (found {sorted(content)})")
    return content


def _evaluate_predictions(config: ReportConfig) -> Evaluation:
    root = Path(config.predictions)
    if not root.is_dir():
        raise InputError(f"{root}: predictions directory not found")
    sources = [CheckpointFile(p, p) for p in sorted(root.iterdir())
               if p.is_file() and p.suffix in PREDICTION_SUFFIXES]
    if not sources:
        raise InputError(f"{root}: no predictions files (*.npz, *.pt) found")
    settings = _settings_key(mode="predictions", outputs=config.outputs, ignore_index=config.ignore_index,
                             weights=config.class_weights)

    def compute(source: CheckpointFile) -> CachedEpoch:
        content = _read_prediction_file(source.path)
        outputs = np.asarray(content["outputs"])
        if outputs.ndim < 2:
            raise DataError(f"{source.path}: 'outputs' of shape {outputs.shape}; expected (N, C) or (N, T, C)")
        kind = detect_output_kind(outputs[:64]) if config.outputs == "auto" else config.outputs
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.log(outputs.astype(np.float64)) if kind == "probs" else outputs.astype(np.float64)
        nonfinite = np.isnan(scores).any(-1) | np.isposinf(scores).any(-1) | np.isneginf(scores).all(-1)
        accumulator = OutputsAccumulator(config.class_weights, config.ignore_index, str(source.path))
        ids = content.get("ids")
        accumulator.add(log_softmax64(scores, "logits"), content["labels"], content.get("mask"),
                        ids=None if ids is None else list(np.asarray(ids).tolist()), nonfinite_rows=nonfinite)
        items, records = accumulator.finish()
        _check_class_count(config, records.n_classes, str(source.path))
        metadata = {k: int(np.asarray(content[k])) for k in ("epoch", "global_step", "step") if k in content}
        return CachedEpoch(items, records, {**metadata, "output_kind": kind})

    cache = EvaluationCache(config.out_dir / "cache", settings)
    return _collect(config, sources, cache, compute, "predictions", str(root), "")
