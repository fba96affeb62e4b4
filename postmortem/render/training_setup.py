"""The training setup as the report states it: the summary table, a row per epoch, and report.md's one line.

Plain text only (the templates escape it); what is absent is said to be absent ("not in the checkpoints").
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["training_setup_context", "training_setup_line"]

MODE_WORDS = {
    "coupled": "coupled: L2, added to the gradient (as SGD and Adam(weight_decay=…) apply it)",
    "decoupled": "decoupled: the weights shrink directly, apart from the gradient (as AdamW applies it)",
    "none": "none",
    "unknown": "mode unknown",
}
MODE_SHORT = {"coupled": "coupled L2", "decoupled": "decoupled", "none": "none", "unknown": "mode unknown"}
EVENT_WORDS = {"drop": "drop", "restart": "rise after a decline (restart)", "warmup": "warm-up"}
EVENT_COUNTS = {"drop": ("drop", "drops"), "restart": ("restart", "restarts"), "warmup": ("warm-up", "warm-ups")}


def _value(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _per_group(values: Sequence[float | None] | None) -> str:
    """One value per param group: 'v' (the same for all), or 'v1 · v2 · ...'."""
    if not values:
        return "—"
    if len(set(values)) == 1:
        return _value(values[0]) + (f" (all {len(values)} groups)" if len(values) > 1 else "")
    return " · ".join(_value(v) for v in values)


def _event_text(event, since: bool = False) -> str:
    """'drop between epochs 30 and 31: 0.1 → 0.01' (`since`: 'drop since epoch 30: ...', for the row of epoch 31)."""
    span = f"since epoch {event.from_epoch}" if since else f"between epochs {event.from_epoch} and {event.to_epoch}"
    return f"{EVENT_WORDS[event.kind.value]} {span}: {_per_group(event.lr_before)} → {_per_group(event.lr_after)}"


def _latest(setups: Sequence) -> Any:
    return next(s for s in reversed(setups) if s is not None)


def _optimizer_text(optimizer) -> str:
    if optimizer is None:
        return "no optimizer state saved"
    return f"{optimizer.kind or 'not known'} ({optimizer.kind_detail})"


def _hyper_parameters(optimizer) -> str:
    groups = optimizer.param_groups if optimizer else ()
    parts = [(name, [getattr(g, field) for g in groups]) for name, field in
             (("betas", "betas"), ("momentum", "momentum"), ("eps", "eps"))]
    shown = []
    for name, values in parts:
        if any(v is not None for v in values):
            text = " · ".join(sorted({f"({', '.join(_value(b) for b in v)})" if isinstance(v, tuple) else _value(v)
                                      for v in values}))
            shown.append(f"{name} {text}")
    return ", ".join(shown) or "—"


def _scheduler_text(scheduler, configured) -> str:
    named = configured.scheduler if configured is not None else None
    if scheduler is None:
        return "no scheduler state saved" + (f" (configured: {named!r} in {configured.source})" if named else "")
    text = f"{scheduler.kind or 'not known'} ({scheduler.kind_detail})"
    return text + (f"; configured as {named!r} in {configured.source}" if named else "")


def _configured_text(configured) -> str | None:
    if configured is None:
        return None
    names = (("optimizer", configured.optimizer), ("lr", configured.lr), ("weight decay", configured.weight_decay),
             ("momentum", configured.momentum), ("scheduler", configured.scheduler))
    return ", ".join(f"{name} {value if isinstance(value, str) else _value(value)}" for name, value in names
                     if value is not None)


def _lr_summary(series, events) -> str:
    """'0.01 at every checkpoint', or its first and last values with the events between them."""
    rates = [tuple(v for v in row if v == v) for row in series.rates]
    known = [(int(e), r) for e, r in zip(series.epochs, rates) if r]
    if not known:
        return "not saved"
    if len({r for _, r in known}) == 1:
        return f"{_per_group(known[0][1])} at every checkpoint that saved it ({len(known)} of {len(rates)})" \
            if len(known) < len(rates) else f"{_per_group(known[0][1])} at every checkpoint"
    text = f"{_per_group(known[0][1])} at epoch {known[0][0]}, {_per_group(known[-1][1])} at epoch {known[-1][0]}"
    if events:
        counts: dict[str, int] = {}
        for event in events:
            counts[event.kind.value] = counts.get(event.kind.value, 0) + 1
        text += "; " + ", ".join(f"{n} {EVENT_COUNTS[kind][n > 1]}" for kind, n in counts.items())
    return text


def training_setup_line(analysis, events: Sequence, where: str = "checkpoints") -> str:
    """report.md's one line: optimizer, weight decay and its mode, the learning rate, the scheduler."""
    setups = analysis.training_setups
    if not any(s is not None for s in setups):
        return f"not in the {where} (they hold no optimizer or scheduler state)"
    latest = _latest(setups)
    optimizer = latest.optimizer
    parts = []
    if optimizer is not None:
        inferred = " (inferred from its state)" if optimizer.kind_basis is not None and \
            optimizer.kind_basis.value == "inferred" else ""
        parts.append(f"{optimizer.kind or 'optimizer not known'}{inferred}")
        decays = [g.weight_decay for g in optimizer.param_groups]
        parts.append(f"weight decay {_per_group(decays) if decays else '—'} "
                     f"({MODE_SHORT[optimizer.weight_decay_mode.value]})")
    else:
        parts.append("no optimizer state")
    parts.append(f"LR {_lr_summary(analysis.learning_rates, events)}")
    parts.append(f"scheduler {latest.scheduler.kind or 'not known'}" if latest.scheduler else "no scheduler saved")
    return ", ".join(parts)


