"""Shared helpers for tests/test_inputs_*.py and tests/test_errors_*.py: small real models, real
checkpoint files in tmp dirs, and the real CLI run in-process."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from postmortem.cli import main

N_IN, N_CLASSES, N_VAL = 6, 3, 40

# The model as a user's postmortem_spec.py defines it; tests build checkpoints from the same source.
SPEC_SOURCE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, n_in=6, n_classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, 8), nn.ReLU(), nn.Linear(8, n_classes))

    def forward(self, x):
        return self.body(x)


def build_model():
    return Net()
'''


def spec_namespace() -> dict:
    namespace: dict = {}
    exec(compile(SPEC_SOURCE, "<spec>", "exec"), namespace)
    return namespace


Net = spec_namespace()["Net"]


def validation_tensors(seed: int = 0, n: int = N_VAL) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_IN, generator=generator)
    y = torch.randint(0, N_CLASSES, (n,), generator=generator)
    return x, y


def trained_models(n_epochs: int = 3, seed: int = 0) -> list[nn.Module]:
    """Copies of one Net after each of a few SGD steps: a real (tiny) training run."""
    torch.manual_seed(seed)
    model = Net()
    x, y = validation_tensors(seed + 1, 64)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    models = []
    for _ in range(n_epochs):
        for _ in range(5):
            optimiser.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimiser.step()
        copy = Net()
        copy.load_state_dict(model.state_dict())
        models.append(copy.eval())
    return models


def reference_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, weight=None) -> float:
    """The independent number: torch's nll_loss on float64 log-softmax."""
    with torch.no_grad():
        logits = model(x).double()
    return float(F.nll_loss(F.log_softmax(logits, -1), y, weight=None if weight is None else torch.tensor(weight, dtype=torch.float64)))


def make_run(root: Path, n_epochs: int = 3, spec: str = SPEC_SOURCE, save=None, name="epoch_{epoch}.pt",
             data: bool = True) -> tuple[Path, list[nn.Module]]:
    """RUN/ with postmortem_spec.py, val.pt and checkpoints/epoch_N.pt (bare state_dicts unless `save`)."""
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    if spec is not None:
        (run / "postmortem_spec.py").write_text(spec)
    if data:
        x, y = validation_tensors()
        torch.save({"inputs": x, "labels": y}, run / "val.pt")
    models = trained_models(n_epochs)
    for epoch, model in enumerate(models, start=1):
        path = run / "checkpoints" / name.format(epoch=epoch)
        if save is None:
            torch.save(model.state_dict(), path)
        else:
            save(model, epoch, path)
    return run, models


def report(run: Path, *args: str, out: Path | None = None, pdf: bool = False, capsys=None):
    """Run `postmortem report RUN ...` in-process; returns (exit code, stderr, metrics.json or None)."""
    out = out if out is not None else run.parent / "report"
    argv = ["report", str(run), "--out", str(out), "--quiet", *args] + ([] if pdf else ["--no-pdf"])
    code = main(argv)
    err = capsys.readouterr().err if capsys is not None else ""
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if code == 0 and metrics_path.is_file() else None
    return code, err, metrics


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under a folder with its size and modification time (to prove nothing was written)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))} if folder.exists() else {}


def losses(metrics: dict) -> list[float]:
    return [e["loss"] for e in metrics["epochs"]]


def assert_close(actual, expected, rel=1e-5):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert actual.shape == expected.shape, (actual, expected)
    assert np.allclose(actual, expected, rtol=rel, atol=0), (actual, expected)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


