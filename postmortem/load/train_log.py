"""Training logs (--train-log): what the training loop itself logged, read into one plain DataFrame.

Three layouts are read, all into the same columns:
- a CSV with a header, one row per epoch or per logging step (your own loop's log);
- PyTorch Lightning's CSVLogger metrics.csv (epoch-level and step-level metrics on separate rows,
  names such as val_loss, train_loss_epoch, train_loss_step);
- a Hugging Face Trainer trainer_state.json: its log_history ('loss' every logging step,
  'eval_loss' at every evaluation; the closing summary with train_runtime is dropped).

The frame has one row per logged point, in training order, with columns
    epoch       float (Hugging Face logs fractional epochs: 1.5 is halfway through the second)
    step        float, NaN where the log has no step
    train_loss  float, NaN where not logged on that row
    val_loss    float, NaN where not logged on that row
and every other numeric column under its original name (val_acc, learning_rate, ...).
frame.attrs holds 'source' (the file), 'format' ('csv', 'lightning' or 'huggingface') and
'columns' (which original column became train_loss and val_loss).

Only reading happens here; comparing the logged validation loss with the recomputed one is
postmortem.analyze.reconcile.reconcile_logged_loss.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import InputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_train_log", "per_epoch", "FoundTrainLog", "find_train_log", "VAL_LOSS_NAMES", "TRAIN_LOSS_NAMES"]

# Recognised names, after lower-casing and turning '/', '-', ' ' and '.' into '_', by preference.
VAL_LOSS_NAMES = ("val_loss", "val_loss_epoch", "valid_loss", "validation_loss", "eval_loss", "loss_val",
                  "val_nll", "val_cross_entropy", "dev_loss")
TRAIN_LOSS_NAMES = ("train_loss", "train_loss_epoch", "training_loss", "loss_train", "train_nll", "loss")
EPOCH_NAMES = ("epoch", "epochs")
STEP_NAMES = ("step", "global_step", "steps", "iteration", "iter")


def _normalise(name: str) -> str:
    return re.sub(r"[/\-\s.]+", "_", str(name).strip().lower())


def _pick(columns: dict[str, str], names: tuple[str, ...]) -> str | None:
    """The original column whose normalised name comes first in `names`."""
    for name in names:
        if name in columns:
            return columns[name]
    return None


@dataclass(frozen=True)
class FoundTrainLog:
    """The training log to show: the frame (None when there is none), its file, and a note when one was
    found but could not be read (an automatically found log never stops the report)."""

    log: "pd.DataFrame | None" = None
    source: str | None = None
    note: str | None = None


def find_train_log(explicit: str | None, checkpoint_paths: Sequence[str] = ()) -> FoundTrainLog:
    """--train-log when given (an unreadable one is an InputError); else the loss history a Hugging Face
    Trainer logged in the newest checkpoint folder's trainer_state.json (`checkpoint_paths` in training order)."""
    if explicit:
        return FoundTrainLog(read_train_log(Path(explicit)), explicit)
    for path in reversed(checkpoint_paths):
        state_file = Path(path) / "trainer_state.json"
        if state_file.is_file():
            try:
                return FoundTrainLog(read_train_log(state_file), str(state_file))
            except InputError as exc:
                return FoundTrainLog(note=f"training log not shown: {exc}")
    return FoundTrainLog()


