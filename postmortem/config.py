"""Report options: one frozen object built from flags and RUN/postmortem.toml (flags win)."""
from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .errors import ConfigError

__all__ = ["ReportConfig", "OUTPUT_KINDS", "WEIGHT_CHOICES", "TRACKER_CHOICES", "CONFIG_FILE_NAME", "read_config_file", "build_config"]

OUTPUT_KINDS = ("auto", "logits", "log_probs", "probs")
WEIGHT_CHOICES = ("model", "ema")
PAPER_SIZES = ("a4", "letter")
CONFIG_FILE_NAME = "postmortem.toml"
# Options whose values name files: relative paths in postmortem.toml are relative to RUN.
PATH_OPTIONS = ("checkpoints", "model", "data", "forward", "predictions", "out", "train_log", "train_data",
                "train_predictions")


@dataclass(frozen=True)
class ReportConfig:
    """Everything one `postmortem report` needs to know; see the README's option table."""

    run: Path
    checkpoints: tuple[str, ...] | None = None     # folders, files or globs
    model: str | None = None
    data: str | None = None
    forward: str | None = None
    predictions: str | None = None
    train_data: str | None = None                   # a training subset, evaluated like the validation set
    train_predictions: str | None = None            # its saved outputs, one file per --predictions file
    outputs: str = "auto"
    class_names: tuple[str, ...] | None = None
    class_weights: tuple[float, ...] | None = None
    ignore_index: int = -100
    out: Path | None = None
    no_pdf: bool = False
    quiet: bool = False
    device: str = "cpu"
    batch_size: int = 512
    workers: int = 0
    trust_checkpoints: bool = False
    weights: str = "model"
    title: str | None = None
    train_log: str | None = None
    redact: bool = False
    paper: str = "a4"
    compare: tuple[int, int] | None = None              # the two epochs the verdict compares (default: best, last)
    diagnosis: tuple[tuple[str, float | int], ...] = ()   # DiagnosisConfig thresholds set in [diagnosis]
    log_to: str | None = None                           # an experiment tracker to attach the report to (tracking.py)
    log_run: str | None = None                          # its run: an id or name (default: the active run, or a new one)

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else self.run / "postmortem-report"

    @property
    def run_name(self) -> str:
        return self.title or self.run.resolve().name


OPTION_NAMES = tuple(f.name for f in fields(ReportConfig) if f.name not in ("run", "diagnosis"))


def _normalise_key(key: str) -> str:
    return key.strip().replace("-", "_")


def read_config_file(run: Path) -> dict[str, Any]:
    """Options from RUN/postmortem.toml ({} when absent), keys normalised, paths made relative to RUN."""
    path = run / CONFIG_FILE_NAME
    if not path.is_file():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable TOML file ({exc})") from exc
    # Imported here, not at the top: the diagnose package brings in the analyses and scipy (0.1 s), which
    # `postmortem --help` and a report without postmortem.toml need no sooner than their diagnosis stage.
    from .diagnose.config import DIAGNOSIS_TABLE

    options: dict[str, Any] = {}
    if DIAGNOSIS_TABLE in raw:
        options["diagnosis"] = _diagnosis_thresholds(path, raw.pop(DIAGNOSIS_TABLE))
    for key, value in raw.items():
        name = _normalise_key(key)
        if name not in OPTION_NAMES:
            close = difflib.get_close_matches(name, OPTION_NAMES, n=1)
            hint = f"; did you mean '{close[0].replace('_', '-')}'?" if close else ""
            raise ConfigError(f"{path}: unknown option '{key}'{hint}")
        if name in PATH_OPTIONS and isinstance(value, str) and value:
            value = _relative_to(run, value)
        elif name == "checkpoints" and isinstance(value, list):
            value = [_relative_to(run, item) if isinstance(item, str) and item else item for item in value]
        options[name] = value
    return options


