"""Evaluate every checkpoint of a run (or read saved predictions) into cached per-item records."""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import ReportConfig
from ..errors import ConfigError, DataError, InputError, NonFiniteOutputsError, UserCodeError
from ..load.discovery import (ORDER_KEYS, CheckpointFile, UnreadFile, choose_order_key, discover_checkpoints,
                              file_sha256, name_number, order_checkpoints, unread_files)
from ..load.train_log import FoundTrainLog, find_train_log
from ..load.training_setup import TrainingSetup, TrainingSetupRead
from . import distributed
from .cache import CACHE_FORMAT, CachedEpoch, EvaluationCache, derived_key, recall_data, remember_data
from .records import (BatchSizes, EpochRecords, HostOutputs, ItemTable, OutputsAccumulator, counted_rows,
                      detect_output_kind)

__all__ = ["EvaluatedEpoch", "Skipped", "NonFiniteEpoch", "WeightsUsed", "TrainingSubset", "Evaluation", "evaluate_run"]

TWO_REDUCERS_MAX_BYTES = 64 * 1024 * 1024
# The datasets each checkpoint scores, in the order of their entries, as messages name their items.
DATASETS = ("validation", "training-subset")
AVAILABLE_WEIGHTS_KEY = "available_weights"   # per-checkpoint metadata: the kinds of weights the file holds
BATCHES_KEY = "batches"                       # per-checkpoint metadata: BatchSizes.as_metadata() of the data
SETUP_PROBLEM_KEY = "training_setup_problem"  # per-checkpoint metadata: why its training setup was left out


@dataclass(frozen=True)
class EvaluatedEpoch:
    """One checkpoint's evaluation: where it came from, its epoch number, per-item records, and the training setup
    its optimizer and scheduler state record (None when it holds none: load.training_setup)."""

    checkpoint: str
    path: str
    sha256: str
    epoch: int
    output_kind: str
    records: EpochRecords
    from_cache: bool
    training_setup: TrainingSetup | None = None


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
class TrainingSubset:
    """The training subset (--train-data, --train-predictions), evaluated by every checkpoint exactly as the
    validation set is (eval mode, the same loss settings): its items, and its records per epoch in the order of
    Evaluation.epochs."""

    items: ItemTable
    records: tuple[EpochRecords, ...]
    source: str
    fingerprint: str
    item_weights: np.ndarray


@dataclass(frozen=True)
class _TrainingInput:
    """Where the training subset comes from, before it is evaluated."""

    source: str
    fingerprint: str


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
    batch_sizes: BatchSizes = BatchSizes()      # the validation batches: counted items, masked positions, rows
    weights: WeightsUsed | None = None          # model mode: which weights were evaluated, and whether others exist
    train: TrainingSubset | None = None         # the training subset, when one is given
    cache_keys: tuple[str, ...] = ()            # the settings keys of the datasets' cache entries (validation first)

    @property
    def batch_counts(self) -> tuple[int, ...]:
        """Counted items per validation batch, in order."""
        return self.batch_sizes.counted
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


def _nonfinite_error(exc: NonFiniteOutputsError, source: CheckpointFile, metadata: dict[str, Any],
                     dataset: str) -> NonFiniteOutputsError:
    key, value = _provisional_epoch(source, metadata)
    where = f"{key} {value}: " if value is not None else ""
    error = NonFiniteOutputsError(
        f"{source.path}: {where}{exc.n_nonfinite} of {exc.n_counted} counted {'' if dataset == DATASETS[0] else dataset + ' '}items have NaN or inf outputs "
        "(diverged training, or an overflow in float16?); this checkpoint is left out",
        n_nonfinite=exc.n_nonfinite, n_counted=exc.n_counted, epoch=value)
    return error


