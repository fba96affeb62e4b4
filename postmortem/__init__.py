"""postmortem: explain, with evidence, why validation loss rose while accuracy held.

Flow: load -> evaluate -> analyze -> diagnose -> render. `postmortem report RUN` on the command line, or:

    from postmortem import build_config, read_config_file, write_report
    config = build_config(run, read_config_file(run), {"class_weights": [1.0, 2.5]})
    result = write_report(config)          # result.files: metrics.json, report.html, report.md, report.pdf

In a notebook, `postmortem.report(run, class_weights=[1.0, 2.5])` does the same (without the PDF unless asked) and
returns a Report that shows itself inline, with .verdict, .metrics and .epochs (a pandas DataFrame).
"""
from __future__ import annotations

__version__ = "0.1.0"

from .callbacks.writer import save_predictions  # noqa: E402
from .config import ReportConfig, build_config, read_config_file  # noqa: E402
from .errors import (CacheError, CheckpointError, ConfigError, DataError, InputError,  # noqa: E402
                     NonFiniteOutputsError, PostmortemError, UnsafeCheckpointError, UserCodeError)
from .notebook import Report, report  # noqa: E402
from .pipeline import ReportResult, write_report  # noqa: E402

__all__ = [
    "__version__",
    "ReportConfig",
    "build_config",
    "read_config_file",
    "write_report",
    "ReportResult",
    "report",
    "Report",
    "save_predictions",
    "PostmortemError",
    "InputError",
    "ConfigError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "DataError",
    "NonFiniteOutputsError",
    "UserCodeError",
    "CacheError",
]