def _diagnosis_thresholds(path: Path, table: Any) -> tuple[tuple[str, float | int], ...]:
    """The [diagnosis] table: DiagnosisConfig thresholds by name (dashes or underscores), each a number of its
    field's type (an integer field takes only integers)."""
    from .diagnose.config import DIAGNOSIS_TABLE, DiagnosisConfig   # as in read_config_file

    defaults = {f.name: getattr(DiagnosisConfig(), f.name) for f in fields(DiagnosisConfig)}
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{DIAGNOSIS_TABLE}] must be a table of thresholds, got {table!r}")
    thresholds = []
    for key, value in table.items():
        name = _normalise_key(key)
        if name not in defaults:
            close = difflib.get_close_matches(name, list(defaults), n=1)
            hint = f"; did you mean '{close[0].replace('_', '-')}'?" if close else ""
            raise ConfigError(f"{path}: unknown threshold '{key}' in [{DIAGNOSIS_TABLE}]{hint}")
        wanted = type(defaults[name])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (wanted is int and not isinstance(value, int)):
            raise ConfigError(f"{path}: [{DIAGNOSIS_TABLE}] threshold '{key}': expected "
                              f"{'an integer' if wanted is int else 'a number'}, got {value!r}")
        thresholds.append((name, wanted(value)))
    return tuple(thresholds)


def _relative_to(run: Path, value: str) -> str:
    """A path or FILE.py:FUNC from postmortem.toml, anchored at RUN; package.module:FUNC is left alone."""
    if ":" in value and ".py:" not in value:
        return value
    file_part, sep, func = value.partition(".py:")
    file_part = file_part + ".py" if sep else file_part
    anchored = file_part if Path(file_part).is_absolute() else str(run / file_part)
    return f"{anchored}:{func}" if sep else anchored


def _as_list(name: str, value: Any, convert) -> tuple | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"option '{name}': expected a comma-separated list, got {value!r}")
    try:
        result = tuple(convert(item.strip() if isinstance(item, str) else item) for item in items)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"option '{name}': cannot read {value!r} ({exc})") from exc
    if not result or (convert is str and any(not item for item in result)):
        raise ConfigError(f"option '{name}': expected a non-empty comma-separated list, got {value!r}")
    return result


BOOLEAN_OPTIONS = ("no_pdf", "quiet", "trust_checkpoints", "redact")
STRING_OPTIONS = ("model", "data", "forward", "predictions", "title", "train_log", "out", "device", "outputs", "weights",
                  "train_data", "train_predictions", "log_to", "log_run")