class _State(enum.Enum):
    """Where one checkpoint's evaluation stands."""

    DONE = "done"              # every dataset's entry is at hand
    PENDING = "pending"        # the missing entries' reduction runs on a reducer thread
    SKIPPED = "skipped"        # left out of the report, with the reason
    NONFINITE = "nonfinite"    # left out: NaN or inf outputs
    FATAL = "fatal"            # stops the run (a bad option, the user's code raised)


@dataclass(frozen=True)
class _Outcome:
    """One checkpoint's evaluation: its entries, one per dataset (the validation set first, then the training subset
    when one is given), or why there are none. A PENDING outcome carries the future of the `missing` entries and
    whether it stores them (a byte-for-byte copy shares its twin's future, which its twin stores)."""

    source: CheckpointFile
    state: _State
    sha: str = ""
    entries: tuple[CachedEpoch | None, ...] = ()
    cached: bool = False
    future: Future | None = None
    missing: tuple[int, ...] = ()
    store: bool = True
    skipped: Skipped | None = None
    nonfinite: NonFiniteEpoch | None = None
    error: Exception | None = None


def _run_sources(config: ReportConfig, sources: list[CheckpointFile], caches: list[EvaluationCache],
                 compute: Callable[[CheckpointFile, tuple[int, ...]], Callable[[], tuple[CachedEpoch, ...]]],
                 reducers: int, content_hash: Callable[[CheckpointFile], str] | None) -> list[_Outcome] | None:
    """Every checkpoint's outcome (this rank's share, gathered on rank 0 under torchrun; None on other ranks)."""
    rank, size = distributed.world()
    mine = distributed.shard(sources, rank, size) if size > 1 else sources
    outcomes = []
    with _progress(len(mine), config.quiet or rank != 0) as bar, ThreadPoolExecutor(max_workers=1) as reader, \
            ThreadPoolExecutor(max_workers=reducers) as reducer:
        # Overlap: the next checkpoint is read (hashed) from disk, and earlier ones' outputs are reduced to
        # records (numpy, which releases the GIL), while this one's forward passes run.
        hashes = reader.map(content_hash or _content_sha256, mine)
        in_flight: deque = deque()
        first_of_content: dict[str, _Outcome] = {}
        for source in mine:
            bar.set_postfix_str(source.name)
            sha = next(hashes)
            outcome = _same_content(source, first_of_content.get(sha)) or \
                _evaluate_one(source, sha, caches, compute, reducer)
            if sha:
                first_of_content.setdefault(sha, outcome)
            if outcome.state is _State.FATAL and size == 1:
                raise outcome.error
            in_flight.append(outcome)
            while len(in_flight) > reducers:
                outcomes.append(_settle(in_flight.popleft(), caches, size, bar))
        while in_flight:
            outcomes.append(_settle(in_flight.popleft(), caches, size, bar))
    return distributed.gather_to_main(outcomes, rank, size) if size > 1 else outcomes


