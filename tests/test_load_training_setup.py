"""The training setup read from real checkpoints of real training runs, in every layout of README's "Checkpoint
layouts": the values must equal what the optimizer and scheduler objects reported when the checkpoint was saved."""
from __future__ import annotations

import argparse
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

import _tool_runs as tools
from _fixtures_inputs import Net, validation_tensors
from _setup_runs import Observed, own_loop_run
from postmortem.config import build_config
from postmortem.evaluate.runner import evaluate_run
from postmortem.load.checkpoint_reader import read_checkpoint
from postmortem.load.discovery import discover_checkpoints
from postmortem.load.torch_files import load_torch_data
from postmortem.load.training_setup import (KindBasis, TrainingSetup, WeightDecayMode, checkpoint_training_setup,
                                            predictions_training_setup)

HAS_LIGHTNING = importlib.util.find_spec("pytorch_lightning") is not None
HAS_HF_TRAINER = all(importlib.util.find_spec(name) is not None for name in ("transformers", "accelerate"))


def _evaluate(run: Path, out: Path):
    return evaluate_run(build_config(run, {}, {"data": str(run / "val.pt"), "quiet": True, "out": str(out)}))


def _assert_matches(setup: TrainingSetup, seen: Observed) -> None:
    """The setup's numbers are the live objects' numbers, exactly."""
    assert setup.learning_rates == seen.lrs
    assert tuple(g.weight_decay for g in setup.optimizer.param_groups) == seen.weight_decays
    assert setup.optimizer.step == seen.step
    if seen.last_lr is not None:
        assert setup.scheduler.last_lr == seen.last_lr


CASES = {   # optimizer, scheduler, param-group lrs -> kind, weight-decay mode, scheduler kind
    "adam-l2-steplr": (lambda groups: torch.optim.Adam(groups, weight_decay=1e-5),
                       lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5), (0.01,),
                       "Adam", WeightDecayMode.COUPLED, "StepLR"),
    "adamw-warm-restarts": (lambda groups: torch.optim.AdamW(groups, weight_decay=0.05),
                            lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=2), (0.01, 0.001),
                            "AdamW", WeightDecayMode.DECOUPLED, "CosineAnnealingWarmRestarts"),
    "sgd-momentum-onecycle": (lambda groups: torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=1e-4),
                              lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=16),
                              (0.1,), "SGD", WeightDecayMode.COUPLED, "OneCycleLR"),
    "rmsprop-plateau": (lambda groups: torch.optim.RMSprop(groups, momentum=0.5),
                        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=0), (0.01,),
                        "RMSprop", WeightDecayMode.NONE, "ReduceLROnPlateau"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_own_loop_optimizers_and_schedulers_read_as_the_objects_report(tmp_path, case):
    make_optimizer, make_scheduler, lrs, kind, mode, scheduler_kind = CASES[case]
    run, observed = own_loop_run(tmp_path, 4, make_optimizer, make_scheduler, lrs)
    evaluation = _evaluate(run, tmp_path / "report")
    assert [e.epoch for e in evaluation.epochs] == [1, 2, 3, 4]
    for evaluated, seen in zip(evaluation.epochs, observed):
        setup = evaluated.training_setup
        _assert_matches(setup, seen)
        assert (setup.optimizer.kind, setup.optimizer.kind_basis, setup.optimizer.weight_decay_mode) == \
            (kind, KindBasis.INFERRED, mode)
        assert (setup.scheduler.kind, setup.optimizer.source, setup.scheduler.source) == \
            (scheduler_kind, "optimizer_state_dict", "scheduler_state_dict")
        assert len(setup.optimizer.param_groups) == len(lrs)
        assert sum(g.n_params for g in setup.optimizer.param_groups) == 4   # two weights, two biases
        assert TrainingSetup.from_json(setup.to_json()) == setup
    assert evaluation.notes == []


@pytest.mark.parametrize("case", list(CASES))
def test_the_scheduled_lrs_change_as_scheduled(tmp_path, case):
    """Independent of postmortem: each schedule above really moves its learning rates between the saves."""
    _, observed = own_loop_run(tmp_path, 4, *CASES[case][:3])
    assert len({o.lrs for o in observed}) > 1
    if case == "rmsprop-plateau":            # the first step sets the best loss, every later one halves the lr
        assert [o.lrs[0] for o in observed] == [0.01, 0.005, 0.0025, 0.00125]


