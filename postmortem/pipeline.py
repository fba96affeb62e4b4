"""One report: evaluate -> analyze -> diagnose -> render, written atomically into the output folder."""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import __version__
from .config import ReportConfig
from .errors import ConfigError, InputError

if TYPE_CHECKING:
    from .diagnose import Verdict
    from .tracking import TrackedRun

__all__ = ["ReportResult", "write_report"]


@dataclass(frozen=True)
class ReportResult:
    """What was written, how long each stage took, the findings' titles (most important first) and the verdict
    (None on a torchrun rank that writes no report), and the tracker's run the report was attached to (--log-to)."""

    out_dir: Path
    files: tuple[Path, ...]
    n_epochs: int
    n_skipped: int
    seconds: float
    stage_seconds: dict[str, float]
    finding_titles: tuple[str, ...] = ()
    verdict: Verdict | None = None
    tracked: TrackedRun | None = None


def _class_names(config: ReportConfig, n_classes: int) -> tuple[str, ...]:
    """--class-names, else the label values; with --redact, 'class 1', 'class 2', ... in label order."""
    if config.redact:
        return tuple(f"class {i + 1}" for i in range(n_classes))
    return config.class_names if config.class_names is not None else tuple(str(i) for i in range(n_classes))


REDACTED_OPTIONS = ("--class-names",)


def _command_line(argv: list[str], redact: bool) -> str:
    """The command as typed; with --redact, the values of options that hold names are hidden."""
    shown = []
    for i, arg in enumerate(argv):
        if redact and i > 0 and argv[i - 1] in REDACTED_OPTIONS:
            arg = "<redacted>"
        elif redact and arg.startswith(tuple(f"{o}=" for o in REDACTED_OPTIONS)):
            arg = arg.split("=", 1)[0] + "=<redacted>"
        shown.append(shlex.quote(arg))
    return "postmortem " + " ".join(shown)


def _redacted(evaluation):
    """The evaluation with item ids replaced by 'item 1', 'item 2', ... in item order (the training subset's by
    'training item 1', ...)."""
    ids = np.array([f"item {i + 1}" for i in range(len(evaluation.items))])
    redacted = replace(evaluation, items=replace(evaluation.items, ids=ids))
    if evaluation.train is None:
        return redacted
    train_ids = np.array([f"training item {i + 1}" for i in range(len(evaluation.train.items))])
    return replace(redacted, train=replace(evaluation.train, items=replace(evaluation.train.items, ids=train_ids)))


def _provenance(config: ReportConfig, evaluation, argv: list[str] | None) -> list[tuple[str, str]]:
    rows = [("command", _command_line(argv if argv is not None else sys.argv[1:], config.redact)),
            ("postmortem", __version__), ("python", platform.python_version())]
    if evaluation.mode == "model":   # the installed version, without importing torch outside load/evaluate
        from importlib.metadata import version
        rows.append(("torch", version("torch")))
    rows += [("mode", evaluation.mode), ("validation data", evaluation.data_source),
             ("data fingerprint (sha256)", evaluation.data_fingerprint[:16] or "—"),
             ("outputs assumed", ", ".join(sorted({e.output_kind for e in evaluation.epochs}))),
             *([("weights evaluated", _weights_row(evaluation.weights))] if evaluation.weights is not None else []),
             ("class weights", ", ".join(f"{w:g}" for w in evaluation.class_weights)),
             ("ignore_index", str(config.ignore_index)),
             ("counted items", f"{len(evaluation.items)} (mask != 0 and label != ignore_index)"),
             *([("training subset", f"{evaluation.train.source} ({len(evaluation.train.items)} counted items, "
                                    f"fingerprint {evaluation.train.fingerprint[:16] or '—'})")]
               if evaluation.train is not None else []),
             ("evaluated / from cache", f"{sum(not e.from_cache for e in evaluation.epochs)} / "
                                        f"{sum(e.from_cache for e in evaluation.epochs)}")]
    return rows


