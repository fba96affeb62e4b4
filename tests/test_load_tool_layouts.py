"""Runs saved the way timm, torchvision's reference scripts, PyTorch Lightning (with omegaconf hyper-parameters
and its EMA callback), Hugging Face and torch.save(model) save them: found with no --checkpoints, read with no
flag and no code run, copies left out, and evaluated to exactly the metrics.json of the same weights saved as
bare state_dicts (every number compared with ==).
"""
from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

import _tool_runs as tools
from _fixtures_inputs import SPEC_SOURCE, Net, make_run, report, trained_models, validation_tensors
from postmortem.config import build_config
from postmortem.evaluate.runner import evaluate_run

HAS_LIGHTNING = importlib.util.find_spec("pytorch_lightning") is not None
HAS_OMEGACONF = importlib.util.find_spec("omegaconf") is not None
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def _timm_import_problem() -> str | None:
    try:
        import timm  # noqa: F401
    except Exception as exc:   # not installed, or its torchvision import fails against this torch
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


SETUP_WORDED = ("summary", "next_steps", "sentences")     # texts that word the training setup (weight decay, LR events)


def _without_names(value):
    """metrics.json with the checkpoint file names taken out (the two runs name their files differently), the files
    not read (the tools write logs beside their checkpoints, the twin does not) and the training setup with what it
    alone decides: the LR events the rise is tied to and the texts that name the optimizer (the bare twin saves no
    optimizer state: tests/test_load_training_setup.py reads it, tests/test_diagnose_lr_events.py words it). Every
    number, class, id and cause stays compared."""
    if isinstance(value, dict):
        return {k: _without_names(v) for k, v in value.items()
                if k not in ("checkpoint", "skipped", "training_setup", "lr_events", "not_read", "training_events")
                + SETUP_WORDED}
    if isinstance(value, list):
        return [_without_names(v) for v in value
                if not (isinstance(v, dict) and v.get("id") == "rise_after_lr_event")]
    return value


def bare_twin(root: Path, spec: str, data: dict, states: dict[int, dict]) -> Path:
    """The same weights as bare state_dict files epoch_N.pt, beside the same spec and data."""
    run = root / "bare"
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(spec)
    torch.save(data, run / "val.pt")
    for epoch, state in states.items():
        torch.save(state, run / "checkpoints" / f"epoch_{epoch}.pt")
    return run


def metrics_json(run: Path, out: Path, **options) -> dict:
    """metrics.json as write_report builds it (evaluate, analyze, diagnose, metrics_document), without drawing
    the figures and HTML that the comparison does not need."""
    from postmortem.analyze.run import analyze_run
    from postmortem.diagnose import DiagnosisConfig, diagnose
    from postmortem.render.metrics_json import metrics_document

    evaluation = evaluate_run(build_config(run, {}, {"data": str(run / "val.pt"), "quiet": True, "out": str(out),
                                                     **options}))
    analysis = analyze_run(evaluation, tuple(str(i) for i in range(evaluation.n_classes)))
    document = metrics_document(analysis, diagnose(analysis), evaluation.skipped, DiagnosisConfig().max_listed_items)
    return json.loads(json.dumps(document))


def assert_same_metrics(run: Path, twin: Path, capsys, *args: str, end_to_end: bool = False) -> dict:
    """The run's metrics.json equals its bare twin's, number for number; `end_to_end` runs the CLI for the run."""
    if end_to_end:
        code, err, metrics = report(run, "--data", str(run / "val.pt"), *args, out=run.parent / "report-run",
                                    capsys=capsys)
        assert code == 0, err
    else:
        options = dict(zip((a.lstrip("-") for a in args[::2]), args[1::2]))
        metrics = metrics_json(run, run.parent / "report-run", **options)
    assert _without_names(metrics) == _without_names(metrics_json(twin, twin.parent / "report-twin"))
    return metrics


def _image_data() -> dict:
    x, y = tools.images(seed=7)
    return {"inputs": x, "labels": y}


