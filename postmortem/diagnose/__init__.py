"""Diagnose: rules over the analyses that return ranked findings with evidence."""
from __future__ import annotations

from .findings import FigureAnchor, Finding, FindingKind, Severity, finding_to_json
from .rules import Answer, DiagnosisConfig, diagnose, verdict

__all__ = ["FigureAnchor", "Finding", "FindingKind", "Severity", "finding_to_json", "Answer", "DiagnosisConfig", "diagnose", "verdict"]