def _compared_indices(config: ReportConfig, analysis) -> tuple[int | None, int | None]:
    """--compare FROM,TO as indices into the analysed epochs (None, None: the default comparison)."""
    if config.compare is None:
        return None, None
    numbers = [view.epoch for view in analysis.epochs]
    missing = [epoch for epoch in config.compare if epoch not in numbers]
    if missing:
        raise ConfigError(f"option 'compare': epoch {missing[0]} is not among the evaluated epochs "
                          f"({', '.join(str(n) for n in numbers)})")
    return numbers.index(config.compare[0]), numbers.index(config.compare[1])


def _mode_analysis(config: ReportConfig, evaluation, analysis, reconciliation, from_index: int | None,
                   to_index: int | None):
    """Train mode against eval mode at the two compared epochs, when there is a model to run and a reason to: a
    training subset (BatchNorm's statistics recomputed on it), or a training log whose validation loss is not the
    recomputed one (was it logged in train mode?); else None, and no model runs."""
    mismatch = reconciliation is not None and not reconciliation.agrees
    if evaluation.mode != "model" or (evaluation.train is None and not mismatch):
        return None
    from .analyze.modes import analyze_modes
    from .evaluate.mode_check import check_modes

    first = analysis.best_loss_index if from_index is None else from_index
    last = len(analysis.epochs) - 1 if to_index is None else to_index
    passes = check_modes(config, evaluation, (first, last))
    return analyze_modes(analysis.labels, analysis.groups, analysis.class_weights, analysis.records, passes,
                         first, last)


def _weights_row(weights) -> str:
    """Which weights were evaluated, and where the other kind (model or EMA) exists too."""
    names = {"model": "the model's own", "ema": "EMA"}
    other = (f"; {names[weights.other]} weights also in {weights.n_with_other} of {weights.n_checkpoints} checkpoints "
             f"(--weights {weights.other})" if weights.n_with_other else "")
    return f"{names[weights.used]} (--weights {weights.used}){other}"


def _write_atomically(files: dict[str, bytes], out_dir: Path) -> list[Path]:
    """Write every file to a temporary name first; rename only once all are complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, content in files.items():
            handle, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(handle, "wb") as stream:
                stream.write(content)
            os.chmod(tmp, 0o644)   # mkstemp makes 0600; a report is meant to be shared
            staged.append((tmp, out_dir / name))
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, target in staged:
        os.replace(tmp, target)
    return [target for _, target in staged]


def _cached_pdf(directory: Path, print_html: str, generated: str) -> bytes:
    """The PDF of this print HTML from OUT/cache/report-KEY.pdf when it was laid out before (weasyprint takes
    seconds), keyed by the HTML, the PDF code and weasyprint's version; else laid out now and stored there
    (replacing older ones: only the latest is worth keeping). A corrupt entry is laid out again.

    The key leaves out the `generated` stamp (the minute the report was written, in the page header): with it,
    every re-render a minute later laid the same report out again. The reused PDF keeps the date it was laid out."""
    import hashlib
    from importlib.metadata import version

    from .render import pdf

    key = hashlib.sha256(print_html.replace(generated, "").encode() + Path(pdf.__file__).read_bytes()
                         + version("weasyprint").encode())
    path = directory / f"report-{key.hexdigest()[:32]}.pdf"
    try:
        data = path.read_bytes()
        if data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]:
            return data
    except OSError:   # absent: laid out below
        pass
    data = pdf.pdf_bytes(print_html)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("report-*.pdf"):
        stale.unlink(missing_ok=True)
    _write_atomically({path.name: data}, directory)
    return data


class _StageClock:
    """Seconds spent per pipeline stage, for the summary line and the benchmarks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now
        return self.seconds[stage]