# ----------------------------------------------------------------------------- timm
@pytest.fixture(scope="module")
def timm_run(tmp_path_factory):
    """checkpoint-N.pth.tar, last.pth.tar and model_best.pth.tar as timm's CheckpointSaver writes them into the
    experiment folder (output/train/EXPERIMENT/, beside timm's args.yaml and summary.csv)."""
    root = tmp_path_factory.mktemp("timm")
    run = root / "output" / "train" / "20240101-000000-test_resnet"
    run.mkdir(parents=True)
    (run / "args.yaml").write_text("model: test_resnet\nlr: 0.3\n")
    (run / "summary.csv").write_text("epoch,train_loss,eval_loss,eval_top1\n0,1.1,1.0,40.0\n")
    (run / "postmortem_spec.py").write_text(tools.TINY_RESNET_SPEC)
    torch.save(_image_data(), run / "val.pt")
    model = tools.spec_namespace(tools.TINY_RESNET_SPEC)["build_model"]()
    states, ema_states, saver = {}, {}, None
    for epoch, model, ema, optimizer, _ in tools.train_epochs(model, 3):
        saver = saver or tools.TimmCheckpointSaver(model, optimizer, tools.training_args("test_resnet"), ema, run)
        saver.save_checkpoint(epoch, metric=[0.5, 0.7, 0.6][epoch])    # epoch 1 stays the best
        states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        ema_states[epoch] = {k: v.clone() for k, v in ema.module.state_dict().items()}
    return run, states, ema_states


def test_timm_checkpoints_are_found_read_without_a_flag_and_copies_left_out(timm_run, capsys, tmp_path):
    run, states, _ = timm_run
    assert sorted(p.name for p in run.glob("*.tar")) == [
        "checkpoint-0.pth.tar", "checkpoint-1.pth.tar", "checkpoint-2.pth.tar", "last.pth.tar", "model_best.pth.tar"]
    with pytest.raises(Exception, match="argparse.Namespace"):   # what every tool refused before
        torch.load(run / "checkpoint-0.pth.tar", weights_only=True)
    twin = bare_twin(tmp_path, tools.TINY_RESNET_SPEC, _image_data(), states)
    metrics = assert_same_metrics(run, twin, capsys, end_to_end=True)
    assert [e["checkpoint"] for e in metrics["epochs"]] == ["checkpoint-0.pth.tar", "checkpoint-1.pth.tar",
                                                             "checkpoint-2.pth.tar"]
    assert {s["checkpoint"]: s["error"].split(": ", 1)[1] for s in metrics["skipped"]} == {
        "last.pth.tar": "same content as checkpoint-2.pth.tar; left out as a duplicate",
        "model_best.pth.tar": "same content as checkpoint-1.pth.tar; left out as a duplicate"}


def test_timm_ema_weights(timm_run, capsys, tmp_path):
    run, _, ema_states = timm_run
    twin = bare_twin(tmp_path, tools.TINY_RESNET_SPEC, _image_data(), ema_states)
    assert_same_metrics(run, twin, capsys, "--weights", "ema")
    evaluation = evaluate_run(build_config(run, {}, {"data": str(run / "val.pt"), "quiet": True,
                                                     "out": str(tmp_path / "default")}))
    assert (evaluation.weights.used, evaluation.weights.n_with_other, evaluation.weights.n_checkpoints) == ("model", 3, 3)
    assert ("weights evaluated: the model's own weights (--weights model); all 3 checkpoints also hold EMA weights: "
            "--weights ema evaluates those") in evaluation.notes
    # the report's provenance says which weights were evaluated and that the other kind exists
    code, err, _ = report(run, "--data", str(run / "val.pt"), out=tmp_path / "html", capsys=capsys)
    assert code == 0, err
    page = " ".join((tmp_path / "html" / "report.html").read_text().split())
    assert ("<td>weights evaluated</td><td class=\"mono\" style=\"text-align:left\">the model&#39;s own (--weights model); EMA weights also in 3 of "
            "3 checkpoints (--weights ema)</td>") in page


def test_an_explicit_glob_is_taken_as_given(timm_run, capsys, tmp_path):
    run, _, _ = timm_run
    code, err, metrics = report(run, "--data", str(run / "val.pt"), "--checkpoints", str(run / "*.pth.tar"),
                                out=tmp_path / "report", capsys=capsys)
    assert code == 0, err
    assert len(metrics["epochs"]) == 3 and len(metrics["skipped"]) == 2


def test_a_timm_checkpoint_without_a_model_names_timm_or_model(timm_run, capsys, tmp_path):
    run, _, _ = timm_run
    problem = _timm_import_problem()
    if problem is None:
        pytest.skip("timm imports here; test_real_timm_builds_the_model covers it")
    spec_less = run.parent / "spec-less"
    (spec_less / "checkpoints").mkdir(parents=True)
    (spec_less / "checkpoints" / "checkpoint-0.pth.tar").write_bytes((run / "checkpoint-0.pth.tar").read_bytes())
    code, err, _ = report(spec_less, "--data", str(run / "val.pt"), out=tmp_path / "r2", capsys=capsys)
    assert code == 2
    [line] = err.strip().splitlines()
    assert line == (f"postmortem: error: {spec_less / 'checkpoints' / 'checkpoint-0.pth.tar'}: names the timm "
                    f"architecture 'test_resnet', but timm does not import here ({problem}); install timm to build it, "
                    "or pass --model FILE.py:FUNC or define build_model() in postmortem_spec.py")


