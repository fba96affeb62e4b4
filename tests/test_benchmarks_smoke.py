"""The benchmarks stay runnable: their modules import, and the evaluation profile's patch targets exist (a renamed
function would otherwise surface only when someone runs the benchmarks)."""
import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def benchmarks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCHMARKS.glob("bench_*.py")))
def test_benchmark_modules_import(name):
    module = importlib.import_module(name)
    assert callable(getattr(module, "main"))
    sys.modules.pop(name, None)


def test_the_evaluation_profile_patches_real_functions():
    module = importlib.import_module("bench_eval_overhead")
    with module.profiled() as seconds:
        assert seconds == {}


@pytest.mark.parametrize("loop, package", [("lightning", "pytorch_lightning"), ("huggingface", "transformers")])
def test_the_callback_benchmark_runs_both_sides_of_each_loop(tmp_path, loop, package):
    import numpy as np

    pytest.importorskip(package)
    module = importlib.import_module("bench_callbacks")
    with_writer, without, clock = getattr(module, f"{loop}_sides")(256, tmp_path, float16=True)
    with_writer()
    assert clock.seconds > 0                                     # the writer's methods ran, and were clocked
    without()
    (written,) = (tmp_path / "predictions").iterdir()          # the side with the writer wrote one validation
    outputs = np.load(written)["outputs"]
    assert outputs.shape == (256, module.N_CLASSES) and outputs.dtype == np.float16
