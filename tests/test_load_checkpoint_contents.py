"""Which weights a checkpoint holds and what it says about itself, read from real torch.save files whose
metadata is placeholders (argparse, omegaconf, numpy) and whose modules are pickled whole."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from _fixtures_inputs import Net
from postmortem.errors import CheckpointError
from postmortem.load.checkpoint_reader import read_checkpoint
from postmortem.load.discovery import CheckpointFile


def read(path: Path, content, weights: str = "model"):
    torch.save(content, path)
    return read_checkpoint(CheckpointFile(path, path), weights=weights)


def same(state: dict, expected: dict) -> bool:
    return set(state) == set(expected) and all(torch.equal(state[k], v) for k, v in expected.items())


@pytest.mark.parametrize("layout", [
    lambda m, e: {"epoch": np.int64(4), "checkpoint": {"model_state_dict": m}, "ema_state_dict": e},
    lambda m, e: {"epoch": 4, "model": m, "ema_model": e, "best": np.float64(0.3)},
    lambda m, e: {"epoch": torch.tensor(4), "module": m, "ema": e},
], ids=["nested-and-numpy-epoch", "ema_model", "ema"])
def test_model_and_ema_weights_under_the_keys_tools_use(tmp_path, layout):
    model, ema = Net().state_dict(), Net().state_dict()
    content = layout(model, ema)
    loaded = read(tmp_path / "x.pt", content)
    assert same(loaded.state_dict, model) and loaded.metadata == {"epoch": 4}
    assert (loaded.weights, loaded.available) == ("model", ("model", "ema"))
    assert same(read(tmp_path / "x.pt", content, weights="ema").state_dict, ema)


def test_whole_pickled_modules_under_model_and_ema_as_ultralytics_saves_them(tmp_path):
    def network():
        return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))

    model, ema = network(), network()
    loaded = read(tmp_path / "x.pt", {"epoch": 2, "model": model, "ema": ema, "train_args": {"imgsz": 32}})
    assert same(loaded.state_dict, model.state_dict())
    assert same(read(tmp_path / "x.pt", {"epoch": 2, "model": None, "ema": ema}, weights="ema").state_dict,
                ema.state_dict())
    with pytest.raises(CheckpointError, match=r"x\.pt: holds no model weights, only ema weights; pass --weights ema"):
        read(tmp_path / "x.pt", {"epoch": 2, "model": None, "ema": ema})


def test_the_architecture_timm_stores(tmp_path):
    state = Net().state_dict()
    assert read(tmp_path / "a.pt", {"arch": "resnet18", "state_dict": state}).architecture == "resnet18"
    loaded = read(tmp_path / "b.pt", {"state_dict": state, "args": argparse.Namespace(model="vit_tiny", lr=0.1)})
    assert loaded.architecture == "vit_tiny"
    assert read(tmp_path / "c.pt", {"state_dict": state}).architecture is None


@pytest.mark.skipif(importlib.util.find_spec("omegaconf") is None, reason="omegaconf is in the test extra")
def test_omegaconf_configs_are_read_as_placeholders(tmp_path):
    """A Hydra-style config under args: its values are read from omegaconf's nodes without importing omegaconf."""
    from omegaconf import OmegaConf

    from postmortem.load.checkpoint_contents import attributes
    from postmortem.load.torch_files import load_torch_file

    config = OmegaConf.create({"model": "convnext_atto", "optim": {"lr": 0.1, "betas": [0.9, 0.99]}})
    loaded = read(tmp_path / "x.pt", {"state_dict": Net().state_dict(), "args": config, "epoch": 1})
    assert loaded.architecture == "convnext_atto"
    args = load_torch_file(tmp_path / "x.pt")["args"]
    assert type(args).__module__ == "postmortem.load.inert_pickle"
    assert attributes(attributes(args)["optim"])["lr"] == 0.1


def test_nothing_to_evaluate_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"x\.pt: no state_dict found \(top-level keys: 'epoch', 'args'; "
                                              r"expected tensors, one of state_dict, model_state_dict, model, module "
                                              r"or a pickled nn\.Module\)"):
        read(tmp_path / "x.pt", {"epoch": 1, "args": argparse.Namespace(lr=0.1)})
    with pytest.raises(CheckpointError, match=r"x\.pt: holds a pickled argparse\.Namespace, not a state_dict"):
        read(tmp_path / "x.pt", argparse.Namespace(lr=0.1))
