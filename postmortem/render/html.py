"""HTML through jinja2: autoescaped, strict about undefined names, formatting done in filters."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["templates_dir", "make_environment", "render_template"]


def templates_dir() -> Path:
    """Templates ship inside the wheel as postmortem/templates; in a source checkout they are ../templates."""
    packaged = Path(__file__).resolve().parent.parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent.parent / "templates"


def _fmt(value: Any, digits: int = 4) -> str:
    """A number for people: fixed digits, '—' for undefined values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{100 * value:.{digits}f}%"


def _signed(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:+.{digits}f}"


def make_environment(autoescape: bool = True):
    """jinja2 environment over templates/: HTML-autoescaped unless asked (markdown escapes its own way)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(str(templates_dir())), undefined=StrictUndefined,
                      autoescape=autoescape, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=_fmt, pct=_pct, signed=_signed)
    return env


def render_template(name: str, **context: Any) -> str:
    return make_environment().get_template(name).render(**context)
