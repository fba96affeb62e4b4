"""Diagnose: one comparison of two epochs, the causes assessed on it, the verdict, and the ranked findings."""
from __future__ import annotations

from .causes import Cause, CauseAssessment
from .comparison import Comparison, Status
from .config import DIAGNOSIS_TABLE, DiagnosisConfig
from .findings import FigureAnchor, Finding, FindingKind, Severity, finding_to_json
from .rules import Diagnosis, diagnose
from .verdict import Verdict, VerdictSentences, verdict_to_json

__all__ = ["Cause", "CauseAssessment", "Comparison", "Status", "DIAGNOSIS_TABLE", "DiagnosisConfig", "FigureAnchor",
           "Finding", "FindingKind", "Severity", "finding_to_json", "Diagnosis", "diagnose", "Verdict",
           "VerdictSentences", "verdict_to_json"]