def _collect(config: ReportConfig, sources: list[CheckpointFile], caches: list[EvaluationCache],
             compute: Callable[[CheckpointFile, tuple[int, ...]], Callable[[], tuple[CachedEpoch, ...]]], mode: str,
             data_source: str, data_fingerprint: str, reducers: int = 1,
             content_hash: Callable[[CheckpointFile], str] | None = None,
             train: _TrainingInput | None = None) -> Evaluation | None:
    """Shared loop: cache look-up, compute on a miss, then consistency checks, ordering and duplicates.

    `caches` hold one dataset each: the validation set's first, the training subset's second when `train` names
    one. `reducers` threads turn outputs into records while the main thread runs the next checkpoint;
    `content_hash` gives a checkpoint's sha256 where the caller has it already (default: hash the file)."""
    outcomes = _run_sources(config, sources, caches, compute, reducers, content_hash)
    if outcomes is None:
        return None
    done: list[_Outcome] = []
    skipped: list[Skipped] = []
    nonfinite: list[NonFiniteEpoch] = []
    for outcome in outcomes:
        if outcome.state is _State.FATAL:
            raise outcome.error
        if outcome.state is _State.NONFINITE:
            nonfinite.append(outcome.nonfinite)
        if outcome.skipped is not None:
            skipped.append(outcome.skipped)
        if outcome.state is _State.DONE:
            done.append(outcome)
    done = _agreeing_class_count(done, skipped)
    if not done:
        raise InputError(_all_failed_message(skipped))
    ordered = order_checkpoints([(o.source, o.entries[0].metadata) for o in done])
    by_name = {o.source.name: o for o in done}
    epochs, kept, seen_sha, seen_meta = [], [], {}, {}
    for source, epoch in ordered:
        outcome = by_name[source.name]
        entry = outcome.entries[0]
        twin = _duplicate_of(entry, outcome.sha, seen_sha, seen_meta)
        if twin is not None:
            skipped.append(Skipped(source.name, f"{source.path}: {twin}; left out as a duplicate", epoch))
            continue
        seen_sha.setdefault(outcome.sha, source.name)
        seen_meta.setdefault(_order_signature(entry.metadata), []).append((source.name, entry))
        kept.append(outcome)
        epochs.append(EvaluatedEpoch(source.name, str(source.path), outcome.sha, epoch,
                                     entry.metadata.get("output_kind", config.outputs), entry.records, outcome.cached,
                                     entry.training_setup))
    items = kept[0].entries[0].items
    for epoch, outcome in zip(epochs[1:], kept[1:]):
        _check_same_items(epoch.path, outcome.entries[0].items, items, epochs[0].checkpoint, "validation")
    n_classes = epochs[0].records.n_classes
    class_weights = np.ones(n_classes) if config.class_weights is None else np.asarray(config.class_weights, float)
    first_meta = kept[0].entries[0].metadata
    weights = _weights_used(config.weights, [o.entries[0].metadata for o in kept]) if mode == "model" else None
    setup_problems = _setup_problems([o.entries[0].metadata for o in kept])
    return Evaluation(items=items, epochs=epochs, skipped=skipped, n_classes=n_classes,
                      item_weights=class_weights[items.labels], class_weights=class_weights,
                      data_source=data_source, data_fingerprint=data_fingerprint, mode=mode,
                      notes=[p for cache in caches for p in cache.problems]
                      + ([weights.note] if weights and weights.note else []) + setup_problems,
                      order_key=choose_order_key([o.entries[0].metadata for o in kept]),
                      nonfinite=nonfinite, batch_sizes=BatchSizes.from_metadata(first_meta.get(BATCHES_KEY)),
                      weights=weights, train=_training_subset(train, kept, epochs, class_weights),
                      cache_keys=tuple(cache.settings_key for cache in caches))


def _check_same_items(path: str, other: ItemTable, items: ItemTable, first: str, which: str) -> None:
    """Every checkpoint must score the same items, labelled alike, in the same order."""
    if len(other.labels) != len(items.labels) or not np.array_equal(other.labels, items.labels):
        raise DataError(f"{path}: scores {len(other.labels)} {which} items whose labels differ from the "
                        f"{len(items.labels)} items of {first}; every checkpoint must see "
                        "the same items in the same order (is the data or forward() random?)")


def _training_subset(train: _TrainingInput | None, kept: list[_Outcome], epochs: list[EvaluatedEpoch],
                     class_weights: np.ndarray) -> TrainingSubset | None:
    """The training subset's items and its records per kept epoch, in training order."""
    if train is None:
        return None
    items = kept[0].entries[1].items
    for epoch, outcome in zip(epochs[1:], kept[1:]):
        _check_same_items(epoch.path, outcome.entries[1].items, items, epochs[0].checkpoint, "training-subset")
    return TrainingSubset(items=items, records=tuple(o.entries[1].records for o in kept), source=train.source,
                          fingerprint=train.fingerprint, item_weights=class_weights[items.labels])


