"""Findings: what a rule concluded, with the numbers behind it and what to try next."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Severity", "Finding", "finding_to_json"]


class Severity(str, enum.Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


@dataclass(frozen=True)
class Finding:
    """One ranked conclusion. `evidence` maps names to numbers; `thresholds` the limits they were held to."""

    id: str
    severity: Severity
    score: float
    title: str
    summary: str
    classes: tuple[str, ...] = ()
    evidence: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    next_steps: tuple[str, ...] = ()
    figure: str | None = None


def finding_to_json(finding: Finding) -> dict[str, Any]:
    """The metrics.json form of a finding (schema_version 1)."""
    return {
        "id": finding.id,
        "severity": finding.severity.value,
        "title": finding.title,
        "summary": finding.summary,
        "classes": list(finding.classes),
        "evidence": {k: float(v) for k, v in finding.evidence.items()},
        "thresholds": {k: float(v) for k, v in finding.thresholds.items()},
        "next_steps": list(finding.next_steps),
        "figure": finding.figure,
    }
