"""One report: evaluate -> analyze -> diagnose -> render, written atomically into the output folder."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

import numpy as np

from . import __version__
from .config import ReportConfig
from .errors import InputError

if TYPE_CHECKING:
    from .diagnose import Verdict

__all__ = ["ReportResult", "write_report"]

T = TypeVar("T")


@dataclass(frozen=True)
class ReportResult:
    """What was written, how long each stage took, the findings' titles (most important first) and the verdict
    (None on a torchrun rank that writes no report)."""

    out_dir: Path
    files: tuple[Path, ...]
    n_epochs: int
    n_skipped: int
    seconds: float
    stage_seconds: dict[str, float]
    finding_titles: tuple[str, ...] = ()
    verdict: Verdict | None = None


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
    """The evaluation with item ids replaced by 'item 1', 'item 2', ... in item order."""
    ids = np.array([f"item {i + 1}" for i in range(len(evaluation.items))])
    return replace(evaluation, items=replace(evaluation.items, ids=ids))


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
             ("evaluated / from cache", f"{sum(not e.from_cache for e in evaluation.epochs)} / "
                                        f"{sum(e.from_cache for e in evaluation.epochs)}")]
    return rows


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


def _figures_key(evaluation, classes, colours, log_key: str) -> str:
    """A digest of everything the figures are drawn from: the records themselves, not just file names,
    plus the labels, colours, training log and the drawing code (so a changed figures.py redraws)."""
    import hashlib

    from .render import figures as figures_module

    digest = hashlib.sha256()
    digest.update(Path(figures_module.__file__).read_bytes())
    digest.update(json.dumps([__version__, list(classes), colours, log_key, evaluation.class_weights.tolist(),
                              [(e.checkpoint, e.epoch) for e in evaluation.epochs]]).encode())
    digest.update(evaluation.items.labels.tobytes())
    for epoch in evaluation.epochs:
        for values in epoch.records.arrays().values():
            digest.update(np.ascontiguousarray(values).tobytes())
    if evaluation.train_log is not None:
        digest.update(evaluation.train_log.to_csv(index=False).encode())
    return digest.hexdigest()


def _from_cache(directory: Path, prefix: str, key: str, suffix: str, make: Callable[[], bytes],
                read: Callable[[bytes], T]) -> T:
    """read() of OUT/cache/{prefix}-{key}{suffix} when that file exists and reads back, else of make()'s bytes,
    stored there first (replacing older {prefix}-*{suffix} files: only the latest drawing is worth keeping)."""
    path = directory / f"{prefix}-{key[:32]}{suffix}"
    try:
        return read(path.read_bytes())
    except (OSError, ValueError, TypeError):   # absent, or corrupt: made again
        pass
    data = make()
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f"{prefix}-*{suffix}"):
        stale.unlink(missing_ok=True)
    _write_atomically({path.name: data}, directory)
    return read(data)


def _cached_figures(directory: Path, key: str, draw: Callable[[], list]) -> list:
    """Figures from OUT/cache when the same inputs were drawn before (a re-render skips matplotlib), else drawn."""
    from .render.figures import Figure

    return _from_cache(directory, "figures", key, ".json", lambda: json.dumps([vars(f) for f in draw()]).encode(),
                       lambda data: [Figure(**entry) for entry in json.loads(data)])


def _cached_pdf(directory: Path, print_html: str) -> bytes:
    """The PDF of this exact print HTML from OUT/cache when it was laid out before (weasyprint takes seconds),
    keyed by the HTML, the PDF code and weasyprint's version; else laid out now."""
    import hashlib
    from importlib.metadata import version

    from .render import pdf

    def whole(data: bytes) -> bytes:
        if not (data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]):
            raise ValueError("not a whole PDF")
        return data

    key = hashlib.sha256(print_html.encode() + Path(pdf.__file__).read_bytes() + version("weasyprint").encode())
    return _from_cache(directory, "report", key.hexdigest(), ".pdf", lambda: pdf.pdf_bytes(print_html), whole)


def _drawing_processes() -> int:
    """Processes to draw the figures with: the cores this process may use, at most 4 (9 figures)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 4)


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
    from .analyze.reconcile import reconcile_logged_loss
    from .analyze.run import analyze_run
    from .diagnose import DiagnosisConfig, diagnose
    from .evaluate.runner import evaluate_run
    from .render.context import report_context
    from .render.figures import class_colours, render_figures
    from .render.html import render_template, templates_dir
    from .render.markdown import render_markdown
    from .render.metrics_json import metrics_document

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
    reconciliation = None if evaluation.train_log is None else \
        reconcile_logged_loss(evaluation, evaluation.train_log, tolerance=thresholds.logged_loss_tolerance)
    clock.lap("analyze")
    diagnosis = diagnose(analysis, thresholds, reconciliation)
    clock.lap("diagnose")
    colours = class_colours(len(classes))
    log_key = "step" if evaluation.order_key in ("global_step", "step") else "epoch"
    announce("drawing figures")
    figures = _cached_figures(config.out_dir / "cache", _figures_key(evaluation, classes, colours, log_key),
                              lambda: render_figures(analysis, colours, classes, evaluation.train_log, log_key,
                                                     processes=_drawing_processes()))
    clock.lap("figures")
    context = report_context(run_name=config.run_name, analysis=analysis, evaluation=evaluation,
                             diagnosis=diagnosis, figures=figures,
                             colours=colours, class_labels=classes, provenance=_provenance(config, evaluation, argv),
                             paper=config.paper, reconciliation=reconciliation)
    css = (templates_dir() / "report.css").read_text(encoding="utf-8")
    html = render_template("report.html.j2", css=css, for_print=False, **context)
    document = metrics_document(analysis, diagnosis, evaluation.skipped)
    files = {"metrics.json": json.dumps(document, indent=1).encode(), "report.html": html.encode(),
             "report.md": render_markdown(context).encode()}
    clock.lap("html")
    if not config.no_pdf:
        announce("laying out report.pdf")
        # The PDF shows the key epochs in full (weasyprint lays out ~1 ms per table cell); the HTML shows all.
        files["report.pdf"] = _cached_pdf(config.out_dir / "cache",
                                          render_template("report.html.j2", css=css, for_print=True, **context))
        clock.lap("pdf")
    written = _write_atomically(files, config.out_dir)
    clock.lap("write")
    return ReportResult(config.out_dir, tuple(written), len(evaluation.epochs), len(evaluation.skipped),
                        time.perf_counter() - started, clock.seconds, tuple(f.title for f in diagnosis.findings),
                        diagnosis.verdict)