def write_report(config: ReportConfig, argv: list[str] | None = None,
                 announce: Callable[[str], None] = lambda message: None) -> ReportResult:
    """Run the whole pipeline for one run and write metrics.json, report.html, report.md and report.pdf.

    `announce` hears about the slow stages after evaluation (which has its own progress bar)."""
    started = time.perf_counter()
    if not config.run.is_dir():
        raise InputError(f"{config.run}: run directory not found")
    from .tracking import import_tracker, log_report
    tracker = None if config.log_to is None else import_tracker(config.log_to)   # missing: said before evaluating
    from .analyze.reconcile import reconcile_logged_loss
    from .analyze.run import analyze_run
    from .diagnose import DiagnosisConfig, diagnose
    from .evaluate.runner import evaluate_run
    from .render.figures import class_colours, render_figures
    from .render.html import render_html
    from .render.input import CheckpointRow, RenderInput, TrainLogComparison
    from .render.markdown import render_markdown
    from .render.metrics_json import metrics_bytes, metrics_document

    clock = _StageClock()
    evaluation = evaluate_run(config)
    if evaluation is None:   # a torchrun rank other than 0: it evaluated its share, rank 0 writes the report
        return ReportResult(config.out_dir, (), 0, 0, time.perf_counter() - started, {"evaluate": clock.lap("evaluate")})
    if config.redact:
        evaluation = _redacted(evaluation)
    clock.lap("evaluate")
    classes = _class_names(config, evaluation.n_classes)
    analysis = analyze_run(evaluation, classes)
    thresholds = DiagnosisConfig(**dict(config.diagnosis))
    from_index, to_index = _compared_indices(config, analysis)
    reconciliation = None if evaluation.train_log is None else \
        reconcile_logged_loss(evaluation, evaluation.train_log, tolerance=thresholds.logged_loss_tolerance,
                              reproduce_tolerance=thresholds.logged_loss_reproduction)
    modes = _mode_analysis(config, evaluation, analysis, reconciliation, from_index, to_index)
    clock.lap("analyze")
    diagnosis = diagnose(analysis, thresholds, reconciliation, from_index, to_index, modes=modes)
    clock.lap("diagnose")
    train_log = None if evaluation.train_log is None else TrainLogComparison(
        source=evaluation.train_log_source, table=evaluation.train_log, reconciliation=reconciliation,
        key="step" if evaluation.order_key in ("global_step", "step") else "epoch")
    inputs = RenderInput(
        run_name=config.run_name, generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), paper=config.paper,
        analysis=analysis, findings=diagnosis.findings, verdict=diagnosis.verdict, comparison=diagnosis.comparison,
        class_labels=classes,
        colours=tuple(class_colours(len(classes))), n_items=len(evaluation.items),
        checkpoints=tuple(CheckpointRow(e.checkpoint, e.epoch, e.sha256[:16], e.output_kind) for e in evaluation.epochs),
        provenance=tuple(_provenance(config, evaluation, argv)), skipped=tuple(evaluation.skipped),
        nonfinite=tuple(evaluation.nonfinite), notes=tuple(evaluation.notes), train_log=train_log,
        lr_events=diagnosis.lr_events, unread=tuple(evaluation.unread))
    announce("drawing figures")
    figures = render_figures(analysis, inputs.colours, classes, train_log, diagnosis.lr_events)
    clock.lap("figures")
    document = metrics_document(analysis, diagnosis, evaluation.skipped, thresholds.max_listed_items, evaluation.unread)
    files = {"metrics.json": metrics_bytes(document),
             "report.html": render_html(inputs, figures, for_print=False).encode(),
             "report.md": render_markdown(inputs).encode()}
    clock.lap("html")
    if not config.no_pdf:
        announce("laying out report.pdf")
        # The PDF shows the key epochs in full (weasyprint lays out ~1 ms per table cell); the HTML shows all.
        files["report.pdf"] = _cached_pdf(config.out_dir / "cache", render_html(inputs, figures, for_print=True),
                                          inputs.generated)
        clock.lap("pdf")
    written = _write_atomically(files, config.out_dir)
    clock.lap("write")
    tracked = None if tracker is None else log_report(config.log_to, tracker, tuple(written), diagnosis.verdict,
                                                      config.run_name, config.log_run, config.quiet)
    if tracked is not None:
        clock.lap("log")
    return ReportResult(config.out_dir, tuple(written), len(evaluation.epochs), len(evaluation.skipped),
                        time.perf_counter() - started, clock.seconds, tuple(f.title for f in diagnosis.findings),
                        diagnosis.verdict, tracked)