TRACKER_CHOICES = ("mlflow", "wandb")   # --log-to (tracking.TRACKERS names the package of each)


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def _integer(name: str, value: Any) -> int:
    """An integer option: an int, or a string of one (never a bool or a fractional number)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"option '{_dashed(name)}': expected an integer, got {value!r}")
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"option '{_dashed(name)}': expected an integer, got {value!r}") from exc


def _checkpoint_locations(value: Any) -> tuple[str, ...] | None:
    """--checkpoints: one folder, file or glob, or several (given one after another, or a TOML list)."""
    if value in (None, "", [], ()):
        return None
    items = [value] if isinstance(value, (str, Path)) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, (str, Path)) and str(item) for item in items):
        raise ConfigError(f"option 'checkpoints': expected a folder, file or glob, or a list of them, got {value!r}")
    return tuple(str(item) for item in items)


def build_config(run: Path, file_options: dict[str, Any], flag_options: dict[str, Any]) -> ReportConfig:
    """Merge postmortem.toml options with flags (flags win) and check every value once."""
    merged = {**file_options, **{k: v for k, v in flag_options.items() if v is not None}}
    outputs = str(merged.get("outputs", "auto"))
    if outputs not in OUTPUT_KINDS:
        raise ConfigError(f"option 'outputs': expected one of {', '.join(OUTPUT_KINDS)}, got {outputs!r}")
    weights = _as_list("class-weights", merged.get("class_weights"), float)
    if weights is not None and any(not (w >= 0) or w == float("inf") for w in weights):
        raise ConfigError(f"option 'class-weights': weights must be finite and >= 0, got {list(weights)}")
    names = _as_list("class-names", merged.get("class_names"), str)
    if names is not None and len(set(names)) != len(names):
        raise ConfigError(f"option 'class-names': names must be unique, got {list(names)}")
    if names is not None and weights is not None and len(names) != len(weights):
        raise ConfigError(f"options 'class-names' and 'class-weights' disagree: {len(names)} names, {len(weights)} weights")
    ignore_index = _integer("ignore_index", merged.get("ignore_index", -100))
    batch_size = _integer("batch_size", merged.get("batch_size", 512))
    workers = _integer("workers", merged.get("workers", 0))
    if workers < 0:
        raise ConfigError(f"option 'workers': expected 0 or more data-loader processes, got {workers}")
    for name in BOOLEAN_OPTIONS:
        if name in merged and not isinstance(merged[name], bool):
            raise ConfigError(f"option '{_dashed(name)}': expected true or false, got {merged[name]!r}")
    for name in STRING_OPTIONS:
        if merged.get(name) is not None and not isinstance(merged[name], (str, Path)):
            raise ConfigError(f"option '{_dashed(name)}': expected a string, got {merged[name]!r}")
    weights_choice = str(merged.get("weights", "model"))
    if weights_choice not in WEIGHT_CHOICES:
        raise ConfigError(f"option 'weights': expected one of {', '.join(WEIGHT_CHOICES)}, got {weights_choice!r}")
    paper = str(merged.get("paper", "a4")).lower()
    if paper not in PAPER_SIZES:
        raise ConfigError(f"option 'paper': expected one of {', '.join(PAPER_SIZES)}, got {paper!r}")
    if batch_size < 1:
        raise ConfigError(f"option 'batch-size': expected a positive integer, got {batch_size}")
    compare = _as_list("compare", merged.get("compare"), int)
    if compare is not None and len(compare) != 2:
        raise ConfigError(f"option 'compare': expected two epochs, FROM,TO, got {merged.get('compare')!r}")
    if merged.get("train_predictions") and not merged.get("predictions"):
        raise ConfigError("option 'train-predictions': the training subset's saved outputs go with --predictions; "
                          "with checkpoints, give the training subset itself as --train-data")
    if merged.get("train_data") and merged.get("predictions"):
        raise ConfigError("option 'train-data': with --predictions there is no model to evaluate it; give its saved "
                          "outputs as --train-predictions DIR")
    if merged.get("log_to") not in (None, "", *TRACKER_CHOICES):
        raise ConfigError(f"option 'log-to': expected one of {', '.join(TRACKER_CHOICES)}, got {merged['log_to']!r}")
    if merged.get("log_run") and not merged.get("log_to"):
        raise ConfigError("option 'log-run': names the tracker's run; give the tracker too, --log-to mlflow|wandb")
    out = merged.get("out")
    strings = {k: (str(merged[k]) if merged.get(k) not in (None, "") else None)
               for k in ("model", "data", "forward", "predictions", "title", "train_log", "train_data",
                         "train_predictions", "log_to", "log_run")}
    return ReportConfig(
        run=run,
        outputs=outputs,
        class_names=names,
        class_weights=weights,
        ignore_index=ignore_index,
        out=Path(out) if out else None,
        no_pdf=bool(merged.get("no_pdf", False)),
        quiet=bool(merged.get("quiet", False)),
        device=str(merged.get("device", "cpu")),
        batch_size=batch_size,
        workers=workers,
        trust_checkpoints=bool(merged.get("trust_checkpoints", False)),
        weights=weights_choice,
        checkpoints=_checkpoint_locations(merged.get("checkpoints")),
        redact=bool(merged.get("redact", False)),
        paper=paper,
        compare=compare,
        diagnosis=tuple(merged.get("diagnosis", ())),
        **strings,
    )
