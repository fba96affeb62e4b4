"""Shared fixtures: the scenario suite is built once per test session (tests/_scenarios.py)."""
from __future__ import annotations

import pytest

from _scenarios import SUITE, Scenario, build


@pytest.fixture(scope="session")
def scenario_suite(tmp_path_factory) -> dict[str, Scenario]:
    """Every small scenario of the suite (trained MLPs with a known cause), by name."""
    root = tmp_path_factory.mktemp("scenarios")
    return {s.name: s for s in (build(kind, root, "small", seed) for kind, seed in SUITE)}


@pytest.fixture(scope="session")
def training_scenario_suite(tmp_path_factory):
    """Every small training-side scenario (model-mode runs with a known cause, tests/_training_scenarios.py)."""
    from _training_scenarios import build_suite

    return build_suite(tmp_path_factory.mktemp("training_scenarios"))
