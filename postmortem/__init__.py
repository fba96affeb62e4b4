"""postmortem: explain, with evidence, why validation loss rose while accuracy held.

Flow: load -> evaluate -> analyze -> diagnose -> render. `python -m postmortem report RUN`.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