def training_setup_context(analysis, events: Sequence, where: str = "checkpoints") -> dict[str, Any]:
    """What the report's training-setup section reads: whether any checkpoint holds a setup, the summary rows (of
    the latest checkpoint that holds one), the notes, the events and one row per epoch."""
    setups = analysis.training_setups
    present = [s for s in setups if s is not None]
    line = training_setup_line(analysis, events, where)
    if not present:
        return {"present": False, "line": line, "where": where}
    latest = _latest(setups)
    kinds = {(s.optimizer.kind if s.optimizer else None, s.optimizer.weight_decay_mode.value if s.optimizer else None)
             for s in present}
    optimizer = latest.optimizer
    decays = [g.weight_decay for g in optimizer.param_groups] if optimizer else []
    summary = [
        ("optimizer", _optimizer_text(optimizer)
         + ("; it differs between checkpoints (see the table)" if len(kinds) > 1 else "")),
        ("weight decay", (f"{_per_group(decays) if decays else '—'}, {MODE_WORDS[optimizer.weight_decay_mode.value]}"
                          f"; known from: {optimizer.weight_decay_detail}") if optimizer else "—"),
        ("betas, momentum, eps", _hyper_parameters(optimizer)),
        ("learning rate", _lr_summary(analysis.learning_rates, events)),
        ("scheduler", _scheduler_text(latest.scheduler, latest.configured)),
        *([("configured", f"{_configured_text(latest.configured)} ({latest.configured.source})")]
          if latest.configured else []),
        ("read from", f"{', '.join(latest.sources)} ({len(present)} of {len(setups)} {where})"),
    ]
    last_index = {e.to_index: e for e in events}
    rows = []
    for index, (view, setup) in enumerate(zip(analysis.epochs, setups)):
        scheduler = setup.scheduler if setup is not None else None
        optimizer_here = setup.optimizer if setup is not None else None
        rows.append({
            "epoch": view.epoch, "checkpoint": view.checkpoint, "present": setup is not None,
            "lr": _per_group(setup.learning_rates) if setup is not None else "—",
            "weight_decay": _per_group([g.weight_decay for g in optimizer_here.param_groups])
            if optimizer_here and optimizer_here.param_groups else "—",
            "step": "—" if optimizer_here is None or optimizer_here.step is None else f"{optimizer_here.step:,}",
            "scheduler_lr": _per_group(scheduler.last_lr) if scheduler and scheduler.last_lr else "—",
            "event": _event_text(last_index[index], since=True) if index in last_index else "",
        })
    notes = list(dict.fromkeys(note for s in present for note in s.notes))
    return {"present": True, "line": line, "where": where, "summary": [{"name": n, "value": v} for n, v in summary],
            "rows": rows, "events": [_event_text(e) for e in events], "notes": notes}