def _setup_problems(metadata: list[dict[str, Any]]) -> list[str]:
    """The notes for training setups left out as unreadable: each line, or one line when all were alike."""
    problems = [meta[SETUP_PROBLEM_KEY] for meta in metadata if meta.get(SETUP_PROBLEM_KEY)]
    if len(problems) > 1 and len({p.split(": ", 1)[-1] for p in problems}) == 1:
        return [f"{problems[0]} (the same for {len(problems)} checkpoints)"]
    return problems


def _content_sha256(source: CheckpointFile) -> str:
    return file_sha256(source.weights) if source.weights.is_file() else ""


def _evaluate_one(source: CheckpointFile, sha: str, caches: list[EvaluationCache],
                  compute: Callable[[CheckpointFile, tuple[int, ...]], Callable[[], tuple[CachedEpoch, ...]]],
                  reducer) -> _Outcome:
    """Start one checkpoint: every dataset's entry from the cache, or the forward passes of the missing ones now
    and their reduction on the `reducer` thread."""
    entries = tuple(cache.load(sha) if sha else None for cache in caches)
    missing = tuple(i for i, entry in enumerate(entries) if entry is None)
    if not missing:
        return _Outcome(source, _State.DONE, sha, entries, cached=True)
    started = _attempt(source, lambda: compute(source, missing))
    if started.state is not _State.DONE:
        return started
    return _Outcome(source, _State.PENDING, sha, entries, future=reducer.submit(started.entries[0]), missing=missing)


def _same_content(source: CheckpointFile, first: _Outcome | None) -> _Outcome | None:
    """A byte-for-byte copy of a checkpoint already started in this run (timm's last.pth.tar, model_best.pth.tar)
    shares its evaluation instead of running its forward passes again (it is then left out as a duplicate);
    None when there is no such checkpoint, or it failed (the copy is tried on its own, for its own message)."""
    if first is None or first.state not in (_State.DONE, _State.PENDING):
        return None
    return dataclasses.replace(first, source=source, store=False)     # a pending future is stored once, by the first


def _settle(outcome: _Outcome, caches: list[EvaluationCache], size: int, bar) -> _Outcome:
    """Wait for a pending reduction and store its entries in their caches; a fatal error stops a one-process run at
    once. (The store stays on this thread: on a CPU run, writing from the reducer slows the forward passes.)"""
    if outcome.state is _State.PENDING:
        reduced = _attempt(outcome.source, outcome.future.result)
        if reduced.state is _State.DONE:
            entries = list(outcome.entries)
            for index, entry in zip(outcome.missing, reduced.entries[0]):
                entries[index] = entry
                if outcome.sha and outcome.store:
                    caches[index].store(outcome.sha, entry)
            reduced = _Outcome(outcome.source, _State.DONE, outcome.sha, tuple(entries))
        outcome = reduced
    if outcome.state is _State.FATAL and size == 1:
        raise outcome.error
    bar.update(1)
    return outcome


def _attempt(source: CheckpointFile, step: Callable[[], Any]) -> _Outcome:
    """Run one step for a checkpoint and say how it went, never raising (other ranks may be waiting): DONE with
    the step's result as the only entry, SKIPPED, NONFINITE or FATAL."""
    try:
        return _Outcome(source, _State.DONE, entries=(step(),))
    except (ConfigError, UserCodeError) as exc:
        return _Outcome(source, _State.FATAL, error=exc)
    except NonFiniteOutputsError as exc:
        return _Outcome(source, _State.NONFINITE, nonfinite=NonFiniteEpoch(source.name, exc.epoch, exc.n_nonfinite,
                                                                           exc.n_counted),
                        skipped=Skipped(source.name, str(exc), exc.epoch))
    except InputError as exc:
        return _Outcome(source, _State.SKIPPED, skipped=Skipped(source.name, str(exc)))
    except OSError as exc:   # a checkpoint unreadable on disk (permissions, I/O error)
        return _Outcome(source, _State.SKIPPED,
                        skipped=Skipped(source.name, f"{source.path}: cannot be read ({exc.strerror or exc})"))


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


