"""A PyTorch Lightning callback that writes every validation epoch's outputs as a --predictions file.

Imported only when asked for (`from postmortem.callbacks import LightningPredictionsWriter`): postmortem does not
require Lightning. It subclasses the Callback of whichever of `lightning` and `pytorch_lightning` is installed
(both, when both are), so either Trainer accepts it.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .writer import OutputBatches, first_present, write_predictions

__all__ = ["LightningPredictionsWriter", "OUTPUT_KEYS", "LABEL_KEYS"]

# What validation_step may return the class scores under, and where the labels may be (returned, or in the batch).
OUTPUT_KEYS = ("outputs", "logits", "log_probs")
LABEL_KEYS = ("labels", "label", "targets", "target", "y")
NAME = "LightningPredictionsWriter"


def _callback_bases() -> tuple[type, ...]:
    bases = [importlib.import_module(package).Callback for package in ("lightning.pytorch", "pytorch_lightning")
             if importlib.util.find_spec(package.split(".")[0]) is not None]
    if not bases:
        raise ImportError(f"{NAME} needs PyTorch Lightning: pip install lightning (or pytorch-lightning)")
    return tuple(bases)


class LightningPredictionsWriter(*_callback_bases()):
    """Writes DIR/epoch_E-step_S.npz after each validation epoch (not the sanity check): the outputs exactly as the
    model gave them, the labels, a mask, ids and groups when the data has them, the epoch and global step (as
    Lightning's checkpoints store them), and the first optimizer's class name, lr and weight decay per group.

    Where the outputs come from, per batch: what `validation_step` returns, when it is a dict holding `outputs`,
    `logits` or `log_probs` (and optionally `labels`, `mask`, `ids`, `groups`); else the output of the
    LightningModule's own forward (`self(x)`) in that step. Labels, when not returned, come from the batch:
    `(inputs, labels, ...)` or a dict's `labels`/`label`/`targets`/`target`/`y`; `mask`, `ids` and `groups` from
    a dict batch. Only the first validation dataloader is written. One process only: under DDP each rank sees
    a shard of the validation set, so it refuses to start.

    `float16=True` halves the file (and the outputs held during the epoch); the outputs stay on their device
    until the epoch ends, then one file is written under a temporary name and renamed.
    """

    def __init__(self, dirpath: str | Path, float16: bool = False) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)
        self.float16 = float16
        self.written: list[Path] = []
        self._batches = OutputBatches(float16, NAME)
        self._forward_output: Any = None
        self._hook = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.world_size > 1:
            raise ConfigError(f"{NAME}: one process only (this run has {trainer.world_size}); each rank would "
                              "write its shard of the validation set. Save the checkpoints and run postmortem on "
                              "them, or validate on one device")

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._batches = OutputBatches(self.float16, NAME)
        self._remove_hook()   # left by a validation that raised
        self._hook = pl_module.register_forward_hook(self._keep_output)

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _keep_output(self, module, args, output) -> None:
        self._forward_output = output

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        forward_output, self._forward_output = self._forward_output, None
        if trainer.sanity_checking or dataloader_idx != 0:
            return
        returned = outputs if isinstance(outputs, Mapping) else {}
        scores = first_present(returned, OUTPUT_KEYS)
        if scores is None:
            scores = _scores_of(forward_output)
        if scores is None:
            raise DataError(f"{NAME}: validation batch {batch_idx}: validation_step returned "
                            f"{_described(outputs)} and the LightningModule's forward was not called; return "
                            "{'logits': ..., 'labels': ...} from validation_step, or call self(x) in it")
        from_batch = batch if isinstance(batch, Mapping) else {}
        labels = first_present(returned, LABEL_KEYS)
        if labels is None:
            labels = first_present(from_batch, LABEL_KEYS)
        if labels is None and isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) >= 2:
            labels = batch[1]
        if labels is None:
            raise DataError(f"{NAME}: validation batch {batch_idx}: no labels (return them as 'labels' from "
                            "validation_step, or make the batch (inputs, labels) or a dict with 'labels')")
        extra = {key: first_present(returned, (key,)) if returned.get(key) is not None else from_batch.get(key)
                 for key in ("mask", "ids", "groups")}
        self._batches.add(scores, labels, **extra)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._remove_hook()
        batches, self._batches = self._batches, OutputBatches(self.float16, NAME)
        if trainer.sanity_checking or not len(batches):
            return
        optimizers = trainer.optimizers
        self.written.append(write_predictions(self.dirpath, batches.arrays(), trainer.current_epoch,
                                              trainer.global_step, optimizers[0] if optimizers else None))


def _scores_of(output: Any) -> Any:
    """Class scores in a forward's output: a tensor, or the `logits` of a Hugging Face ModelOutput or dict."""
    if output is None or hasattr(output, "detach"):
        return output
    if isinstance(output, Mapping):
        return first_present(output, OUTPUT_KEYS)
    return getattr(output, "logits", None)


def _described(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"a dict with keys {sorted(map(str, value))}"
    return "nothing" if value is None else f"a {type(value).__name__}"