def test_adam_coupled_weight_decay_names_its_mode_and_hyper_parameters(tmp_path):
    """The motivating user's optim.Adam(..., weight_decay=args.l2): coupled L2, with its betas and eps."""
    run, observed = own_loop_run(tmp_path, 2, lambda g: torch.optim.Adam(g, betas=(0.8, 0.99), eps=1e-7,
                                                                      weight_decay=3e-4), None, (0.02,))
    setup = _evaluate(run, tmp_path / "report").epochs[-1].training_setup
    optimizer = setup.optimizer
    assert (optimizer.kind, optimizer.weight_decay_mode) == ("Adam", WeightDecayMode.COUPLED)
    assert optimizer.weight_decay_detail == "decoupled_weight_decay = False in the param groups"
    [group] = optimizer.param_groups
    assert (group.lr, group.weight_decay, group.betas, group.eps, group.momentum) == (0.02, 3e-4, (0.8, 0.99), 1e-7,
                                                                                      None)
    assert setup.scheduler is None and setup.sources == ("optimizer_state_dict",)
    assert optimizer.step == observed[-1].step == 8


def test_a_state_dict_without_decoupled_weight_decay_cannot_tell_adam_from_adamw(tmp_path):
    """torch < 2.6 saved Adam's and AdamW's param groups with the same keys: the kind and the mode stay open."""
    def as_older_torch_saved_it(checkpoint):
        for group in checkpoint["optimizer_state_dict"]["param_groups"]:
            del group["decoupled_weight_decay"]
        return checkpoint

    run, _ = own_loop_run(tmp_path, 2, lambda g: torch.optim.AdamW(g, weight_decay=0.01), None,
                          edit=as_older_torch_saved_it)
    optimizer = _evaluate(run, tmp_path / "report").epochs[0].training_setup.optimizer
    assert (optimizer.kind, optimizer.kind_basis, optimizer.weight_decay_mode) == \
        ("Adam or AdamW", KindBasis.INFERRED, WeightDecayMode.UNKNOWN)
    assert "the same keys" in optimizer.weight_decay_detail