def _agreeing_class_count(done: list[_Outcome], skipped: list[Skipped]) -> list[_Outcome]:
    """Keep the checkpoints with the most common number of classes; skip the others, naming both counts."""
    def classes(outcome: _Outcome) -> int:
        return outcome.entries[0].records.n_classes

    counts: dict[int, list[str]] = {}
    for outcome in done:
        counts.setdefault(classes(outcome), []).append(outcome.source.name)
    if len(counts) <= 1:
        return done
    keep = max(counts, key=lambda c: (len(counts[c]), -min(i for i, d in enumerate(done) if classes(d) == c)))
    majority = counts[keep]
    examples = ", ".join(majority[:3]) + (", ..." if len(majority) > 3 else "")
    for outcome in done:
        if classes(outcome) != keep:
            skipped.append(Skipped(outcome.source.name, f"{outcome.source.path}: outputs have {classes(outcome)} "
                                   f"classes, but {len(majority)} other checkpoint(s) ({examples}) have {keep}; the "
                                   "checkpoints of one run must agree on the number of classes"))
    return [d for d in done if classes(d) == keep]


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


def _reduction(config: ReportConfig, source: CheckpointFile, scored: list[tuple[OutputsAccumulator, str]],
               metadata: dict[str, Any], datasets: tuple[str, ...],
               setup: TrainingSetupRead) -> Callable[[], tuple[CachedEpoch, ...]]:
    """The second step of one checkpoint: each dataset's collected outputs (with their output kind) reduced to
    records, on a reducer thread; every entry keeps the checkpoint's training setup."""
    def finish() -> tuple[CachedEpoch, ...]:
        entries = []
        for (accumulator, kind), dataset in zip(scored, datasets):
            try:
                items, records = accumulator.finish(kind)
            except NonFiniteOutputsError as exc:
                raise _nonfinite_error(exc, source, metadata, dataset) from exc
            _check_class_count(config, records.n_classes, str(source.path))
            entries.append(CachedEpoch(items, records, {**metadata, "output_kind": kind,
                                                        BATCHES_KEY: accumulator.batch_sizes.as_metadata(),
                                                        **({SETUP_PROBLEM_KEY: setup.problem} if setup.problem else {})},
                                       setup.setup))
        return tuple(entries)
    return finish


def _check_class_count(config: ReportConfig, n_classes: int, where: str) -> None:
    if config.class_names is not None and len(config.class_names) != n_classes:
        raise DataError(f"{where}: outputs have {n_classes} classes but {len(config.class_names)} class names "
                        f"were given ({', '.join(config.class_names[:5])}{', ...' if len(config.class_names) > 5 else ''})")


# ----------------------------------------------------------------------------- model mode
def _model_settings_key(config: ReportConfig, data_fingerprint: str, model: str | None, forward: str | None,
                        inputs_hashed: bool) -> str:
    """What a model-mode cache entry depends on besides its checkpoint: the batches, the model's and forward's
    source (sha256 of their files), the options that change the records, and whether the entry holds the items'
    input hashes (with a training subset); without one the key is what it always was."""
    parts = dict(data=data_fingerprint, outputs=config.outputs, ignore_index=config.ignore_index,
                 weights=config.class_weights, model=model, forward=forward, checkpoint_weights=config.weights)
    return _settings_key(**parts, **({"inputs_hashed": True} if inputs_hashed else {}))


def _data_file_key(config: ReportConfig, data_file: str) -> str:
    """A data file by its bytes and how it is read: the same key, the same batches."""
    return _settings_key(data_file=file_sha256(Path(data_file)), batch_size=config.batch_size,
                         trust=config.trust_checkpoints)


def training_subset_reference(config: ReportConfig, spec_file: Path) -> str | None:
    """--train-data, else RUN/postmortem_spec.py:train_data when the spec defines it, else None (no subset)."""
    from ..load.spec import spec_reference

    return spec_reference(config.train_data, spec_file, "train_data")