def test_real_timm_builds_the_model_from_the_checkpoint(tmp_path, capsys):
    problem = _timm_import_problem()
    if problem is not None:
        pytest.skip(f"timm does not import here ({problem}); its checkpoints are tested in timm's own layout above")
    import timm

    spec = "import timm\n\ndef build_model():\n    return timm.create_model('test_resnet', num_classes=3)\n"
    run = tmp_path / "run"
    run.mkdir()
    data = {"inputs": torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(3)),
            "labels": torch.randint(0, 3, (24,), generator=torch.Generator().manual_seed(4))}
    torch.save(data, run / "val.pt")
    model = timm.create_model("test_resnet", num_classes=3)
    states, saver = {}, None
    for epoch in range(2):
        torch.manual_seed(epoch)
        for p in model.parameters():
            p.data.add_(0.01 * torch.randn_like(p))
        saver = saver or tools.TimmCheckpointSaver(model.eval(), torch.optim.SGD(model.parameters(), lr=0.1),
                                                   tools.training_args("test_resnet"), None, run)
        saver.save_checkpoint(epoch)
        states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
    assert_same_metrics(run, bare_twin(tmp_path, spec, data, states), capsys)   # no spec in run: zero-config


# ----------------------------------------------------------------------------- torchvision's reference scripts
def test_torchvision_reference_checkpoints_and_their_ema(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "postmortem_spec.py").write_text(tools.TINY_RESNET_SPEC)
    torch.save(_image_data(), run / "val.pt")
    args = tools.training_args("resnet18")
    states, ema_states = {}, {}
    model = tools.spec_namespace(tools.TINY_RESNET_SPEC)["build_model"]()
    for epoch, model, ema, optimizer, scheduler in tools.train_epochs(model, 3, seed=1):
        tools.save_like_torchvision(run, model, optimizer, scheduler, ema, epoch, args)
        states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        ema_states[epoch] = {k: v.clone() for k, v in ema.module.state_dict().items()}
    metrics = assert_same_metrics(run, bare_twin(tmp_path / "model", tools.TINY_RESNET_SPEC, _image_data(), states),
                                  capsys)
    assert [e["checkpoint"] for e in metrics["epochs"]] == ["model_0.pth", "model_1.pth", "model_2.pth"]
    [copy] = metrics["skipped"]
    assert copy["checkpoint"] == "checkpoint.pth" and copy["error"].endswith("; left out as a duplicate")
    assert_same_metrics(run, bare_twin(tmp_path / "ema", tools.TINY_RESNET_SPEC, _image_data(), ema_states), capsys,
                        "--weights", "ema")


# ----------------------------------------------------------------------------- PyTorch Lightning
LIGHTNING_MODULE = '''
import pytorch_lightning as pl
import torch
import torch.nn.functional as F


class Classifier(pl.LightningModule):
    def __init__(self, cfg):
        super().__init__()
        self.save_hyperparameters(cfg)           # an omegaconf DictConfig, as Hydra users pass it
        self.model = Net()

    def training_step(self, batch, index):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.optim.lr)
'''


@pytest.fixture(scope="module")
def lightning_ema_run(tmp_path_factory):
    """A real Lightning run: DictConfig hyper-parameters and the EMAWeightAveraging callback."""
    if not (HAS_LIGHTNING and HAS_OMEGACONF):
        pytest.skip("pytorch_lightning and omegaconf are in the test extra; not installed here")
    import pytorch_lightning as pl
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader, TensorDataset

    root = tmp_path_factory.mktemp("lightning-ema")
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(SPEC_SOURCE)
    x, y = validation_tensors()
    torch.save({"inputs": x, "labels": y}, run / "val.pt")
    namespace = {"Net": Net}
    exec(LIGHTNING_MODULE, namespace)
    torch.manual_seed(0)
    train_x, train_y = validation_tensors(seed=1, n=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                             accelerator="cpu", default_root_dir=root,
                             callbacks=[pl.callbacks.ModelCheckpoint(dirpath=run / "checkpoints", save_top_k=-1,
                                                                     save_last=True),
                                        pl.callbacks.EMAWeightAveraging(decay=0.5)])
        trainer.fit(namespace["Classifier"](OmegaConf.create({"optim": {"lr": 0.5}, "data": {"batch": 16}})),
                    DataLoader(TensorDataset(train_x, train_y), batch_size=16))
    return run


