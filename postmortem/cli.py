"""Command line: `postmortem report RUN [options]`; one place turns errors into messages and exit codes."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .config import TRACKER_CHOICES, WEIGHT_CHOICES
from .errors import InputError, PostmortemError

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="postmortem", description=(
        "Re-evaluate every checkpoint of a training run on its validation set and explain, with evidence, "
        "why validation loss rose while accuracy held."))
    parser.add_argument("--version", action="version", version=f"postmortem {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="write report.html, report.pdf and metrics.json for a run",
                                 description="Every option may also be set in RUN/postmortem.toml; flags win.")
    report.add_argument("run", type=Path, help="the run directory")
    inputs = report.add_argument_group("inputs")
    inputs.add_argument("--checkpoints", metavar="DIR|FILE|GLOB", nargs="+", help="checkpoints: a folder, files or "
                        "globs, taken as given (default RUN/checkpoints, else RUN)")
    inputs.add_argument("--model", metavar="FILE.py:FUNC", help="builds the nn.Module (default RUN/postmortem_spec.py:build_model)")
    inputs.add_argument("--data", metavar="PATH|FILE.py:FUNC", help="validation set: .pt, .npz or a factory (default RUN/postmortem_spec.py:val_data)")
    inputs.add_argument("--forward", metavar="FILE.py:FUNC", help="forward(model, batch) -> (outputs, labels[, mask])")
    inputs.add_argument("--predictions", metavar="DIR", help="saved per-epoch outputs instead of checkpoints (no model needed)")
    inputs.add_argument("--train-data", metavar="PATH|FILE.py:FUNC", help="a training subset, evaluated like the "
                        "validation set (same forms as --data; default RUN/postmortem_spec.py:train_data when defined)")
    inputs.add_argument("--train-predictions", metavar="DIR", help="with --predictions: the training subset's saved "
                        "outputs, one file named as each --predictions file")
    inputs.add_argument("--outputs", choices=("auto", "logits", "log_probs", "probs"), help="what the model returns (default auto-detected)")
    inputs.add_argument("--class-names", metavar="A,B,C", help="class names in label order")
    inputs.add_argument("--class-weights", metavar="W1,W2,...", help="the loss's class weights")
    inputs.add_argument("--ignore-index", type=int, metavar="N", help="label value that never counts (default -100)")
    inputs.add_argument("--train-log", metavar="FILE", help="training log to overlay and check: CSV (epoch, train_loss, "
                        "val_loss, ...), Lightning metrics.csv or Hugging Face trainer_state.json")
    inputs.add_argument("--trust-checkpoints", action="store_true", default=None,
                        help="unpickle with their code the checkpoints that placeholders cannot represent "
                        "(only for files you made yourself)")
    inputs.add_argument("--weights", choices=WEIGHT_CHOICES, help="which weights of each checkpoint to evaluate: "
                        "the model's own (default) or its EMA copy (timm, Lightning, torchvision)")
    inputs.add_argument("--compare", metavar="FROM,TO", help="the two epochs the verdict compares, as numbered in "
                        "metrics.json (default: the lowest-loss epoch and the last one)")
    running = report.add_argument_group("running")
    running.add_argument("--device", metavar="cpu|cuda|mps", help="where forward passes run (default cpu)")
    running.add_argument("--batch-size", type=int, metavar="N", help="batch size for .pt/.npz data and Datasets (default 512)")
    running.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes for a Dataset (default 0)")
    output = report.add_argument_group("output")
    output.add_argument("--out", type=Path, metavar="DIR", help="output folder (default RUN/postmortem-report)")
    output.add_argument("--title", help="run name shown in the report (default the folder name)")
    output.add_argument("--no-pdf", action="store_true", default=None, help="skip report.pdf")
    output.add_argument("--paper", choices=("a4", "letter"), help="PDF page size (default a4)")
    output.add_argument("--redact", action="store_true", default=None,
                        help="replace class names and item ids by neutral labels, for sharing in public")
    output.add_argument("--quiet", action="store_true", default=None, help="no progress bar or summary")
    output.add_argument("--log-to", choices=TRACKER_CHOICES, help="attach report.html, report.pdf and metrics.json to "
                        "an MLflow or W&B run and tag it with the verdict (the package must be installed)")
    output.add_argument("--log-run", metavar="RUN_ID_OR_NAME", help="with --log-to: the run (default: the active "
                        "run, else a new run named after RUN)")
    return parser


def _run_report(args: argparse.Namespace, argv: list[str]) -> int:
    from .config import build_config, read_config_file
    from .pipeline import write_report

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "run")}
    config = build_config(args.run, read_config_file(args.run) if args.run.is_dir() else {}, flags)
    def announce(message: str) -> None:   # like the progress bar: only on a terminal, never with --quiet
        if not config.quiet and sys.stderr.isatty():
            print(f"postmortem: {message} ...", file=sys.stderr, flush=True)

    result = write_report(config, argv, announce)
    if not config.quiet and result.files:
        skipped = f", {result.n_skipped} skipped" if result.n_skipped else ""
        stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in result.stage_seconds.items())
        print(f"postmortem: {result.n_epochs} checkpoints{skipped}; wrote "
              + ", ".join(str(p) for p in result.files) + f" in {result.seconds:.1f} s ({stages})", file=sys.stderr)
        if result.verdict is not None:
            print(_verdict_line(result.verdict), file=sys.stderr)
            for sentence in (result.verdict.sentences.what_happened, result.verdict.sentences.model_or_else,
                             result.verdict.sentences.what_to_try):
                print(f"  {sentence}", file=sys.stderr)
        for title in result.finding_titles[:3]:
            print(f"  finding: {title}", file=sys.stderr)
        if result.tracked is not None:
            tracked = result.tracked
            print(f"postmortem: logged {', '.join(tracked.artifacts)} to {tracked.tracker} run {tracked.run_id} "
                  f"({tracked.location}); tags " + ", ".join(f"{k}={v}" for k, v in tracked.tags), file=sys.stderr)
    return EXIT_OK


def _verdict_line(verdict) -> str:
    """One line from the verdict object: status, primary cause and what it names, contributing causes."""
    if verdict.primary_cause is None:
        return f"postmortem: verdict: {verdict.status.value}, no primary cause"
    named = f" ({', '.join(verdict.classes)})" if verdict.classes else ""
    contributing = ", ".join(c.value for c in verdict.contributing_causes)
    return (f"postmortem: verdict: {verdict.status.value}, primary cause {verdict.primary_cause.value}{named}"
            + (f"; contributing: {contributing}" if contributing else ""))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0 (report written), 2 (unusable input) or 1 (internal error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return _run_report(args, argv)
    except InputError as exc:
        print(f"postmortem: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except PostmortemError as exc:
        print(f"postmortem: error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print("postmortem: interrupted; no report was written", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place an unexpected error becomes a message
        if os.environ.get("POSTMORTEM_DEBUG"):
            raise
        print(f"postmortem: internal error: {type(exc).__name__}: {exc} "
              "(set POSTMORTEM_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL
