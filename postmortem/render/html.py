"""HTML through jinja2: autoescaped, strict about undefined names, formatting done in filters."""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["templates_dir", "make_environment", "render_template", "render_html", "json_island", "page_script"]

# What the page may load: nothing but its own inline styles, data: images and the one inline script whose
# hash is stated (so neither a class name nor anything else can add a script or fetch from the network).
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {script}; "
       "base-uri 'none'; form-action 'none'")
# Characters that must not appear raw inside <script>: '<' could close it ('</script>') or open a comment,
# '>' and '&' for good measure, U+2028/9 end lines in older JavaScript. JSON's \\u escapes keep them inert.
JSON_ISLAND_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


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


def _position(index: int, count: int) -> str:
    """Where epoch `index` of `count` sits along the slider, as a CSS percentage."""
    return f"{100 * index / max(count - 1, 1):.3f}%"


def json_island(value: Any):
    """`value` as JSON to place inside <script type="application/json">: compact, with every character that
    could end the script element or the line escaped (a class name '</script>' stays data)."""
    from markupsafe import Markup

    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for raw, escaped in JSON_ISLAND_ESCAPES.items():
        text = text.replace(raw, escaped)
    return Markup(text)


@functools.lru_cache(maxsize=1)
def page_script() -> tuple[str, str]:
    """The epoch view's script and its CSP source ('sha256-...'), which allows exactly that text to run."""
    script = (templates_dir() / "epoch_view.js").read_text(encoding="utf-8")
    if "</" in script or "<!--" in script:
        raise ValueError("epoch_view.js must not contain '</' or '<!--': it is inlined in a <script> element")
    return script, "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


@functools.lru_cache(maxsize=None)
def make_environment(autoescape: bool = True, finalize: Callable[[Any], Any] | None = None):
    """jinja2 environment over templates/: HTML-autoescaped unless asked (markdown escapes its own way, through
    `finalize`). One per setting and process, so a template is compiled once (the screen and print HTML share it)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(str(templates_dir())), undefined=StrictUndefined,
                      autoescape=autoescape, trim_blocks=True, lstrip_blocks=True, finalize=finalize,
                      bytecode_cache=_compiled_templates_cache())
    env.filters.update(fmt=_fmt, pct=_pct, signed=_signed, position=_position, json_island=json_island)
    return env


def _compiled_templates_cache():
    """jinja's own cache of compiled templates between runs (compiling report.html.j2 and report.md.j2 takes 30 ms
    of a 0.8 s report), in jinja's private per-user folder under the temporary directory; keyed by each template's
    source, so an edited template is compiled again. None (compile every run) where that folder is unusable."""
    from jinja2 import FileSystemBytecodeCache

    class QuietCache(FileSystemBytecodeCache):
        """A cache file that cannot be read or written is a miss, never an error in the report."""

        def load_bytecode(self, bucket) -> None:
            try:
                super().load_bytecode(bucket)
            except OSError:
                pass

        def dump_bytecode(self, bucket) -> None:
            try:
                super().dump_bytecode(bucket)
            except OSError:
                pass

    try:
        return QuietCache()
    except (OSError, RuntimeError):   # jinja refuses a folder it does not own alone
        return None


def render_template(name: str, **context: Any) -> str:
    return make_environment().get_template(name).render(**context)


def render_html(inputs, figures: Sequence, for_print: bool) -> str:
    """report.html (for_print=False: the epoch slider and its data) or the HTML the PDF is laid out from."""
    from .context import report_context

    css = (templates_dir() / "report.css").read_text(encoding="utf-8")
    script, script_source = ("", "'none'") if for_print else page_script()
    return render_template("report.html.j2", css=css, script=script, csp=CSP.format(script=script_source),
                           **report_context(inputs, figures, for_print))
