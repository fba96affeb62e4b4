"""`--log-to mlflow|wandb`: attach the written report to an experiment tracker's run, and tag the run with the verdict.

The tracker's package is imported before the evaluation starts (`import_tracker`), so a missing one is a one-line
error at once, not after minutes of forward passes; `log_report` runs once the files are written. postmortem
itself reaches no network: the tracker's package goes where its own settings say (MLflow's tracking URI, e.g. a
`file://` store; W&B's WANDB_MODE, e.g. `offline`, which postmortem leaves to the user).

The run: `--log-run` (MLflow: a run id, else the newest run of that name in the current experiment, else a new run
of that name; W&B: the id of a run to resume or create), else the run active in this process (a notebook's
`mlflow.start_run()` or `wandb.init()`), else a new run named after the report's run (its folder or --title).
A run postmortem starts, it also ends; an active one is left running.
"""
from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .config import TRACKER_CHOICES
from .errors import ConfigError

if TYPE_CHECKING:
    from .diagnose import Verdict

__all__ = ["TRACKERS", "LOGGED_FILES", "ARTIFACT_FOLDER", "TAG_PRIMARY_CAUSE", "TAG_STATUS", "NO_PRIMARY_CAUSE",
           "TrackedRun", "import_tracker", "log_report", "verdict_tags"]

TRACKERS = dict(zip(TRACKER_CHOICES, ("mlflow-skinny", "wandb")))   # --log-to value -> the package providing it
LOGGED_FILES = ("report.html", "report.pdf", "metrics.json")   # report.pdf when it was written
ARTIFACT_FOLDER = "postmortem"           # beside the run's own artifacts, not among them
TAG_PRIMARY_CAUSE = "postmortem.primary_cause"
TAG_STATUS = "postmortem.status"
NO_PRIMARY_CAUSE = "none"                # a tag is a string: metrics.json's null primary cause


@dataclass(frozen=True)
class TrackedRun:
    """Where the report went: the tracker, the run's id, the artifacts as the run names them, the tags set, and
    where the run keeps them (MLflow's artifact URI, W&B's run files folder)."""

    tracker: str
    run_id: str
    artifacts: tuple[str, ...]
    tags: tuple[tuple[str, str], ...]
    location: str


def import_tracker(name: str) -> ModuleType:
    """The tracker's module, imported now; a ConfigError naming the package to install when it is missing."""
    if name not in TRACKERS:
        raise ConfigError(f"option 'log-to': expected one of {', '.join(TRACKERS)}, got {name!r}")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"option 'log-to': {name} is not installed here ({exc.__class__.__name__}: {exc}); "
                          f"pip install {TRACKERS[name]} (or postmortem[tracking])") from exc


def verdict_tags(verdict: Verdict) -> tuple[tuple[str, str], ...]:
    """The tags a tracked run gets: the verdict's primary cause (NO_PRIMARY_CAUSE when it names none) and status."""
    cause = verdict.primary_cause.value if verdict.primary_cause is not None else NO_PRIMARY_CAUSE
    return ((TAG_PRIMARY_CAUSE, cause), (TAG_STATUS, verdict.status.value))


def log_report(name: str, module: ModuleType, files: tuple[Path, ...], verdict: Verdict, run_name: str,
               log_run: str | None, quiet: bool = False) -> TrackedRun:
    """Attach LOGGED_FILES among `files` to the tracker's run (see the module's docstring) and set verdict_tags.

    The report is written before this runs: a tracker's failure is one line saying so, and where the report is."""
    logged = tuple(path for path in files if path.name in LOGGED_FILES)
    tags = verdict_tags(verdict)
    try:
        if name == "mlflow":
            return _log_to_mlflow(module, logged, tags, run_name, log_run)
        return _log_to_wandb(module, logged, tags, run_name, log_run, quiet)
    except ConfigError:
        raise
    except Exception as exc:   # the tracker's own errors (a store it cannot reach, a run it cannot find)
        first_line = (str(exc).strip().splitlines() or [""])[0]
        where = logged[0].parent if logged else "the output folder"
        raise ConfigError(f"option 'log-to': {name} could not log the report ({type(exc).__name__}: {first_line}); "
                          f"the report is written in {where}") from exc


def _log_to_mlflow(mlflow: ModuleType, files: tuple[Path, ...], tags: tuple[tuple[str, str], ...], run_name: str,
                   log_run: str | None) -> TrackedRun:
    client = mlflow.MlflowClient()

    def log(run_id: str) -> TrackedRun:
        for path in files:
            client.log_artifact(run_id, str(path), ARTIFACT_FOLDER)
        for key, value in tags:
            client.set_tag(run_id, key, value)
        return TrackedRun("mlflow", run_id, tuple(f"{ARTIFACT_FOLDER}/{p.name}" for p in files), tags,
                          client.get_run(run_id).info.artifact_uri)

    active = mlflow.active_run()
    if log_run is not None:
        existing = _mlflow_run(mlflow, client, log_run)
        if existing is not None:
            return log(existing)
        with mlflow.start_run(run_name=log_run, nested=active is not None) as run:
            return log(run.info.run_id)
    if active is not None:
        return log(active.info.run_id)
    with mlflow.start_run(run_name=run_name) as run:
        return log(run.info.run_id)


def _mlflow_run(mlflow: ModuleType, client: Any, id_or_name: str) -> str | None:
    """The id of the run with this id, else of the newest run of this name in the current experiment, else None."""
    try:
        return client.get_run(id_or_name).info.run_id
    except mlflow.exceptions.MlflowException:   # no run has that id: look it up by name
        pass
    quoted = id_or_name.replace("\\", "\\\\").replace("'", "\\'")
    runs = mlflow.search_runs(filter_string=f"attributes.run_name = '{quoted}'", order_by=["attributes.start_time DESC"],
                              max_results=1, output_format="list")
    return runs[0].info.run_id if runs else None


def _log_to_wandb(wandb: ModuleType, files: tuple[Path, ...], tags: tuple[tuple[str, str], ...], run_name: str,
                  log_run: str | None, quiet: bool) -> TrackedRun:
    """The files are copied into the run's files folder (a later report replaces them in the output folder before an
    offline run is synced) and saved there; the tags go in the run's summary, and `postmortem:CAUSE` among its tags."""
    active = wandb.run
    if active is not None and log_run is not None and log_run != active.id:
        raise ConfigError(f"option 'log-run': a W&B run ({active.id}) is already active in this process; leave "
                          "--log-run out to log to it, or finish it first")
    run = active if active is not None else wandb.init(
        id=log_run, resume="allow" if log_run else None, name=None if log_run else run_name, job_type="postmortem",
        settings=wandb.Settings(console="off", silent=quiet))
    try:
        folder = Path(run.dir) / ARTIFACT_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copyfile(path, folder / path.name)
            run.save(str(folder / path.name), base_path=run.dir, policy="now")
        run.summary.update(dict(tags))
        cause = dict(tags)[TAG_PRIMARY_CAUSE]
        run.tags = tuple(t for t in (run.tags or ()) if not t.startswith("postmortem:")) + (f"postmortem:{cause}",)
        return TrackedRun("wandb", run.id, tuple(f"{ARTIFACT_FOLDER}/{p.name}" for p in files), tags, str(folder))
    finally:
        if active is None:
            run.finish()