def _lightning_states(run: Path, key: str) -> dict[int, dict]:
    """The test's own reading (with the classes importable): the `key` weights of each epoch=N checkpoint."""
    states = {}
    for path in sorted((run / "checkpoints").glob("epoch=*.ckpt")):
        checkpoint = torch.load(path, weights_only=False)
        states[checkpoint["epoch"]] = {k[len("model."):]: v for k, v in checkpoint[key].items()}
    return states


def test_lightning_with_omegaconf_hyperparameters_needs_no_flag(lightning_ema_run, capsys, tmp_path):
    from omegaconf import DictConfig

    run = lightning_ema_run
    path = next((run / "checkpoints").glob("epoch=0-*.ckpt"))
    assert isinstance(torch.load(path, weights_only=False)["hyper_parameters"], DictConfig)
    with pytest.raises(Exception, match="omegaconf"):           # the refusal Hydra users meet since torch 2.6
        torch.load(path, weights_only=True)
    omegaconf_modules = {name for name in sys.modules if name.startswith("omegaconf")}
    twin = bare_twin(tmp_path, SPEC_SOURCE, torch.load(run / "val.pt"), _lightning_states(run, "current_model_state"))
    metrics = assert_same_metrics(run, twin, capsys)
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2]
    assert [s["checkpoint"] for s in metrics["skipped"]] == ["last.ckpt"]
    assert {name for name in sys.modules if name.startswith("omegaconf")} == omegaconf_modules


def test_lightning_ema_callback_weights(lightning_ema_run, capsys, tmp_path):
    """EMAWeightAveraging stores the average under state_dict and the model's own under current_model_state."""
    run = lightning_ema_run
    twin = bare_twin(tmp_path, SPEC_SOURCE, torch.load(run / "val.pt"), _lightning_states(run, "state_dict"))
    assert_same_metrics(run, twin, capsys, "--weights", "ema")


# ----------------------------------------------------------------------------- torch.save(model)
# The network, as the training code defines it and as the user's spec defines it again.
WHOLE_NET = '''
import torch
from torch import nn


class WholeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
        self.register_buffer("scratch", torch.zeros(3), persistent=False)

    def forward(self, x):
        return self.body(x) + self.scratch
'''
# The training code's module also writes a marker whenever its code runs on unpickling.
WHOLE_MODULE_SOURCE = WHOLE_NET + '''
    def __setstate__(self, state):
        from pathlib import Path

        Path(MARKER).write_text("WholeNet code ran")
        super().__setstate__(state)


MARKER = None   # set by the test
'''
WHOLE_SPEC = WHOLE_NET + '''

def build_model():
    return WholeNet()
'''


def test_whole_pickled_modules_whose_class_cannot_be_imported(tmp_path, capsys, monkeypatch):
    """torch.save(model) files (zip and legacy) of a class in a module that is gone when postmortem reads them."""
    source_dir = tmp_path / "training_code"
    source_dir.mkdir()
    (source_dir / "whole_net_model.py").write_text(WHOLE_MODULE_SOURCE)
    monkeypatch.syspath_prepend(str(source_dir))
    import whole_net_model

    marker = tmp_path / "code-ran"
    whole_net_model.MARKER = str(marker)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(WHOLE_SPEC)
    x, y = validation_tensors()
    torch.save({"inputs": x, "labels": y}, run / "val.pt")
    states = {}
    for epoch, trained in enumerate(trained_models(3), start=1):
        model = whole_net_model.WholeNet()
        torch.manual_seed(epoch)
        model.body[0].load_state_dict(trained.body[0].state_dict())
        model.body[1].running_mean.uniform_(-0.5, 0.5)
        model.body[3].load_state_dict(trained.body[2].state_dict())
        model.eval()
        torch.save(model, run / "checkpoints" / f"epoch_{epoch}.pt", _use_new_zipfile_serialization=epoch != 2)
        states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
    torch.load(run / "checkpoints" / "epoch_1.pt", weights_only=False)      # the control: unpickling runs its code
    assert marker.read_text() == "WholeNet code ran"
    marker.unlink()
    sys.modules.pop("whole_net_model")
    sys.path.remove(str(source_dir))
    (source_dir / "whole_net_model.py").unlink()
    importlib.invalidate_caches()
    assert importlib.util.find_spec("whole_net_model") is None
    assert "scratch" not in states[1]                            # the non-persistent buffer is not in a state_dict
    assert_same_metrics(run, bare_twin(tmp_path, WHOLE_SPEC, {"inputs": x, "labels": y}, states), capsys)
    assert not marker.exists()


