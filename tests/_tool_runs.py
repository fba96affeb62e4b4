"""Training runs saved exactly as popular tools save them, for tests/test_load_tool_layouts.py.

timm and torchvision do not install here (timm needs torchvision, whose wheels pull a CUDA torch), so their
savers are reproduced: `TimmCheckpointSaver` is timm.utils.CheckpointSaver's _save and save_checkpoint
(tmp file, os.replace to last.pth.tar, hard links for checkpoint-N.pth.tar and model_best.pth.tar; the
trimming of old checkpoints left out), `save_like_torchvision` the checkpoint block of torchvision's references/classification/
train.py. The model is trained for real; its EMA is torch's own AveragedModel with an EMA average, which is
what timm's ModelEmaV3 and torchvision's ExponentialMovingAverage compute.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

N_CLASSES = 3

# A tiny resnet with timm's key names (conv1, bn1, layer1.0.conv1 ..., fc): the model as a user's spec builds it.
TINY_RESNET_SPEC = '''
import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class TinyResNet(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(BasicBlock(4))
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        x = self.layer1(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def build_model():
    return TinyResNet()
'''


def spec_namespace(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "<spec>", "exec"), namespace)
    return namespace


def images(seed: int, n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=generator), torch.randint(0, N_CLASSES, (n,), generator=generator)


def train_epochs(model: nn.Module, n_epochs: int, seed: int = 0):
    """Real SGD epochs with an EMA copy; yields (epoch index, model, ema AveragedModel, optimizer, scheduler)."""
    torch.manual_seed(seed)
    x, y = images(seed + 1, 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    for epoch in range(n_epochs):
        model.train()
        for start in range(0, len(y), 16):
            optimizer.zero_grad()
            F.cross_entropy(model(x[start:start + 16]), y[start:start + 16]).backward()
            optimizer.step()
            ema.update_parameters(model)
        scheduler.step()
        yield epoch, model.eval(), ema.eval(), optimizer, scheduler


class TimmCheckpointSaver:
    """timm.utils.CheckpointSaver's file writing (model_ema unwrapped as timm's unwrap_model does)."""

    def __init__(self, model, optimizer, args, model_ema, checkpoint_dir: Path, max_history: int = 10):
        self.model, self.optimizer, self.args, self.model_ema = model, optimizer, args, model_ema
        self.checkpoint_dir, self.max_history = checkpoint_dir, max_history
        self.checkpoint_files: list = []
        self.best_metric = None
        self.extension = ".pth.tar"

    def _save(self, save_path, epoch, metric=None):
        save_state = {
            "epoch": epoch,
            "arch": type(self.model).__name__.lower(),
            "optimizer": self.optimizer.state_dict(),
            "version": 2,
        }
        if self.args is not None:
            save_state["arch"] = self.args.model
            save_state["args"] = self.args
        save_state["state_dict"] = self.model.state_dict()
        if self.model_ema is not None:
            save_state["state_dict_ema"] = self.model_ema.module.state_dict()
        if metric is not None:
            save_state["metric"] = metric
        torch.save(save_state, save_path)

    def save_checkpoint(self, epoch, metric=None):
        tmp_save_path = os.path.join(self.checkpoint_dir, "tmp" + self.extension)
        last_save_path = os.path.join(self.checkpoint_dir, "last" + self.extension)
        self._save(tmp_save_path, epoch, metric)
        if os.path.exists(last_save_path):
            os.unlink(last_save_path)
        os.replace(tmp_save_path, last_save_path)
        filename = "-".join(["checkpoint", str(epoch)]) + self.extension
        save_path = os.path.join(self.checkpoint_dir, filename)
        os.link(last_save_path, save_path)
        self.checkpoint_files.insert(0, (save_path, metric))
        if metric is not None and (self.best_metric is None or metric > self.best_metric):
            self.best_metric = metric
            best_save_path = os.path.join(self.checkpoint_dir, "model_best" + self.extension)
            if os.path.exists(best_save_path):
                os.unlink(best_save_path)
            os.link(last_save_path, best_save_path)


def training_args(model_name: str) -> argparse.Namespace:
    """The argparse.Namespace timm's and torchvision's train.py store (a few of their fields, with the optimizer
    train_epochs runs under their names: timm's sched, torchvision's lr_scheduler)."""
    return argparse.Namespace(model=model_name, opt="sgd", lr=0.3, momentum=0.9, weight_decay=0.0, sched="step",
                              lr_scheduler="steplr", epochs=3, batch_size=16, model_ema=True, model_ema_decay=0.5,
                              num_classes=N_CLASSES, output="output/train")


def save_like_torchvision(output_dir: Path, model, optimizer, scheduler, ema, epoch: int, args) -> None:
    """torchvision references/classification/train.py: the same dict to model_{epoch}.pth and checkpoint.pth."""
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "args": args,
    }
    if ema is not None:
        checkpoint["model_ema"] = ema.state_dict()
    torch.save(checkpoint, os.path.join(output_dir, f"model_{epoch}.pth"))
    torch.save(checkpoint, os.path.join(output_dir, "checkpoint.pth"))
