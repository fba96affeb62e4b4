"""Diagnose: rules over the analyses that return ranked findings with evidence."""
from __future__ import annotations

from .findings import Finding, Severity, finding_to_json
from .rules import DiagnosisConfig, diagnose, verdict

__all__ = ["Finding", "Severity", "finding_to_json", "DiagnosisConfig", "diagnose", "verdict"]
