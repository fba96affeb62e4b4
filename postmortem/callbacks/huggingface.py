"""A Hugging Face Trainer callback that writes every evaluation's outputs as a --predictions file.

Imported only when asked for (`from postmortem.callbacks import HFPredictionsWriter`): postmortem does not
require transformers. A TrainerCallback is told when an evaluation ends, not what it computed, so this one
watches the model: a forward hook keeps the logits (and the `labels` argument) of every forward pass made in eval
mode, and each evaluation step (`on_prediction_step`) takes the step's forward pass into the epoch's batches;
`on_evaluate` writes them. A forward pass no evaluation step claims (the model called by other code, another
Trainer's loop) is overwritten by the next one, never written; those of `Trainer.predict` are dropped.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..errors import ConfigError, DataError
from .writer import OutputBatches, item_keys, write_predictions

__all__ = ["HFPredictionsWriter"]

NAME = "HFPredictionsWriter"


class HFPredictionsWriter(TrainerCallback):
    """Writes DIR/epoch_E-step_S.npz at each evaluation (DIR/step_S.npz in the middle of an epoch): the logits of
    every evaluation batch as the model gave them, the labels the Trainer passed to the model, the epoch (when
    whole, as a checkpoint's trainer_state.json keeps it) and global step, and the optimizer's class name, lr and
    weight decay per parameter group. `ids`, when given, names the evaluation set's items in their order.

    Pass it in `Trainer(callbacks=[...])` (it finds the model when the Trainer starts; `trainer.add_callback` works
    too, before `train()`). Batches of token labels of different lengths are padded with a mask. One process
    only: under several processes or GPUs each sees a shard of the evaluation set, so it refuses to start.
    With several evaluation datasets, each evaluation writes the same file name: give one."""

    def __init__(self, dirpath: str | Path, float16: bool = False, ids: Sequence[Any] | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.float16 = float16
        self.ids = None if ids is None else list(ids)
        self.written: list[Path] = []
        self._batches = OutputBatches(float16, NAME)
        self._last_forward: tuple[Any, Any] | None = None    # (output, labels) of the latest eval-mode forward
        self._hooked: Any = None
        self._hook = None

    def _watch(self, args, model) -> None:
        """Hook the model once (again when the Trainer was given another one)."""
        if args.world_size > 1 or getattr(args, "n_gpu", 1) > 1:
            raise ConfigError(f"{NAME}: one process and one device only (this run has world_size "
                              f"{args.world_size}, {args.n_gpu} GPUs); each would see a shard of the evaluation "
                              "set. Save the checkpoints and run postmortem on them instead")
        if model is None or model is self._hooked:
            return
        if self._hook is not None:
            self._hook.remove()
        self._hook = model.register_forward_hook(self._keep, with_kwargs=True)
        self._hooked = model

    def _keep(self, module, args, kwargs, output) -> None:
        if not module.training:      # checked when a step claims it: other code's eval-mode calls must not fail here
            self._last_forward = (output, kwargs.get("labels"))

    def on_prediction_step(self, args, state, control, **kwargs) -> None:
        """The step's forward pass belongs to this evaluation (or prediction) loop: its logits and labels join the
        epoch's batches."""
        if self._last_forward is None:
            return
        output, labels = self._last_forward
        self._last_forward = None
        logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", output)
        if labels is None:
            raise DataError(f"{NAME}: the model was called in eval mode without 'labels' (label smoothing or a "
                            "custom compute_loss takes them out of the inputs); give the evaluation set labels")
        if not hasattr(logits, "detach"):
            raise DataError(f"{NAME}: the model's output has no 'logits' tensor ({type(output).__name__})")
        self._batches.add(logits, labels)

    def on_init_end(self, args, state, control, model=None, **kwargs) -> None:
        self._watch(args, model)

    def on_train_begin(self, args, state, control, model=None, **kwargs) -> None:
        self._watch(args, model)

    def on_evaluate(self, args, state, control, model=None, optimizer=None, **kwargs) -> None:
        batches, self._batches = self._batches, OutputBatches(self.float16, NAME)
        if not len(batches):
            raise DataError(f"{NAME}: saw no evaluation batches: pass it in Trainer(callbacks=[...]), or add it "
                            "before train()")
        arrays = batches.arrays()
        if self.ids is not None:
            if len(self.ids) != len(arrays["labels"]):
                raise DataError(f"{NAME}: {len(self.ids)} ids for the {len(arrays['labels'])} items evaluated")
            arrays["ids"] = item_keys(self.ids)
        epoch = state.epoch if state.epoch is not None and float(state.epoch).is_integer() else None
        self.written.append(write_predictions(self.dirpath, arrays, None if epoch is None else int(epoch),
                                              state.global_step, optimizer))

    def on_predict(self, args, state, control, **kwargs) -> None:
        self._batches = OutputBatches(self.float16, NAME)