# ----------------------------------------------------------------------------- Hugging Face, no model code
def test_hugging_face_folders_build_their_model_from_config_json(tmp_path, capsys):
    if not HAS_TRANSFORMERS:
        pytest.skip("transformers is in the test extra; not installed here")
    from transformers import BertConfig, BertForSequenceClassification

    spec = ("from transformers import BertConfig, BertForSequenceClassification\n\ndef build_model():\n"
            "    return BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, "
            "num_attention_heads=2, intermediate_size=16, max_position_embeddings=16, num_labels=3))\n")
    run = tmp_path / "run"
    run.mkdir()
    generator = torch.Generator().manual_seed(5)
    data = {"inputs": {"input_ids": torch.randint(0, 30, (24, 6), generator=generator)},
            "labels": torch.randint(0, 3, (24,), generator=generator)}
    torch.save(data, run / "val.pt")
    states = {}
    for step in (5, 10):
        torch.manual_seed(step)
        model = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                                         num_attention_heads=2, intermediate_size=16,
                                                         max_position_embeddings=16, num_labels=3))
        model.save_pretrained(run / f"checkpoint-{step}")
        states[step] = model.state_dict()
    assert not (run / "postmortem_spec.py").exists()
    assert_same_metrics(run, bare_twin(tmp_path, spec, data, states), capsys)


# ----------------------------------------------------------------------------- discovery by content
def test_torch_data_under_any_name_is_found_and_other_files_are_not(tmp_path):
    def save(model, epoch, path):
        names = {1: "epoch1", 2: "epoch2.pkl", 3: "epoch3.tar"}
        torch.save({"epoch": epoch, "state_dict": model.state_dict()}, path.parent / names[epoch])

    run, _ = make_run(tmp_path, n_epochs=3, save=save)
    import pickle
    (run / "checkpoints" / "notes.pkl").write_bytes(pickle.dumps({"not": "torch"}))
    (run / "checkpoints" / "README").write_text("not a checkpoint")
    evaluation = evaluate_run(build_config(run, {}, {"data": str(run / "val.pt"), "quiet": True,
                                                     "out": str(tmp_path / "report")}))
    assert [(e.checkpoint, e.epoch) for e in evaluation.epochs] == [("epoch1", 1), ("epoch2.pkl", 2), ("epoch3.tar", 3)]
    assert evaluation.skipped == []


def test_a_file_list_is_taken_as_given_and_what_is_not_a_checkpoint_is_skipped(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=2)
    notes = run / "checkpoints" / "notes.txt"
    notes.write_text("epoch 3 was lost")
    code, err, metrics = report(run, "--data", str(run / "val.pt"), "--checkpoints",
                                str(run / "checkpoints" / "epoch_1.pt"), str(run / "checkpoints" / "epoch_2.pt"),
                                str(notes), capsys=capsys)
    assert code == 0, err
    assert [e["checkpoint"] for e in metrics["epochs"]] == ["epoch_1.pt", "epoch_2.pt"]
    [skipped] = metrics["skipped"]
    assert skipped["error"] == (f"{notes}: not a checkpoint: not a zip archive (torch.save), a pickle (legacy "
                                "torch.save) or a safetensors file (it starts with b'epoch 3 ')")


# ----------------------------------------------------------------------------- --weights
def test_weights_option_from_postmortem_toml_and_checkpoints_without_ema(tmp_path, capsys):
    from postmortem.config import read_config_file

    run, _ = make_run(tmp_path, n_epochs=2)
    (run / "postmortem.toml").write_text('data = "val.pt"\nweights = "ema"\n')
    assert build_config(run, read_config_file(run), {}).weights == "ema"
    code, err, _ = report(run, capsys=capsys)
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.endswith("epoch_1.pt: holds no ema weights, only model weights; pass --weights model to evaluate "
                         "those (the same for all 2 checkpoints)")
    (run / "postmortem.toml").write_text('weights = "average"\n')
    code, err, _ = report(run, capsys=capsys)
    assert code == 2 and err.strip() == "postmortem: error: option 'weights': expected one of model, ema, got 'average'"