def test_other_keys_and_a_pickled_optimizer_object(tmp_path):
    """'optimizer'/'lr_scheduler' keys, and torch.save of the optimizer object itself (its class names it, read
    inertly: the placeholder's recorded state)."""
    run, observed = own_loop_run(tmp_path, 2, lambda g: torch.optim.SGD(g, momentum=0.9),
                                 lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.1), keys=("optim", "lr_scheduler"))
    setup = _evaluate(run, tmp_path / "report").epochs[1].training_setup
    _assert_matches(setup, observed[1])
    assert setup.sources == ("optim", "lr_scheduler")

    model = Net()
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.3, weight_decay=0.1)
    path = tmp_path / "whole.pt"
    torch.save({"state_dict": model.state_dict(), "optimizer": optimizer}, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    read = checkpoint_training_setup(load_torch_data(path), path)
    assert read.problem is None
    assert (read.setup.optimizer.kind, read.setup.optimizer.kind_basis, read.setup.optimizer.kind_detail) == \
        ("Adagrad", KindBasis.NAMED, "its pickled class Adagrad")
    assert read.setup.learning_rates == (0.3,) and read.setup.optimizer.weight_decay_mode is WeightDecayMode.COUPLED


def test_an_optimizer_of_another_library_is_not_given_a_torch_name(tmp_path):
    """Param groups with keys no torch optimizer saves (timm's Lamb: bias_correction, grad_averaging, ...)."""
    groups = [{"lr": 0.002, "bias_correction": True, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.02,
               "grad_averaging": True, "max_grad_norm": 1.0, "trust_clip": False, "always_adapt": False,
               "params": [0, 1]}]
    read = checkpoint_training_setup({"optimizer": {"state": {}, "param_groups": groups}}, tmp_path / "x.pt")
    optimizer = read.setup.optimizer
    assert (optimizer.kind, optimizer.kind_basis, optimizer.weight_decay_mode) == (None, None, WeightDecayMode.UNKNOWN)
    assert optimizer.kind_detail.startswith("not recognised from its param_group keys (always_adapt, betas")
    assert read.setup.learning_rates == (0.002,)


def test_a_malformed_optimizer_entry_leaves_the_setup_out_with_a_note_and_the_checkpoint_evaluated(tmp_path):
    def garble(checkpoint):
        if checkpoint["epoch"] == 2:
            checkpoint["optimizer_state_dict"]["param_groups"][0]["lr"] = "fast"
        return checkpoint

    run, observed = own_loop_run(tmp_path, 3, lambda g: torch.optim.SGD(g), None, edit=garble)
    evaluation = _evaluate(run, tmp_path / "report")
    assert [e.epoch for e in evaluation.epochs] == [1, 2, 3] and evaluation.skipped == []
    assert [e.training_setup is None for e in evaluation.epochs] == [False, True, False]
    path = run / "checkpoints" / "epoch_2.pt"
    assert evaluation.notes == [f"{path}: param group 0's lr is a str, not a number; its training setup is left out"]
    _assert_matches(evaluation.epochs[2].training_setup, observed[2])


def test_checkpoints_without_optimizer_state_have_no_setup(tmp_path):
    run, _ = own_loop_run(tmp_path, 2, lambda g: torch.optim.SGD(g), None,
                          edit=lambda c: {"epoch": c["epoch"], "model_state_dict": c["model_state_dict"]})
    evaluation = _evaluate(run, tmp_path / "report")
    assert [e.training_setup for e in evaluation.epochs] == [None, None] and evaluation.notes == []


# ----------------------------------------------------------------------------- timm and torchvision
def _observed_tool_run(save) -> list[Observed]:
    """tools.train_epochs (real SGD, momentum 0.9, StepLR(2)), each epoch saved by `save`, with what the optimizer
    and scheduler reported at the save."""
    observed = []
    model = tools.spec_namespace(tools.TINY_RESNET_SPEC)["build_model"]()
    for epoch, model, ema, optimizer, scheduler in tools.train_epochs(model, 3):
        save(epoch, model, ema, optimizer, scheduler)
        observed.append(Observed(epoch, tuple(g["lr"] for g in optimizer.param_groups),
                                 tuple(g["weight_decay"] for g in optimizer.param_groups),
                                 tuple(scheduler.get_last_lr()), None))
    return observed


def _read_all(run: Path) -> dict[str, TrainingSetup]:
    return {source.name: read_checkpoint(source).training_setup for source in discover_checkpoints(None, run)}


def test_timm_checkpoint_saver_files_with_their_args_namespace(tmp_path):
    args = tools.training_args("test_resnet")
    saver = []

    def save(epoch, model, ema, optimizer, scheduler):
        if not saver:
            saver.append(tools.TimmCheckpointSaver(model, optimizer, args, ema, tmp_path))
        saver[0].save_checkpoint(epoch, metric=float(epoch))

    observed = _observed_tool_run(save)
    setups = _read_all(tmp_path)
    for seen in observed:
        setup = setups[f"checkpoint-{seen.epoch}.pth.tar"]
        assert setup.learning_rates == seen.lrs
        assert (setup.optimizer.kind, setup.optimizer.kind_basis, setup.optimizer.kind_detail) == \
            ("SGD", KindBasis.CONFIG, "args.opt = 'sgd'")
        assert setup.optimizer.weight_decay_mode is WeightDecayMode.NONE     # weight_decay 0 in every group
        assert setup.optimizer.param_groups[0].momentum == 0.9
        assert setup.scheduler is None                                      # timm saves no scheduler state
        configured = setup.configured
        assert (configured.source, configured.optimizer, configured.lr, configured.weight_decay, configured.momentum,
                configured.scheduler) == ("args", "sgd", 0.3, 0.0, 0.9, "step")
        assert setup.sources == ("optimizer", "args")
    assert setups["last.pth.tar"] == setups["checkpoint-2.pth.tar"]


def test_torchvision_reference_checkpoints(tmp_path):
    args = argparse.Namespace(**{k: v for k, v in vars(tools.training_args("resnet18")).items() if k != "sched"})
    observed = _observed_tool_run(lambda epoch, model, ema, optimizer, scheduler: tools.save_like_torchvision(
        tmp_path, model, optimizer, scheduler, ema, epoch, args))
    setups = _read_all(tmp_path)
    for seen in observed:
        setup = setups[f"model_{seen.epoch}.pth"]
        _assert_matches(setup, seen)
        assert (setup.scheduler.kind, setup.scheduler.configured, setup.scheduler.last_epoch) == \
            ("StepLR", "steplr", seen.epoch + 1)
        assert setup.sources == ("optimizer", "lr_scheduler", "args")


# ----------------------------------------------------------------------------- PyTorch Lightning
LIGHTNING_MODULE = '''
import pytorch_lightning as pl
import torch
import torch.nn.functional as F


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = Net()

    def training_step(self, batch, index):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=0.02, weight_decay=1e-4)
        return {"optimizer": optimizer,
                "lr_scheduler": torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1, 2], gamma=0.1)}


class Observe(pl.Callback):
    """What the live optimizer and scheduler hold when each checkpoint is saved."""

    def __init__(self):
        self.seen = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        optimizer = trainer.optimizers[0]
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        self.seen.append((checkpoint["epoch"], [g["lr"] for g in optimizer.param_groups], scheduler.get_last_lr(),
                          max(int(s["step"]) for s in optimizer.state.values())))
'''


def test_lightning_checkpoints(tmp_path):
    if not HAS_LIGHTNING:
        pytest.skip("pytorch_lightning is in the test extra; not installed here")
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    namespace = {"Net": Net}
    exec(LIGHTNING_MODULE, namespace)
    observe = namespace["Observe"]()
    torch.manual_seed(0)
    x, y = validation_tensors(seed=1, n=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                             accelerator="cpu", default_root_dir=tmp_path,
                             callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_top_k=-1),
                                        observe])
        trainer.fit(namespace["Classifier"](), DataLoader(TensorDataset(x, y), batch_size=16))
    setups = {int(name.split("-")[0].split("=")[1]): setup for name, setup in _read_all(tmp_path).items()}
    assert sorted(setups) == [0, 1, 2] and len(observe.seen) == 3
    for epoch, lrs, last_lr, step in observe.seen:
        setup = setups[epoch]
        assert setup.learning_rates == tuple(lrs) and setup.scheduler.last_lr == tuple(last_lr)
        assert (setup.optimizer.kind, setup.optimizer.weight_decay_mode, setup.scheduler.kind) == \
            ("Adam", WeightDecayMode.COUPLED, "MultiStepLR")
        assert setup.optimizer.step == step
        assert setup.sources == ("optimizer_states[0]", "lr_schedulers[0]")
    assert [setups[e].learning_rates[0] for e in (0, 1, 2)] == [observe.seen[i][1][0] for i in range(3)]


