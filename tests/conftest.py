"""Shared fixtures: the scenario suite is built once per test session (tests/_scenarios.py)."""
from __future__ import annotations

import pytest

from _scenarios import SUITE, Scenario, build


@pytest.fixture(scope="session")
def scenario_suite(tmp_path_factory) -> dict[str, Scenario]:
    """Every small scenario of the suite (trained MLPs with a known cause), by name."""
    root = tmp_path_factory.mktemp("scenarios")
    return {s.name: s for s in (build(kind, root, "small", seed) for kind, seed in SUITE)}