def _train_settings_key(settings: str, train_fingerprint: str) -> str:
    """A training-subset entry depends on the validation entry's settings and on the subset's batches."""
    return derived_key(settings, "training subset", train_fingerprint)


def _not_checkpoints(config: ReportConfig) -> list[Path]:
    """The run's files postmortem reads as something else (data, training subset, spec, code, options, training log),
    and its
    output folder: never taken for checkpoints, nor listed as files not read."""
    from ..config import CONFIG_FILE_NAME
    from ..load.spec import DEFAULT_SPEC_FILE

    named = [config.data, config.train_data, config.train_log, config.model, config.forward]
    files = [Path(value.rsplit(":", 1)[0] if ".py:" in value else value) for value in named if value]
    return [config.out_dir, config.run / DEFAULT_SPEC_FILE, config.run / CONFIG_FILE_NAME] + \
        [path for path in files if path.is_file()]


def _checkpoint_sources(config: ReportConfig) -> list[CheckpointFile]:
    return discover_checkpoints(config.checkpoints, config.run, _not_checkpoints(config))


class _NotCached(Exception):
    """A checkpoint without a cache entry (the evaluation from the cache alone gives way to a full one)."""


def _evaluation_from_cache(config: ReportConfig) -> Evaluation | None:
    """The evaluation read from the cache alone, importing neither torch nor the user's code, when each input is
    named by its bytes and unchanged: the data (and the training subset, when one is given) as files whose batches'
    fingerprints an earlier evaluation kept (cache.remember_data; the data's source is then the file's name, as
    load_validation_data names it), the model and forward read from .py files (hashed, not imported), and every
    checkpoint's entries present. None otherwise: then everything is read and run as usual (a re-render whose data
    comes from a factory such as val_data() runs it, and so imports torch, to learn whether the data changed)."""
    from ..load.data import names_data_file
    from ..load.spec import DEFAULT_SPEC_FILE, NeedsImport, source_sha256

    spec_file = config.run / DEFAULT_SPEC_FILE
    if distributed.world()[1] > 1:
        return None
    try:
        train_file = training_subset_reference(config, spec_file)
        data_files = (config.data,) + ((train_file,) if train_file else ())
        if not all(names_data_file(f) and Path(f).is_file() for f in data_files):
            return None
        model = source_sha256(config.model, spec_file, "build_model")
        forward = source_sha256(config.forward, spec_file, "forward")
        fingerprints = [recall_data(config.out_dir / "cache", _data_file_key(config, f)) for f in data_files]
        sources = _checkpoint_sources(config) if all(fingerprints) else []
        hashes = {source.weights: _content_sha256(source) for source in sources}
    except (NeedsImport, InputError, OSError):   # the full evaluation says what is wrong, where something is
        return None
    if not all(fingerprints):
        return None
    settings = _model_settings_key(config, fingerprints[0], model, forward, bool(train_file))
    caches = [EvaluationCache(config.out_dir / "cache", settings)]
    train = None
    if train_file:
        caches.append(EvaluationCache(config.out_dir / "cache", _train_settings_key(settings, fingerprints[1])))
        train = _TrainingInput(train_file, fingerprints[1])
    if not sources or not all(sha and cache.path_for(sha).is_file() for sha in hashes.values() for cache in caches):
        return None

    def not_cached(source: CheckpointFile, wanted: tuple[int, ...]) -> Callable[[], tuple[CachedEpoch, ...]]:
        raise _NotCached(source.name)

    try:
        return _collect(config, sources, caches, not_cached, "model", str(config.data), fingerprints[0],
                        content_hash=lambda source: hashes[source.weights], train=train)
    except _NotCached:   # an entry that could not be read
        return None


@dataclass(frozen=True)
class _Dataset:
    """One dataset every checkpoint scores: its batches (on the device), where they came from, their fingerprint,
    and, when its items' inputs are hashed (with a training subset: the leakage check), one slot per batch."""

    batches: list[Any]
    source: str
    fingerprint: str
    input_hashes: list | None = None


