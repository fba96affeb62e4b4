"""Write validation outputs during training, in the --predictions format (README, "Saving predictions while
training"): for runs that keep few checkpoints, predictions mode is how postmortem sees every epoch.

    from postmortem.callbacks import LightningPredictionsWriter      # PyTorch Lightning
    trainer = Trainer(callbacks=[LightningPredictionsWriter("run/predictions")])

    from postmortem.callbacks import HFPredictionsWriter             # Hugging Face Trainer
    trainer = Trainer(..., callbacks=[HFPredictionsWriter("run/predictions")])

    postmortem.save_predictions("run/predictions", epoch, logits, labels)   # a loop of your own

The two callbacks are imported on first use, so postmortem requires neither Lightning nor transformers.
"""
from __future__ import annotations

from typing import Any

from .writer import save_predictions

__all__ = ["save_predictions", "LightningPredictionsWriter", "HFPredictionsWriter"]


def __getattr__(name: str) -> Any:
    if name == "LightningPredictionsWriter":
        from .lightning import LightningPredictionsWriter
        return LightningPredictionsWriter
    if name == "HFPredictionsWriter":
        from .huggingface import HFPredictionsWriter
        return HFPredictionsWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