def read_train_log(path: Path) -> "pd.DataFrame":
    """Read a training log (CSV, Lightning metrics.csv or Hugging Face trainer_state.json); see the module doc.

    Raises InputError naming the file when it is missing, unreadable, or has no epoch/step column or
    no loss column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: training log not found")
    if path.suffix.lower() == ".json":
        rows, fmt = _trainer_state_rows(path), "huggingface"
        return _frame(rows, path, fmt)
    return _frame_from_csv(path)


def _trainer_state_rows(path: Path) -> list[dict[str, Any]]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a readable JSON training log ({exc})") from exc
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise InputError(f"{path}: not a Hugging Face trainer_state.json (no 'log_history' list); "
                         "a training log is a CSV with epoch and loss columns, or a trainer_state.json")
    rows = []
    for entry in history:
        if not isinstance(entry, dict) or "train_runtime" in entry:   # the closing whole-run summary
            continue
        row = {k: v for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "loss" in row:
            row["train_loss"] = row.pop("loss")
        if "eval_loss" in row:
            row["val_loss"] = row.pop("eval_loss")
        rows.append(row)
    return rows


def _frame_from_csv(path: Path) -> "pd.DataFrame":
    import pandas as pd

    try:
        try:
            raw = pd.read_csv(path, sep=None, engine="python")     # sniffs ',', ';' or tab
        except csv.Error:
            raw = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable CSV training log ({first})") from exc
    columns = {_normalise(c): c for c in raw.columns}
    epoch_col, step_col = _pick(columns, EPOCH_NAMES), _pick(columns, STEP_NAMES)
    val_col, train_col = _pick(columns, VAL_LOSS_NAMES), _pick(columns, TRAIN_LOSS_NAMES)
    if epoch_col is None and step_col is None:
        raise InputError(f"{path}: training log has no epoch or step column (columns: "
                         f"{', '.join(map(str, raw.columns[:12]))}); expected one named epoch or step")
    if val_col is None and train_col is None:
        raise InputError(f"{path}: training log has no loss column (columns: {', '.join(map(str, raw.columns[:12]))}); "
                         f"expected one of {', '.join(VAL_LOSS_NAMES[:5])} or {', '.join(TRAIN_LOSS_NAMES[:3])}")
    lightning = any(_normalise(c).endswith(("_epoch", "_step")) for c in raw.columns) and step_col is not None
    numeric = raw.apply(pd.to_numeric, errors="coerce")
    renamed = {epoch_col: "epoch", step_col: "step", val_col: "val_loss", train_col: "train_loss"}
    renamed = {k: v for k, v in renamed.items() if k is not None}
    frame = numeric.rename(columns=renamed)
    keep = [c for c in frame.columns if c in renamed.values() or frame[c].notna().any()]
    frame = frame[keep]
    if epoch_col is not None and frame["epoch"].notna().sum() == 0:
        raise InputError(f"{path}: training log column {epoch_col!r} holds no numbers")
    if lightning and epoch_col is not None:
        # Lightning writes epoch-level and step-level metrics of one epoch on separate rows: merge them.
        frame = frame.dropna(subset=["epoch"]).groupby("epoch", as_index=False, sort=True).last()
    rows = frame.to_dict("records")
    result = _frame(rows, path, "lightning" if lightning else "csv")
    result.attrs["columns"] = {"train_loss": train_col, "val_loss": val_col}
    return result


def _frame(rows: list[dict[str, Any]], path: Path, fmt: str) -> "pd.DataFrame":
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(rows)
    for column in ("epoch", "step", "train_loss", "val_loss"):
        if column not in frame.columns:
            frame[column] = np.nan
    frame = frame.astype({c: float for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])})
    if frame["val_loss"].notna().sum() == 0 and frame["train_loss"].notna().sum() == 0:
        raise InputError(f"{path}: training log has no loss values (no val_loss/eval_loss or train_loss/loss numbers)")
    if frame["epoch"].notna().sum() == 0 and frame["step"].notna().sum() == 0:
        raise InputError(f"{path}: training log has no epoch or step values")
    order = ["step", "epoch"] if frame["step"].notna().all() else ["epoch", "step"]
    frame = frame.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)
    first = ["epoch", "step", "train_loss", "val_loss"]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    frame.attrs.update({"source": str(path), "format": fmt,
                        "columns": {"train_loss": "loss" if fmt == "huggingface" else None,
                                    "val_loss": "eval_loss" if fmt == "huggingface" else None}})
    return frame


def per_epoch(log: "pd.DataFrame", key: str = "epoch") -> "pd.DataFrame":
    """One row per whole `key` value ('epoch' or 'step') that logged a validation loss: the last value
    logged there, with the train_loss logged last at or before it. Fractional epochs are left out."""
    import numpy as np
    import pandas as pd

    if key not in ("epoch", "step"):
        raise ValueError(f"key must be 'epoch' or 'step', got {key!r}")
    logged = log[log["val_loss"].notna() & log[key].notna()]
    logged = logged[np.isclose(logged[key], np.round(logged[key]))]
    if logged.empty:
        return pd.DataFrame({key: pd.Series(dtype="int64"), "val_loss": pd.Series(dtype=float),
                             "train_loss": pd.Series(dtype=float)})
    train = log[log["train_loss"].notna() & log[key].notna()]
    rows = []
    for value, group in logged.groupby(np.round(logged[key]).astype("int64"), sort=True):
        before = train[train[key] <= value + 1e-9]
        rows.append({key: int(value), "val_loss": float(group["val_loss"].iloc[-1]),
                     "train_loss": float(before["train_loss"].iloc[-1]) if len(before) else math.nan})
    return pd.DataFrame(rows)
