"""Train mode against eval mode, for the checkpoints the verdict compares: what the validation loss is with dropout
active and BatchNorm on batch statistics (as a loop that forgets model.eval() logs it), and what it is in eval mode
once BatchNorm's running statistics are recomputed on the training subset.

Only for models whose train mode differs (dropout with p > 0, BatchNorm tracking statistics, recurrent layers with
dropout between layers), in model mode, and only when a training log or a training subset is given (the two things
these passes are compared with); each pass's per-item records are cached like the evaluation's, so a re-render
runs no model. Train mode is random: MODE_PASSES passes with seeds 0, 1, ... (torch's global generator is left as
it was), whose spread says how far one logged pass may fall from their mean.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import ReportConfig
from .cache import CachedEpoch, EvaluationCache, derived_key, write_atomically
from .records import EpochRecords, HostOutputs, OutputsAccumulator

__all__ = ["ModePasses", "MODE_PASSES", "check_modes", "train_mode_layers"]

MODE_PASSES = 3


@dataclass(frozen=True)
class ModePasses:
    """One evaluated epoch's validation records in train mode (one per seeded pass; empty when its train mode does
    not differ), and in eval mode after recomputing BatchNorm statistics on the training subset (None without
    BatchNorm layers or a subset). `layers` names what differs, e.g. '2 Dropout (p 0.5), 1 BatchNorm1d'."""

    epoch_index: int
    layers: str
    train_mode: tuple[EpochRecords, ...]
    recalibrated: EpochRecords | None


def train_mode_layers(model: Any) -> tuple[str, bool]:
    """What behaves differently in train mode ('' when nothing does), and whether BatchNorm is among it."""
    import torch.nn as nn

    counts: dict[str, int] = {}
    has_batch_norm = False
    for module in model.modules():
        name = getattr(module, "original_name", type(module).__name__)   # TorchScript keeps the class name there
        p = getattr(module, "p", None)
        if isinstance(module, nn.modules.dropout._DropoutNd) or (name.endswith("Dropout") and p is not None):
            if p:
                counts[f"{name} (p {p:g})"] = counts.get(f"{name} (p {p:g})", 0) + 1
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) or name.startswith("BatchNorm"):
            if getattr(module, "track_running_stats", True):
                counts[name] = counts.get(name, 0) + 1
                has_batch_norm = True
        elif isinstance(module, nn.RNNBase) and module.dropout:
            counts[f"{name} (dropout {module.dropout:g})"] = counts.get(f"{name} (dropout {module.dropout:g})", 0) + 1
        elif isinstance(module, nn.MultiheadAttention) and module.dropout:
            counts[f"MultiheadAttention (dropout {module.dropout:g})"] = \
                counts.get(f"MultiheadAttention (dropout {module.dropout:g})", 0) + 1
    return ", ".join(f"{n} {name}" for name, n in counts.items()), has_batch_norm


def _recompute_batch_norm(model: Any, batches: list[Any], run: Callable[[list[Any]], None]) -> None:
    """BatchNorm's running statistics recomputed as a plain average over the training subset's batches, as
    torch.optim.swa_utils.update_bn does (reset, momentum None, one pass in train mode); update_bn itself takes a
    loader of model inputs, and these batches go through the user's forward()."""
    import torch.nn as nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
    model.train()
    run(batches)
    for module, momentum in zip(norms, momenta):
        module.momentum = momentum
    model.eval()


def _marker_path(directory: Path, sha: str, key: str) -> Path:
    return directory / f"modes-{sha[:32]}-{key[:16]}.json"


def _pass_caches(directory: Path, settings: str, train_settings: str | None) -> tuple[list[EvaluationCache],
                                                                                     EvaluationCache]:
    """The caches of the train-mode passes (one per seed) and of the recomputed-statistics pass: keys of their own,
    derived from the validation entries' (an entry's file name holds only the first characters of its key)."""
    caches = [EvaluationCache(directory, derived_key(settings, "train-mode", seed)) for seed in range(MODE_PASSES)]
    return caches, EvaluationCache(directory, derived_key(settings, "recalibrated", train_settings))