# ----------------------------------------------------------------------------- Hugging Face Trainer
def hf_trainer_run(output_dir: Path) -> list[dict]:
    """A real transformers Trainer run (a tiny BERT, no downloads) saving checkpoint-N/ each epoch; returns what
    its optimizer and scheduler held at each save."""
    from torch.utils.data import Dataset
    from transformers import (BertConfig, BertForSequenceClassification, Trainer, TrainerCallback,
                              TrainingArguments)

    class Tokens(Dataset):
        def __init__(self):
            generator = torch.Generator().manual_seed(0)
            self.x, self.y = torch.randint(0, 30, (32, 6), generator=generator), torch.randint(0, 3, (32,),
                                                                                              generator=generator)

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return {"input_ids": self.x[i], "labels": self.y[i]}

    class Observe(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_save(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
            self.seen.append({"step": state.global_step, "lrs": [g["lr"] for g in optimizer.param_groups],
                              "last_lr": lr_scheduler.get_last_lr(), "weight_decays": [g["weight_decay"] for g in
                                                                                        optimizer.param_groups]})

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=16,
                                                     max_position_embeddings=16, num_labels=3))
    args = TrainingArguments(output_dir=str(output_dir), num_train_epochs=3, per_device_train_batch_size=8,
                             learning_rate=1e-3, weight_decay=0.01, warmup_steps=2, lr_scheduler_type="linear",
                             save_strategy="epoch", logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True,
                             seed=0)
    observe = Observe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[observe]).train()
    return observe.seen


