"""Predictions-only runs for the report tests: per-epoch float32 logits saved as .npz, no model needed."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np


def predictions_run(root: Path, epochs: int, items: int, classes: int, *, noise: float = 0.3,
                    margin: Callable[[int], float] = lambda epoch: 1.5,
                    scale: Callable[[int], float] = lambda epoch: 0.5 + 0.05 * epoch) -> Path:
    """ROOT/preds/epoch_E.npz for E = 1..epochs: scale(E) * (base + noise + margin(E) on the true class), where
    the base logits are fixed and the noise is drawn again each epoch. Returns the folder."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, items)
    base = rng.normal(size=(items, classes))
    folder = root / "preds"
    folder.mkdir(parents=True)
    for epoch in range(1, epochs + 1):
        logits = base + rng.normal(scale=noise, size=base.shape)
        logits[np.arange(items), labels] += margin(epoch)
        np.savez(folder / f"epoch_{epoch}.npz", outputs=(logits * scale(epoch)).astype(np.float32), labels=labels)
    return folder