def read_dataset(config: ReportConfig, reference: str | None, spec_file: Path, what: str,
                  hash_inputs: bool) -> _Dataset:
    """The validation set (reference None: --data's default) or the training subset, read once; a data file's
    fingerprint is kept for the next run's _evaluation_from_cache (written when it changes)."""
    from ..load.data import load_validation_data, names_data_file
    from .model_runner import to_device

    data = load_validation_data(reference, config.run, spec_file, config.batch_size, trust=config.trust_checkpoints,
                                workers=config.workers, what=what)
    if names_data_file(reference):
        data_key = _data_file_key(config, reference)
        if recall_data(config.out_dir / "cache", data_key) != data.fingerprint:
            remember_data(config.out_dir / "cache", data_key, data.fingerprint)
    batches = to_device(data.batches, config.device) if config.device != "cpu" else data.batches
    return _Dataset(batches, data.source, data.fingerprint, [None] * len(batches) if hash_inputs else None)


def _evaluate_checkpoints(config: ReportConfig) -> Evaluation:
    cached = _evaluation_from_cache(config)
    if cached is not None:
        return cached
    from ..load.checkpoint_reader import read_checkpoint
    from ..load.spec import DEFAULT_SPEC_FILE, spec_callable
    from .device_reduce import DeviceOutputs, reduces_on_device
    from .model_runner import prepare_model, run_checkpoint

    _check_device(config.device)
    spec_file = config.run / DEFAULT_SPEC_FILE
    build_model = spec_callable(config.model, spec_file, "build_model", "model")
    forward = spec_callable(config.forward, spec_file, "forward", "forward")
    train_reference = training_subset_reference(config, spec_file)
    hashed = train_reference is not None       # the leakage check compares the two sets' inputs
    datasets = [read_dataset(config, config.data, spec_file, "validation data", hashed)]
    if train_reference is not None:
        datasets.append(read_dataset(config, train_reference, spec_file, "training subset", hashed))
    sources = _checkpoint_sources(config)
    settings = _model_settings_key(config, datasets[0].fingerprint, getattr(build_model, "source_sha256", None),
                                   getattr(forward, "source_sha256", None), hashed)

    on_device = reduces_on_device(config.device)   # a GPU reduces its own outputs; only the records come back

    def compute(source: CheckpointFile, wanted: tuple[int, ...]) -> Callable[[], tuple[CachedEpoch, ...]]:
        loaded = read_checkpoint(source, weights=config.weights, trust=config.trust_checkpoints,
                                 map_location=config.device)
        model = prepare_model(loaded, source, build_model, config.device)
        scored = []
        for index in wanted:
            accumulator = OutputsAccumulator(config.class_weights, config.ignore_index, datasets[index].source,
                                             store=DeviceOutputs() if on_device else HostOutputs())
            kind = run_checkpoint(model, datasets[index].batches, forward, config.outputs, accumulator, on_device,
                                  datasets[index].input_hashes)
            scored.append((accumulator, kind))
        metadata = {**loaded.metadata, AVAILABLE_WEIGHTS_KEY: list(loaded.available)}
        setup = TrainingSetupRead(loaded.training_setup, loaded.training_setup_problem)
        del model, loaded   # the weights go now: the reduction only needs the outputs
        return _reduction(config, source, scored, metadata, tuple(DATASETS[i] for i in wanted), setup)

    caches = [EvaluationCache(config.out_dir / "cache", settings)]
    train = None
    if len(datasets) > 1:
        caches.append(EvaluationCache(config.out_dir / "cache", _train_settings_key(settings, datasets[1].fingerprint)))
        train = _TrainingInput(datasets[1].source, datasets[1].fingerprint)
    return _collect(config, sources, caches, compute, "model", datasets[0].source, datasets[0].fingerprint, train=train)


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
    from ..load.training_setup import predictions_training_setup

    root = Path(config.predictions)
    sources = discover_prediction_files(root)
    train_root = Path(config.train_predictions) if config.train_predictions else None
    if train_root is not None and not train_root.is_dir():
        raise InputError(f"{train_root}: training-subset predictions directory not found")
    settings = _settings_key(mode="predictions", outputs=config.outputs, ignore_index=config.ignore_index,
                             weights=config.class_weights)

    def files(source: CheckpointFile) -> list[Path]:
        """The epoch's validation file, and its training-subset twin (the same name under --train-predictions)."""
        return [source.path] + ([] if train_root is None else [train_root / source.path.name])

    def compute(source: CheckpointFile, wanted: tuple[int, ...]) -> Callable[[], tuple[CachedEpoch, ...]]:
        scored, metadata, setup = [], {}, TrainingSetupRead()
        for index in wanted:
            path = files(source)[index]
            if not path.is_file():
                raise InputError(f"{path}: no training-subset predictions file for {source.path.name} (each "
                                 f"--predictions file needs its twin of the same name in {train_root})")
            content = read_prediction_file(path, config.trust_checkpoints)
            accumulator, kind = _predictions_accumulator(config, path, content)
            scored.append((accumulator, kind))
            if index == 0:
                metadata = {k: int(np.asarray(content[k])) for k in ORDER_KEYS
                            if k in content and np.asarray(content[k]).size == 1}
                setup = predictions_training_setup(content, path)
        return _reduction(config, source, scored, metadata, tuple(DATASETS[i] for i in wanted), setup)

    def content_hash(source: CheckpointFile) -> str:
        """The file's sha256; with a training subset, of both files' (an entry is stale when either changed)."""
        hashes = [file_sha256(path) if path.is_file() else "" for path in files(source)]
        return hashes[0] if len(hashes) == 1 else hashlib.sha256("".join(hashes).encode()).hexdigest()

    caches = [EvaluationCache(config.out_dir / "cache", settings)]
    train = None
    if train_root is not None:
        caches.append(EvaluationCache(config.out_dir / "cache", _train_settings_key(settings, str(train_root))))
        train = _TrainingInput(str(train_root), "")
    # No forward passes to overlap here, so both cores reduce -- unless an epoch's file is over 64 MB: an epoch in
    # flight holds its outputs twice and a float64 copy, and 50 x 100k x 100 (40 MB files) peaks at 1.2 GB.
    reducers = 2 if sources[0].path.stat().st_size <= TWO_REDUCERS_MAX_BYTES else 1
    return _collect(config, sources, caches, compute, "predictions", str(root), "", reducers,
                    content_hash=content_hash, train=train)


