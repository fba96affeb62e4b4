"""Real tiny training runs whose optimizer and scheduler state is saved as training loops save it, with what the
optimizer and scheduler objects themselves report at each save (the independent numbers), for
tests/test_load_training_setup.py and tests/test_report_training_setup.py."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from _fixtures_inputs import SPEC_SOURCE, Net, validation_tensors


@dataclass(frozen=True)
class Observed:
    """What the live objects said right after an epoch's optimizer and scheduler steps (when it was saved)."""

    epoch: int
    lrs: tuple[float, ...]                # optimizer.param_groups[i]['lr']
    weight_decays: tuple[float, ...]
    last_lr: tuple[float, ...] | None     # scheduler.get_last_lr() (ReduceLROnPlateau: its _last_lr)
    step: int | None                      # the optimizer state's 'step' (None for SGD)


def param_groups(model: Net, lrs: tuple[float, ...]) -> list[dict]:
    """One param group per lr: the first layer, then the rest."""
    first, rest = list(model.body[0].parameters()), list(model.body[2].parameters())
    return [{"params": first, "lr": lrs[0]}, {"params": rest, "lr": lrs[-1]}] if len(lrs) > 1 else \
        [{"params": first + rest, "lr": lrs[0]}]


def train(n_epochs: int, make_optimizer: Callable, make_scheduler: Callable | None,
          save: Callable[[int, Net, object, object], None], lrs: tuple[float, ...] = (0.1,),
          steps_per_epoch: int = 4, seed: int = 0) -> list[Observed]:
    """Train a Net for real, step the scheduler (per batch for OneCycleLR, on the loss for ReduceLROnPlateau,
    else per epoch), call save(epoch, model, optimizer, scheduler) after each epoch and return what the objects
    reported then."""
    torch.manual_seed(seed)
    model = Net()
    x, y = validation_tensors(seed + 1, 64)
    optimizer = make_optimizer(param_groups(model, lrs))
    scheduler = make_scheduler(optimizer) if make_scheduler else None
    per_batch = isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    observed = []
    for epoch in range(1, n_epochs + 1):
        for batch in range(steps_per_epoch):
            rows = slice(16 * batch, 16 * batch + 16)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[rows]), y[rows])
            loss.backward()
            optimizer.step()
            if per_batch:
                scheduler.step()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(1.0)          # a loss that never improves: the plateau reduces the lr
        elif scheduler is not None and not per_batch:
            scheduler.step()
        model.eval()
        save(epoch, model, optimizer, scheduler)
        model.train()
        steps = [int(s["step"]) for s in optimizer.state.values() if "step" in s]
        observed.append(Observed(epoch, tuple(g["lr"] for g in optimizer.param_groups),
                                 tuple(g["weight_decay"] for g in optimizer.param_groups),
                                 None if scheduler is None else tuple(scheduler.get_last_lr()),
                                 max(steps) if steps else None))
    return observed


def own_loop_run(root: Path, n_epochs: int, make_optimizer: Callable, make_scheduler: Callable | None,
                 lrs: tuple[float, ...] = (0.1,), keys: tuple[str, str] = ("optimizer_state_dict",
                                                                          "scheduler_state_dict"),
                 edit: Callable[[dict], dict] = lambda checkpoint: checkpoint) -> tuple[Path, list[Observed]]:
    """RUN/ with postmortem_spec.py, val.pt and checkpoints/epoch_N.pt as a hand-written loop saves them:
    {'epoch', 'model_state_dict', keys[0]: optimizer.state_dict(), keys[1]: scheduler.state_dict()};
    `edit` may change the dict before it is saved."""
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(SPEC_SOURCE)
    x, y = validation_tensors()
    torch.save({"inputs": x, "labels": y}, run / "val.pt")

    def save(epoch, model, optimizer, scheduler):
        checkpoint = {"epoch": epoch, "model_state_dict": model.state_dict(), keys[0]: optimizer.state_dict()}
        if scheduler is not None:
            checkpoint[keys[1]] = scheduler.state_dict()
        torch.save(edit(checkpoint), run / "checkpoints" / f"epoch_{epoch}.pt")

    return run, train(n_epochs, make_optimizer, make_scheduler, save, lrs)
