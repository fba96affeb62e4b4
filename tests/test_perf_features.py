"""Issue 6 features: torchrun sharding, --workers, --device cuda (where a GPU is present), cache reuse."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from postmortem.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_runs" / "digits_mlp"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_write_the_same_metrics_as_one_process(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip(f"torchrun is not installed beside {sys.executable}")
    run = tmp_path / "digits_mlp"
    shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("postmortem-report"))
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main(["report", str(run), "--out", str(single), "--no-pdf", "--quiet"]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                             "--master-port", str(_free_port()), "-m", "postmortem", "report", str(run),
                             "--out", str(sharded), "--no-pdf", "--quiet"],
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (single / "metrics.json").read_text() == (sharded / "metrics.json").read_text()
    # both ranks evaluated: each wrote its share of the cache, 20 entries in all
    assert len(list((sharded / "cache").glob("*.npz"))) == 20


def test_workers_load_a_dataset_in_processes_and_give_the_same_numbers(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("postmortem-report"))
    (run / "dataset_spec.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def val_data():\n"
        f"    d = torch.load({str(run / 'val.pt')!r}, weights_only=True)\n"
        "    return TensorDataset(d['inputs'], d['labels'])\n")
    plain, workers = tmp_path / "plain", tmp_path / "workers"
    assert main(["report", str(run), "--out", str(plain), "--no-pdf", "--quiet"]) == 0
    assert main(["report", str(run), "--data", f"{run / 'dataset_spec.py'}:val_data", "--workers", "2",
                 "--out", str(workers), "--no-pdf", "--quiet"]) == 0
    a = json.loads((plain / "metrics.json").read_text())["epochs"]
    b = json.loads((workers / "metrics.json").read_text())["epochs"]
    assert [e["loss"] for e in a] == pytest.approx([e["loss"] for e in b], rel=1e-12)
    assert [e["confusion_matrix"] for e in a] == [e["confusion_matrix"] for e in b]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (torch.cuda.is_available() is False)")
def test_cuda_device_gives_the_cpu_numbers(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("postmortem-report"))
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    assert main(["report", str(run), "--out", str(cpu), "--no-pdf", "--quiet"]) == 0
    assert main(["report", str(run), "--out", str(gpu), "--no-pdf", "--quiet", "--device", "cuda"]) == 0
    a = json.loads((cpu / "metrics.json").read_text())["epochs"]
    b = json.loads((gpu / "metrics.json").read_text())["epochs"]
    assert [e["loss"] for e in b] == pytest.approx([e["loss"] for e in a], rel=1e-5)
    assert [e["confusion_matrix"] for e in a] == [e["confusion_matrix"] for e in b]
