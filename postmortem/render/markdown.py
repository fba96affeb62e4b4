"""report.md: a short summary to paste into an issue thread, every value escaped for markdown."""
from __future__ import annotations

import html
import re
from typing import Any

from .context import summary_context
from .html import make_environment
from .input import RenderInput

__all__ = ["markdown_escape", "render_markdown"]

# Characters that start markdown syntax (emphasis, links, code, tables, headings); '<' and '&' are HTML-escaped.
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]{}()#|!~])")


def markdown_escape(value: Any) -> str:
    """Text that renders as itself in GitHub-flavoured markdown: no markup, no raw HTML."""
    text = html.escape(str(value), quote=False)
    return MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def render_markdown(inputs: RenderInput) -> str:
    """Render report.md.j2; every {{ expression }} passes through markdown_escape."""
    return make_environment(autoescape=False, finalize=markdown_escape).get_template("report.md.j2").render(
        **summary_context(inputs))
