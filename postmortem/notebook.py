"""The notebook API: `postmortem.report(run, **options)` writes the report and shows it inline.

    import postmortem
    result = postmortem.report("runs/exp3", class_weights=[1.0, 2.5])   # the last line of a cell shows it
    result.verdict["primary_cause"], result.epochs[["epoch", "loss", "accuracy"]]

A notebook cell displays `result` through `_repr_html_`: report.html itself in an <iframe srcdoc>, which keeps its
styles and script apart from the notebook's, and needs no server and no network (report.html is self-contained).
"""
from __future__ import annotations

import difflib
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import OPTION_NAMES, build_config, read_config_file
from .errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Report", "report", "epoch_rows", "IFRAME_HEIGHT_PX", "TABLE_FIELDS"]

IFRAME_HEIGHT_PX = 720   # the report scrolls inside the frame; a notebook output area has no height to take


@dataclass(frozen=True)
class Report:
    """A written report, read back: its folder and files, metrics.json as a dict, the verdict (metrics.json's
    `verdict`) and the per-epoch numbers as a pandas DataFrame (`epochs`, one row per evaluated epoch)."""

    out_dir: Path
    files: tuple[Path, ...]
    metrics: dict[str, Any] = field(repr=False)   # megabytes, for a large run: not in the repr
    html: str = field(repr=False)

    @property
    def verdict(self) -> dict[str, Any]:
        return self.metrics["verdict"]

    @property
    def epochs(self) -> pd.DataFrame:
        """metrics.json's per-epoch scalars (epoch, loss, accuracy, macro F1, temperature, scaled loss, ...) and
        `loss_change` from the previous epoch; null numbers are NaN. Built on each access: a DataFrame is mutable."""
        import pandas as pd   # only here: postmortem's import and a report need no pandas

        return pd.DataFrame(epoch_rows(self.metrics))

    def _repr_html_(self) -> str:
        primary = self.verdict.get("primary_cause")
        heading = (f"postmortem: {html.escape(self.verdict['status'])}, primary cause "
                   f"<b>{html.escape(primary)}</b>" if primary else
                   f"postmortem: {html.escape(self.verdict['status'])}, no primary cause")
        return (f'<div class="postmortem-report"><p>{heading} &middot; '
                f'{html.escape(self.verdict["sentences"]["what_happened"])}</p>'
                f'<iframe srcdoc="{html.escape(self.html, quote=True)}" title="postmortem report" '
                f'sandbox="allow-scripts" style="width: 100%; height: {IFRAME_HEIGHT_PX}px; border: 1px solid #ccc">'
                f'</iframe></div>')


# Per-epoch fields of metrics.json that hold a table when present (None otherwise): never columns.
TABLE_FIELDS = ("change_from_previous", "training_setup")


def epoch_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per epoch of metrics.json: the fields that are scalars in every epoch, in document order (tables,
    matrices and the training setup left out), and `loss_change` from the previous epoch (None for the first)."""
    epochs = metrics["epochs"]
    columns = [key for key in epochs[0] if key not in TABLE_FIELDS
               and not any(isinstance(entry.get(key), (dict, list)) for entry in epochs)]
    rows = []
    for entry in epochs:
        change = entry.get("change_from_previous")
        rows.append({**{key: entry.get(key) for key in columns},
                     "loss_change": None if change is None else change["loss_change"]})
    return rows


def report(run: str | os.PathLike, **options: Any) -> Report:
    """Write the report of `run` as `postmortem report RUN` does and return it, read back (see Report).

    `options` are the command line's options by their Python names (`class_weights=[1.0, 2.5]`, `out="..."`,
    `compare=(3, 9)`, `log_to="mlflow"`); RUN/postmortem.toml is read too and the arguments win. Unlike the
    command line, report.pdf is not written unless asked for (`no_pdf=False`, or `no-pdf = false` in
    postmortem.toml): a notebook shows the HTML, and laying out the PDF takes seconds."""
    run = Path(run)
    options = {name.replace("-", "_"): value for name, value in options.items()}
    for name in options:
        if name not in OPTION_NAMES:
            close = difflib.get_close_matches(name, OPTION_NAMES, n=1)
            raise ConfigError(f"postmortem.report: unknown option '{name}'"
                              + (f"; did you mean '{close[0]}'?" if close else ""))
    file_options = read_config_file(run) if run.is_dir() else {}
    if "no_pdf" not in options and "no_pdf" not in file_options:
        options["no_pdf"] = True
    from .pipeline import write_report

    result = write_report(build_config(run, file_options, options), argv=_as_argv(run, options))
    by_name = {path.name: path for path in result.files}
    return Report(out_dir=result.out_dir, files=result.files,
                  metrics=json.loads(by_name["metrics.json"].read_text(encoding="utf-8")),
                  html=by_name["report.html"].read_text(encoding="utf-8"))


def _as_argv(run: Path, options: dict[str, Any]) -> list[str]:
    """The command line this call stands for, for the report's provenance (a notebook's sys.argv is its kernel's)."""
    argv = ["report", str(run)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif name == "checkpoints" and isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(map(str, value))]
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv
