"""Evaluate every checkpoint of a run (or read saved predictions) into cached per-item records."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import ReportConfig
from ..errors import ConfigError, DataError, InputError, NonFiniteOutputsError, UserCodeError
from ..load.discovery import (ORDER_KEYS, CheckpointFile, UnreadFile, choose_order_key, discover_checkpoints,
                              file_sha256, name_number, order_checkpoints, unread_files)
from ..load.train_log import FoundTrainLog, find_train_log
from . import distributed
from .cache import CACHE_FORMAT, CachedEpoch, EvaluationCache, recall_data, remember_data
from .records import EpochRecords, HostOutputs, ItemTable, OutputsAccumulator, counted_rows, detect_output_kind

__all__ = ["EvaluatedEpoch", "Skipped", "NonFiniteEpoch", "WeightsUsed", "Evaluation", "evaluate_run"]

TWO_REDUCERS_MAX_BYTES = 64 * 1024 * 1024
AVAILABLE_WEIGHTS_KEY = "available_weights"   # per-checkpoint metadata: the kinds of weights the file holds


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
    """A checkpoint left out of the report, and the one-line reason (written to metrics.json 'skipped')."""

    checkpoint: str
    error: str
    epoch: int | None = None          # its order value when it could be read, else None


@dataclass(frozen=True)
class NonFiniteEpoch:
    """A checkpoint skipped because `n_nonfinite` of its `n_counted` items had NaN or inf outputs."""

    checkpoint: str
    epoch: int | None
    n_nonfinite: int
    n_counted: int


@dataclass(frozen=True)
class WeightsUsed:
    """Which weights were evaluated (--weights: 'model' or 'ema') and how many of the evaluated checkpoints
    also hold the other kind (timm's state_dict_ema, Lightning's EMA callbacks, torchvision's model_ema)."""

    used: str
    other: str
    n_with_other: int
    n_checkpoints: int

    @property
    def note(self) -> str | None:
        """The sentence for the report's notes, when the other kind exists."""
        if not self.n_with_other:
            return None
        names = {"model": "the model's own weights", "ema": "EMA weights"}
        held = "all" if self.n_with_other == self.n_checkpoints else f"{self.n_with_other} of"
        return (f"weights evaluated: {names[self.used]} (--weights {self.used}); {held} {self.n_checkpoints} "
                f"checkpoints also hold {names[self.other]}: --weights {self.other} evaluates those")


def _weights_used(chosen: str, metadata: list[dict[str, Any]]) -> WeightsUsed:
    other = "ema" if chosen == "model" else "model"
    n_with_other = sum(other in meta.get(AVAILABLE_WEIGHTS_KEY, ()) for meta in metadata)
    return WeightsUsed(chosen, other, n_with_other, len(metadata))


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
    order_key: str = "epoch"                    # where epoch numbers came from: epoch, global_step, step or name
    nonfinite: list[NonFiniteEpoch] = field(default_factory=list)
    train_log: Any = None                       # pandas DataFrame from load.train_log.read_train_log, or None
    train_log_source: str | None = None         # the file it was read from
    batch_counts: tuple[int, ...] = ()          # counted items per validation batch, in order
    weights: WeightsUsed | None = None          # model mode: which weights were evaluated, and whether others exist
    unread: list[UnreadFile] = field(default_factory=list)   # model mode: files of the checkpoint folders not read


def _progress(total: int, quiet: bool):
    """A per-checkpoint progress bar on a terminal; silent otherwise."""
    from tqdm import tqdm

    return tqdm(total=total, desc="evaluating", unit="ckpt", disable=quiet or not sys.stderr.isatty(),
                file=sys.stderr, leave=False)


def _settings_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_run(config: ReportConfig) -> Evaluation | None:
    """Evaluate the run named by `config`; one bad checkpoint is skipped and reported, never fatal.

    Fatal (InputError, exit 2): no checkpoints, a bad option, code in the user's spec that raises, an
    unreadable --train-log, and every checkpoint failing (one message when they all failed alike).
    Under torchrun, every rank evaluates its share and only rank 0 gets the Evaluation (others: None).
    """
    from threadpoolctl import threadpool_limits

    explicit_log = find_train_log(config.train_log) if config.train_log else None   # fails before evaluating
    # numpy's work here is element-wise; a multi-threaded OpenBLAS pool only spins against torch's threads
    # (measured: evaluation 1.5-2x slower on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        evaluation = _evaluate_predictions(config) if config.predictions else _evaluate_checkpoints(config)
    if evaluation is None:
        return None
    found = explicit_log or (find_train_log(None, [e.path for e in evaluation.epochs])
                             if evaluation.mode == "model" else FoundTrainLog())
    if found.note:
        evaluation.notes.append(found.note)
    unread = unread_files(config.checkpoints, config.run, _not_checkpoints(config)) if evaluation.mode == "model" else []
    return dataclasses.replace(evaluation, train_log=found.log, train_log_source=found.source, unread=unread)


def _provisional_epoch(source: CheckpointFile, metadata: dict[str, Any]) -> tuple[str, int | None]:
    """The order key and value one checkpoint would get on its own (for messages before ordering)."""
    for key in ORDER_KEYS:
        if key in metadata:
            return key, int(metadata[key])
    return "epoch", name_number(source.name)


def _nonfinite_error(exc: NonFiniteOutputsError, source: CheckpointFile, metadata: dict[str, Any]) -> NonFiniteOutputsError:
    key, value = _provisional_epoch(source, metadata)
    where = f"{key} {value}: " if value is not None else ""
    error = NonFiniteOutputsError(
        f"{source.path}: {where}{exc.n_nonfinite} of {exc.n_counted} counted items have NaN or inf outputs "
        "(diverged training, or an overflow in float16?); this checkpoint is left out",
        n_nonfinite=exc.n_nonfinite, n_counted=exc.n_counted, epoch=value)
    return error


def _collect(config: ReportConfig, sources: list[CheckpointFile], cache: EvaluationCache,
             compute: Callable[[CheckpointFile], CachedEpoch], mode: str, data_source: str,
             data_fingerprint: str, reducers: int = 1,
             content_hash: Callable[[CheckpointFile], str] | None = None) -> Evaluation:
    """Shared loop: cache look-up, compute on a miss, then consistency checks, ordering and duplicates.

    `reducers` threads turn outputs into records while the main thread runs the next checkpoint; `content_hash`
    gives a checkpoint's sha256 where the caller has it already (default: hash the file)."""
    rank, size = distributed.world()
    mine = distributed.shard(sources, rank, size) if size > 1 else sources
    outcomes = []
    with _progress(len(mine), config.quiet or rank != 0) as bar, ThreadPoolExecutor(max_workers=1) as reader, \
            ThreadPoolExecutor(max_workers=reducers) as reducer:
        # Overlap: the next checkpoint is read (hashed) from disk, and earlier ones' outputs are reduced to
        # records (numpy, which releases the GIL), while this one's forward passes run.
        hashes = reader.map(content_hash or _content_sha256, mine)
        in_flight: deque = deque()
        first_of_content: dict[str, tuple[str, Any]] = {}
        for source in mine:
            bar.set_postfix_str(source.name)
            sha = next(hashes)
            outcome = _same_content(source, first_of_content.get(sha)) or \
                _evaluate_one(source, sha, cache, compute, reducer)
            if sha:
                first_of_content.setdefault(sha, outcome)
            if outcome[0] == "fatal" and size == 1:
                raise outcome[1]
            in_flight.append(outcome)
            while len(in_flight) > reducers:
                outcomes.append(_settle(in_flight.popleft(), cache, size, bar))
        while in_flight:
            outcomes.append(_settle(in_flight.popleft(), cache, size, bar))
    if size > 1:
        outcomes = distributed.gather_to_main(outcomes, rank, size)
        if outcomes is None:
            return None
    done: list[tuple[CheckpointFile, CachedEpoch, str, bool]] = []
    skipped: list[Skipped] = []
    nonfinite: list[NonFiniteEpoch] = []
    for kind, value in outcomes:
        if kind == "fatal":
            raise value
        if kind == "nonfinite":
            nonfinite.append(value[0])
            skipped.append(value[1])
        elif kind == "skipped":
            skipped.append(value)
        else:
            done.append(value)
    done = _agreeing_class_count(done, skipped)
    if not done:
        raise InputError(_all_failed_message(skipped))
    ordered = order_checkpoints([(source, entry.metadata) for source, entry, _, _ in done])
    by_name = {source.name: (entry, sha, cached) for source, entry, sha, cached in done}
    epochs, seen_sha, seen_meta = [], {}, {}
    for source, epoch in ordered:
        entry, sha, cached = by_name[source.name]
        twin = _duplicate_of(entry, sha, seen_sha, seen_meta)
        if twin is not None:
            skipped.append(Skipped(source.name, f"{source.path}: {twin}; left out as a duplicate", epoch))
            continue
        seen_sha.setdefault(sha, source.name)
        seen_meta.setdefault(_order_signature(entry.metadata), []).append((source.name, entry))
        epochs.append(EvaluatedEpoch(source.name, str(source.path), sha, epoch,
                                     entry.metadata.get("output_kind", config.outputs), entry.records, cached))
    items = by_name[epochs[0].checkpoint][0].items
    for epoch in epochs[1:]:
        other = by_name[epoch.checkpoint][0].items
        if len(other.labels) != len(items.labels) or not np.array_equal(other.labels, items.labels):
            raise DataError(f"{epoch.path}: scores {len(other.labels)} items whose labels differ from the "
                            f"{len(items.labels)} items of {epochs[0].checkpoint}; every checkpoint must see "
                            "the same validation items in the same order (is the data or forward() random?)")
    n_classes = epochs[0].records.n_classes
    class_weights = np.ones(n_classes) if config.class_weights is None else np.asarray(config.class_weights, float)
    first_meta = by_name[epochs[0].checkpoint][0].metadata
    weights = _weights_used(config.weights, [by_name[e.checkpoint][0].metadata for e in epochs]) \
        if mode == "model" else None
    return Evaluation(items=items, epochs=epochs, skipped=skipped, n_classes=n_classes,
                      item_weights=class_weights[items.labels], class_weights=class_weights,
                      data_source=data_source, data_fingerprint=data_fingerprint, mode=mode,
                      notes=list(cache.problems) + ([weights.note] if weights and weights.note else []),
                      order_key=choose_order_key([by_name[e.checkpoint][0].metadata for e in epochs]),
                      nonfinite=nonfinite, batch_counts=tuple(int(n) for n in first_meta.get("batch_counts", ())),
                      weights=weights)


def _content_sha256(source: CheckpointFile) -> str:
    return file_sha256(source.weights) if source.weights.is_file() else ""


def _evaluate_one(source: CheckpointFile, sha: str, cache: EvaluationCache,
                  compute: Callable[[CheckpointFile], Callable[[], CachedEpoch]], reducer) -> tuple[str, Any]:
    """Start one checkpoint: a cache hit, or its forward passes now and its reduction on the `reducer` thread."""
    entry = cache.load(sha) if sha else None
    if entry is not None:
        return "ok", (source, entry, sha, True)
    outcome = _outcome(source, lambda: compute(source))
    if outcome[0] != "ok":
        return outcome
    return "pending", (source, reducer.submit(outcome[1]), sha, True)


def _same_content(source: CheckpointFile, first: tuple[str, Any] | None) -> tuple[str, Any] | None:
    """A byte-for-byte copy of a checkpoint already started in this run (timm's last.pth.tar, model_best.pth.tar)
    shares its evaluation instead of running its forward passes again (it is then left out as a duplicate);
    None when there is no such checkpoint, or it failed (the copy is tried on its own, for its own message)."""
    if first is None or first[0] not in ("ok", "pending"):
        return None
    if first[0] == "ok":
        _, entry, sha, cached = first[1]
        return "ok", (source, entry, sha, cached)
    _, future, sha, _ = first[1]
    return "pending", (source, future, sha, False)      # stored once, by the first


def _settle(outcome: tuple[str, Any], cache: EvaluationCache, size: int, bar) -> tuple[str, Any]:
    """Wait for a pending reduction and store it in the cache; a fatal error stops a one-process run at once.
    (The store stays on this thread: on a CPU run, writing from the reducer slows the forward passes.)"""
    if outcome[0] == "pending":
        source, future, sha, store = outcome[1]
        outcome = _outcome(source, future.result)
        if outcome[0] == "ok":
            entry = outcome[1]
            if sha and store:
                cache.store(sha, entry)
            outcome = "ok", (source, entry, sha, False)
    if outcome[0] == "fatal" and size == 1:
        raise outcome[1]
    bar.update(1)
    return outcome


def _outcome(source: CheckpointFile, step: Callable[[], Any]) -> tuple[str, Any]:
    """Run one step for a checkpoint and say how it went, never raising (other ranks may be waiting):
    ok (with the step's result), skipped, nonfinite or fatal."""
    try:
        return "ok", step()
    except (ConfigError, UserCodeError) as exc:
        return "fatal", exc
    except NonFiniteOutputsError as exc:
        return "nonfinite", (NonFiniteEpoch(source.name, exc.epoch, exc.n_nonfinite, exc.n_counted),
                             Skipped(source.name, str(exc), exc.epoch))
    except InputError as exc:
        return "skipped", Skipped(source.name, str(exc))
    except OSError as exc:   # a checkpoint unreadable on disk (permissions, I/O error)
        return "skipped", Skipped(source.name, f"{source.path}: cannot be read ({exc.strerror or exc})")


def _order_signature(metadata: dict[str, Any]) -> tuple:
    return tuple((key, metadata[key]) for key in ORDER_KEYS if key in metadata)


def _duplicate_of(entry: CachedEpoch, sha: str, seen_sha: dict, seen_meta: dict) -> str | None:
    """Why a checkpoint repeats one already kept (Lightning's last.ckpt beside epoch=N-step=M.ckpt), or None."""
    if sha and sha in seen_sha:
        return f"same content as {seen_sha[sha]}"
    signature = _order_signature(entry.metadata)
    if signature:
        for name, other in seen_meta.get(signature, []):
            if np.array_equal(other.records.nll, entry.records.nll) and np.array_equal(other.records.pred, entry.records.pred):
                stored = ", ".join(f"{k} {v}" for k, v in signature)
                return f"same {stored} and the same predictions as {name}"
    return None


def _agreeing_class_count(done: list, skipped: list[Skipped]) -> list:
    """Keep the checkpoints with the most common number of classes; skip the others, naming both counts."""
    counts: dict[int, list[str]] = {}
    for source, entry, _, _ in done:
        counts.setdefault(entry.records.n_classes, []).append(source.name)
    if len(counts) <= 1:
        return done
    keep = max(counts, key=lambda c: (len(counts[c]), -min(i for i, d in enumerate(done) if d[1].records.n_classes == c)))
    majority = counts[keep]
    examples = ", ".join(majority[:3]) + (", ..." if len(majority) > 3 else "")
    for source, entry, _, _ in done:
        if entry.records.n_classes != keep:
            skipped.append(Skipped(source.name, f"{source.path}: outputs have {entry.records.n_classes} classes, "
                                   f"but {len(majority)} other checkpoint(s) ({examples}) have {keep}; the "
                                   "checkpoints of one run must agree on the number of classes"))
    return [d for d in done if d[1].records.n_classes == keep]


def _all_failed_message(skipped: list[Skipped]) -> str:
    """One line when every checkpoint failed: the shared message when they all failed alike."""
    if not skipped:
        return "no checkpoints could be evaluated"
    errors = [s.error for s in skipped]
    if len(errors) == 1:
        return errors[0]
    alike = {s.error.replace(s.checkpoint, "\0") for s in skipped}
    if len(alike) == 1:
        return f"{errors[0]} (the same for all {len(errors)} checkpoints)"
    return f"all {len(skipped)} checkpoints failed; the first: {errors[0]}"


def _reduction(config: ReportConfig, source: CheckpointFile, accumulator: OutputsAccumulator,
               metadata: dict[str, Any], kind: str) -> Callable[[], CachedEpoch]:
    """The second step of one checkpoint: its collected outputs reduced to records (run on a reducer thread)."""
    def finish() -> CachedEpoch:
        try:
            items, records = accumulator.finish(kind)
        except NonFiniteOutputsError as exc:
            raise _nonfinite_error(exc, source, metadata) from exc
        _check_class_count(config, records.n_classes, str(source.path))
        return CachedEpoch(items, records, {**metadata, "output_kind": kind, "batch_counts": accumulator.batch_counts})
    return finish


def _check_class_count(config: ReportConfig, n_classes: int, where: str) -> None:
    if config.class_names is not None and len(config.class_names) != n_classes:
        raise DataError(f"{where}: outputs have {n_classes} classes but {len(config.class_names)} class names "
                        f"were given ({', '.join(config.class_names[:5])}{', ...' if len(config.class_names) > 5 else ''})")


# ----------------------------------------------------------------------------- model mode
def _model_settings_key(config: ReportConfig, data_fingerprint: str, model: str | None, forward: str | None) -> str:
    """What a model-mode cache entry depends on besides its checkpoint: the batches, the model's and forward's
    source (sha256 of their files) and the options that change the records."""
    return _settings_key(data=data_fingerprint, outputs=config.outputs, ignore_index=config.ignore_index,
                         weights=config.class_weights, model=model, forward=forward, checkpoint_weights=config.weights)


def _data_file_key(config: ReportConfig) -> str:
    """A data file by its bytes and how it is read: the same key, the same batches."""
    return _settings_key(data_file=file_sha256(Path(config.data)), batch_size=config.batch_size,
                         trust=config.trust_checkpoints)


def _not_checkpoints(config: ReportConfig) -> list[Path]:
    """The run's files postmortem reads as something else (data, spec, code, options, training log), and its
    output folder: never taken for checkpoints, nor listed as files not read."""
    from ..config import CONFIG_FILE_NAME
    from ..load.spec import DEFAULT_SPEC_FILE

    named = [config.data, config.train_log, config.model, config.forward]
    files = [Path(value.rsplit(":", 1)[0] if ".py:" in value else value) for value in named if value]
    return [config.out_dir, config.run / DEFAULT_SPEC_FILE, config.run / CONFIG_FILE_NAME] + \
        [path for path in files if path.is_file()]


def _checkpoint_sources(config: ReportConfig) -> list[CheckpointFile]:
    return discover_checkpoints(config.checkpoints, config.run, _not_checkpoints(config))


class _NotCached(Exception):
    """A checkpoint without a cache entry (the evaluation from the cache alone gives way to a full one)."""


def _evaluation_from_cache(config: ReportConfig) -> Evaluation | None:
    """The evaluation read from the cache alone, importing neither torch nor the user's code, when each input is
    named by its bytes and unchanged: the data given as a file whose batches' fingerprint an earlier evaluation
    kept (cache.remember_data; the data's source is then config.data, as load_validation_data names it), the model
    and forward read from .py files (hashed, not imported), and every checkpoint's entry present. None otherwise:
    then everything is read and run as usual (a re-render whose data comes from a factory such as val_data() runs
    it, and so imports torch, to learn whether the data changed)."""
    from ..load.data import names_data_file
    from ..load.spec import DEFAULT_SPEC_FILE, NeedsImport, source_sha256

    if distributed.world()[1] > 1 or not names_data_file(config.data) or not Path(config.data).is_file():
        return None
    spec_file = config.run / DEFAULT_SPEC_FILE
    try:
        model = source_sha256(config.model, spec_file, "build_model")
        forward = source_sha256(config.forward, spec_file, "forward")
        fingerprint = recall_data(config.out_dir / "cache", _data_file_key(config))
        sources = _checkpoint_sources(config) if fingerprint else []
        hashes = {source.weights: _content_sha256(source) for source in sources}
    except (NeedsImport, InputError, OSError):   # the full evaluation says what is wrong, where something is
        return None
    if fingerprint is None:
        return None
    cache = EvaluationCache(config.out_dir / "cache", _model_settings_key(config, fingerprint, model, forward))
    if not sources or not all(sha and cache.path_for(sha).is_file() for sha in hashes.values()):
        return None

    def not_cached(source: CheckpointFile) -> Callable[[], CachedEpoch]:
        raise _NotCached(source.name)

    try:
        return _collect(config, sources, cache, not_cached, "model", str(config.data), fingerprint,
                        content_hash=lambda source: hashes[source.weights])
    except _NotCached:   # an entry that could not be read
        return None


def _evaluate_checkpoints(config: ReportConfig) -> Evaluation:
    cached = _evaluation_from_cache(config)
    if cached is not None:
        return cached
    from ..load.checkpoint_reader import read_checkpoint
    from ..load.data import load_validation_data, names_data_file
    from ..load.spec import DEFAULT_SPEC_FILE, spec_callable
    from .device_reduce import DeviceOutputs, reduces_on_device
    from .model_runner import prepare_model, run_checkpoint, to_device

    _check_device(config.device)
    spec_file = config.run / DEFAULT_SPEC_FILE
    build_model = spec_callable(config.model, spec_file, "build_model", "model")
    forward = spec_callable(config.forward, spec_file, "forward", "forward")
    data = load_validation_data(config.data, config.run, spec_file, config.batch_size, trust=config.trust_checkpoints,
                                workers=config.workers)
    if names_data_file(config.data):   # for the next run's _evaluation_from_cache (written when it changes)
        data_key = _data_file_key(config)
        if recall_data(config.out_dir / "cache", data_key) != data.fingerprint:
            remember_data(config.out_dir / "cache", data_key, data.fingerprint)
    sources = _checkpoint_sources(config)
    batches = to_device(data.batches, config.device) if config.device != "cpu" else data.batches
    settings = _model_settings_key(config, data.fingerprint, getattr(build_model, "source_sha256", None),
                                   getattr(forward, "source_sha256", None))

    on_device = reduces_on_device(config.device)   # a GPU reduces its own outputs; only the records come back

    def compute(source: CheckpointFile) -> Callable[[], CachedEpoch]:
        loaded = read_checkpoint(source, weights=config.weights, trust=config.trust_checkpoints,
                                 map_location=config.device)
        model = prepare_model(loaded, source, build_model, config.device)
        accumulator = OutputsAccumulator(config.class_weights, config.ignore_index, data.source,
                                         store=DeviceOutputs() if on_device else HostOutputs())
        kind = run_checkpoint(model, batches, forward, config.outputs, accumulator, on_device)
        metadata = {**loaded.metadata, AVAILABLE_WEIGHTS_KEY: list(loaded.available)}
        del model, loaded   # the weights go now: the reduction only needs the outputs
        return _reduction(config, source, accumulator, metadata, kind)

    cache = EvaluationCache(config.out_dir / "cache", settings)
    return _collect(config, sources, cache, compute, "model", data.source, data.fingerprint)


def _check_device(device: str) -> None:
    """--device names a device this torch can use (checked once, before any checkpoint is read)."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"option 'device': {device!r} is not a torch device (cpu, cuda, cuda:1, mps)") from exc
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(kind, True):
        raise ConfigError(f"option 'device': {device!r} is not available to this torch {torch.__version__} "
                          "(checkpoints saved on a GPU load on the CPU: leave --device at cpu)")


# ----------------------------------------------------------------------------- predictions mode
def _evaluate_predictions(config: ReportConfig) -> Evaluation:
    from ..load.predictions import discover_prediction_files, read_prediction_file

    root = Path(config.predictions)
    sources = discover_prediction_files(root)
    settings = _settings_key(mode="predictions", outputs=config.outputs, ignore_index=config.ignore_index,
                             weights=config.class_weights)

    def compute(source: CheckpointFile) -> Callable[[], CachedEpoch]:
        content = read_prediction_file(source.path, config.trust_checkpoints)
        outputs = np.asarray(content["outputs"])
        if outputs.ndim < 2:
            raise DataError(f"{source.path}: 'outputs' of shape {outputs.shape}; expected (N, C) or (N, T, C)")
        kind = config.outputs
        if kind == "auto":   # decided on counted rows only: padded rows may hold anything
            sample = counted_rows(outputs, content["labels"], content.get("mask"), config.ignore_index)
            kind = detect_output_kind(sample[:256]) if len(sample) else "logits"
        accumulator = OutputsAccumulator(config.class_weights, config.ignore_index, str(source.path))
        ids = content.get("ids")
        metadata = {k: int(np.asarray(content[k])) for k in ORDER_KEYS if k in content and np.asarray(content[k]).size == 1}
        mask = content.get("mask")
        if mask is not None and np.asarray(mask).shape != np.asarray(content["labels"]).shape:
            raise DataError(f"{source.path}: 'mask' of shape {np.asarray(mask).shape} does not match 'labels' of "
                            f"shape {np.asarray(content['labels']).shape}")
        groups = content.get("groups")
        accumulator.add(outputs, content["labels"], mask, ids=None if ids is None else list(np.asarray(ids).tolist()),
                        groups=None if groups is None else np.asarray(groups))
        return _reduction(config, source, accumulator, metadata, kind)

    cache = EvaluationCache(config.out_dir / "cache", settings)
    # No forward passes to overlap here, so both cores reduce -- unless an epoch's file is over 64 MB: an epoch in
    # flight holds its outputs twice and a float64 copy, and 50 x 100k x 100 (40 MB files) peaks at 1.2 GB.
    reducers = 2 if sources[0].path.stat().st_size <= TWO_REDUCERS_MAX_BYTES else 1
    return _collect(config, sources, cache, compute, "predictions", str(root), "", reducers)