def test_hugging_face_trainer_folders(tmp_path):
    if not HAS_HF_TRAINER:
        pytest.skip("transformers and accelerate are in the test extra; not installed here")
    import json

    seen = hf_trainer_run(tmp_path / "out")
    folders = sorted((tmp_path / "out").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [f.name for f in folders] == ["checkpoint-4", "checkpoint-8", "checkpoint-12"] and len(seen) == 3
    setups = _read_all(tmp_path / "out")
    for folder, observed in zip(folders, seen):
        setup = setups[folder.name]
        assert setup.learning_rates == tuple(observed["lrs"]) and setup.scheduler.last_lr == tuple(observed["last_lr"])
        assert tuple(g.weight_decay for g in setup.optimizer.param_groups) == tuple(observed["weight_decays"])
        assert (setup.optimizer.kind, setup.optimizer.kind_basis, setup.optimizer.weight_decay_mode) == \
            ("AdamW", KindBasis.CONFIG, WeightDecayMode.DECOUPLED)
        assert setup.optimizer.kind_detail.startswith("training_args.bin optim = 'adamw")
        assert setup.optimizer.step == observed["step"]
        assert (setup.scheduler.kind, setup.scheduler.configured) == ("LambdaLR or MultiplicativeLR", "linear")
        configured = setup.configured
        assert (configured.lr, configured.weight_decay, configured.scheduler) == (1e-3, 0.01, "linear")
        log = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        assert setup.logged_lr == [e["learning_rate"] for e in log if "learning_rate" in e][-1]
        assert setup.sources == ("optimizer.pt", "scheduler.pt", "training_args.bin", "trainer_state.json")


def _bytes_read() -> int:
    """Bytes this process has read through read() calls (a memory map's pages do not count)."""
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["rchar"])


def test_hugging_face_optimizer_state_is_memory_mapped(tmp_path):
    """optimizer.pt's moment tensors are mapped, not read (a 200 MB AdamW state took 0.035 s mapped, 0.44-0.77 s
    read): reading it maps them, and the values are the same."""
    if not Path("/proc/self/io").is_file():
        pytest.skip("/proc/self/io (Linux) counts the bytes a process reads")
    model = torch.nn.Linear(1024, 1024)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 1024)).sum().backward()
    optimizer.step()
    path = tmp_path / "optimizer.pt"
    torch.save(optimizer.state_dict(), path)
    size = path.stat().st_size                                   # about 8 MB of moments
    before = _bytes_read()
    mapped = load_torch_data(path, mmap=True)
    mapped_bytes, before = _bytes_read() - before, _bytes_read()
    read = load_torch_data(path)
    read_bytes = _bytes_read() - before
    assert read_bytes > size and mapped_bytes < size / 20
    assert torch.equal(mapped["state"][0]["exp_avg"], read["state"][0]["exp_avg"])
    assert mapped["param_groups"] == read["param_groups"]


# ----------------------------------------------------------------------------- predictions files
def test_predictions_file_keys(tmp_path):
    import numpy as np

    path = tmp_path / "epoch_1.npz"
    read = predictions_training_setup({"lr": np.array([0.1, 0.01]), "optimizer": np.array("AdamW"),
                                       "weight_decay": np.array(0.05)}, path)
    optimizer = read.setup.optimizer
    assert read.setup.learning_rates == (0.1, 0.01)
    assert [g.weight_decay for g in optimizer.param_groups] == [0.05, 0.05]
    assert (optimizer.kind, optimizer.kind_basis, optimizer.weight_decay_mode) == \
        ("AdamW", KindBasis.NAMED, WeightDecayMode.DECOUPLED)
    only_lr = predictions_training_setup({"lr": 0.3}, path).setup
    assert only_lr.learning_rates == (0.3,) and only_lr.optimizer.kind is None
    assert only_lr.optimizer.weight_decay_mode is WeightDecayMode.UNKNOWN
    assert predictions_training_setup({"outputs": 1}, path).setup is None
    bad = predictions_training_setup({"lr": np.array(["fast"])}, path)
    assert bad.setup is None and bad.problem.startswith(f"{path}: 'lr' holds <U4 values")
    mismatch = predictions_training_setup({"lr": [0.1, 0.2], "weight_decay": [0.0, 0.1, 0.2]}, path)
    assert mismatch.problem == (f"{path}: 'lr' and 'weight_decay' give 2 and 3 param groups; its training setup is "
                                "left out")