def _predictions_accumulator(config: ReportConfig, path: Path, content: dict[str, Any]) -> tuple[OutputsAccumulator, str]:
    """One predictions file's items in an accumulator, and its output kind (auto: decided on counted rows only,
    since padded rows may hold anything)."""
    outputs = np.asarray(content["outputs"])
    if outputs.ndim < 2:
        raise DataError(f"{path}: 'outputs' of shape {outputs.shape}; expected (N, C) or (N, T, C)")
    kind = config.outputs
    if kind == "auto":
        sample = counted_rows(outputs, content["labels"], content.get("mask"), config.ignore_index, limit=256)
        kind = detect_output_kind(sample) if len(sample) else "logits"
    mask = content.get("mask")
    if mask is not None and np.asarray(mask).shape != np.asarray(content["labels"]).shape:
        raise DataError(f"{path}: 'mask' of shape {np.asarray(mask).shape} does not match 'labels' of "
                        f"shape {np.asarray(content['labels']).shape}")
    accumulator = OutputsAccumulator(config.class_weights, config.ignore_index, str(path))
    ids, groups = content.get("ids"), content.get("groups")
    accumulator.add(outputs, content["labels"], mask, ids=None if ids is None else list(np.asarray(ids).tolist()),
                    groups=None if groups is None else np.asarray(groups), owned=True)
    return accumulator, kind