def check_modes(config: ReportConfig, evaluation, indices: tuple[int, ...]) -> tuple[ModePasses, ...]:
    """The mode passes of the epochs at `indices` (into evaluation.epochs): from the cache when every entry is there
    (nothing imported), else run now."""
    settings, train_settings = evaluation.cache_keys[0], (evaluation.cache_keys[1:] or (None,))[0]
    directory = config.out_dir / "cache"
    caches, recalibrated_cache = _pass_caches(directory, settings, train_settings)
    found = []
    for index in dict.fromkeys(indices):
        epoch = evaluation.epochs[index]
        marker = _read_marker(_marker_path(directory, epoch.sha256, settings))
        if marker is None:
            return _run_modes(config, evaluation, tuple(dict.fromkeys(indices)), settings, train_settings)
        passes = tuple(c.load(epoch.sha256) for c in caches) if marker["layers"] else ()
        recalibrated = recalibrated_cache.load(epoch.sha256) if marker["batch_norm"] and train_settings else None
        if any(p is None for p in passes) or (marker["batch_norm"] and train_settings and recalibrated is None):
            return _run_modes(config, evaluation, tuple(dict.fromkeys(indices)), settings, train_settings)
        found.append(ModePasses(index, marker["layers"], tuple(p.records for p in passes),
                                None if recalibrated is None else recalibrated.records))
    return tuple(found)


def _read_marker(path: Path) -> dict | None:
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
        return marker if isinstance(marker.get("layers"), str) and isinstance(marker.get("batch_norm"), bool) else None
    except (OSError, ValueError, AttributeError):
        return None


def _run_modes(config: ReportConfig, evaluation, indices: tuple[int, ...], settings: str,
               train_settings: str | None) -> tuple[ModePasses, ...]:
    """Build each checkpoint's model again and run its mode passes; store every pass in the cache."""
    import torch

    from ..load.checkpoint_reader import read_checkpoint
    from ..load.discovery import CheckpointFile
    from ..load.spec import DEFAULT_SPEC_FILE, spec_callable
    from .model_runner import prepare_model, run_checkpoint
    from .runner import read_dataset, training_subset_reference

    spec_file = config.run / DEFAULT_SPEC_FILE
    build_model = spec_callable(config.model, spec_file, "build_model", "model")
    forward = spec_callable(config.forward, spec_file, "forward", "forward")
    val = read_dataset(config, config.data, spec_file, "validation data", False)
    train_reference = training_subset_reference(config, spec_file) if train_settings else None
    train = read_dataset(config, train_reference, spec_file, "training subset", False) if train_reference else None
    directory = config.out_dir / "cache"
    caches, recalibrated_cache = _pass_caches(directory, settings, train_settings)

    def score(model: Any, batches: list[Any], source: str) -> CachedEpoch:
        accumulator = OutputsAccumulator(config.class_weights, config.ignore_index, source, store=HostOutputs())
        kind = run_checkpoint(model, batches, forward, config.outputs, accumulator)
        items, records = accumulator.finish(kind)
        return CachedEpoch(items, records, {"output_kind": kind})

    found = []
    for index in indices:
        epoch = evaluation.epochs[index]
        source = CheckpointFile(Path(epoch.path), _weights_path(Path(epoch.path)))
        loaded = read_checkpoint(source, weights=config.weights, trust=config.trust_checkpoints,
                                 map_location=config.device)
        model = prepare_model(loaded, source, build_model, config.device)
        layers, batch_norm = train_mode_layers(model)
        passes = []
        if layers:
            for seed, cache in enumerate(caches):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    model.train()
                    entry = score(model, val.batches, f"{val.source} (train mode)")
                cache.store(epoch.sha256, entry)
                passes.append(entry.records)
        recalibrated = None
        if batch_norm and train is not None:
            model = prepare_model(loaded, source, build_model, config.device)   # fresh statistics to recompute
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                _recompute_batch_norm(model, train.batches, lambda batches: run_checkpoint(
                    model, batches, forward, config.outputs,
                    OutputsAccumulator(config.class_weights, config.ignore_index, train.source)))
            entry = score(model, val.batches, f"{val.source} (BatchNorm recomputed)")
            recalibrated_cache.store(epoch.sha256, entry)
            recalibrated = entry.records
        marker = json.dumps({"layers": layers, "batch_norm": batch_norm}).encode()
        write_atomically(_marker_path(directory, epoch.sha256, settings), lambda stream: stream.write(marker))
        found.append(ModePasses(index, layers, tuple(passes), recalibrated))
    return tuple(found)


def _weights_path(path: Path) -> Path:
    """The file read for a checkpoint shown as `path` (a folder's single weights file, else the file itself)."""
    from ..load.discovery import weights_in_folder

    return (weights_in_folder(path) or path) if path.is_dir() else path
