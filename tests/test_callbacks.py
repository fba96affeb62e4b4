"""Issue 17, item 1: validation outputs written during training (a Lightning Callback, a Hugging Face
TrainerCallback, save_predictions for a loop of one's own) in the --predictions format.

Every run here trains for real (PyTorch Lightning's and transformers' own Trainer loops on tiny models, no
downloads) and keeps its checkpoints too: the report from the written files must equal, number for number, the
report from re-evaluating those checkpoints (metrics.json compared with ==).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _fixtures_inputs import SPEC_SOURCE, Net, report, validation_tensors
from postmortem import save_predictions
from postmortem.errors import ConfigError, DataError

HAS_LIGHTNING = importlib.util.find_spec("pytorch_lightning") is not None
HAS_TRAINER = all(importlib.util.find_spec(name) is not None for name in ("transformers", "accelerate"))
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _without_names(value):
    """metrics.json less the file names (checkpoints and predictions files are named differently) and the training
    setup, which a predictions file records in fewer fields than a checkpoint (its learning rates are compared apart)."""
    if isinstance(value, dict):
        return {k: _without_names(v) for k, v in value.items() if k not in ("checkpoint", "skipped", "training_setup")}
    if isinstance(value, list):
        return [_without_names(v) for v in value]
    return value


def _reports(run: Path, predictions: Path, capsys, *model_options: str, both: tuple[str, ...] = ()):
    """metrics.json of the run's checkpoints and of its predictions files (`both`: options for each)."""
    code, err, from_checkpoints = report(run, *model_options, *both, out=run.parent / "from-checkpoints",
                                         capsys=capsys)
    assert code == 0, err
    code, err, from_files = report(run, "--predictions", str(predictions), *both, out=run.parent / "from-files",
                                   capsys=capsys)
    assert code == 0, err
    assert from_checkpoints["skipped"] == [] and from_files["skipped"] == []
    return from_checkpoints, from_files


def _same_report(run: Path, predictions: Path, capsys, *model_options: str, both: tuple[str, ...] = ()) -> dict:
    """The two reports of `_reports`, which must be equal."""
    from_checkpoints, from_files = _reports(run, predictions, capsys, *model_options, both=both)
    assert _without_names(from_files) == _without_names(from_checkpoints)
    for file_epoch, checkpoint_epoch in zip(from_files["epochs"], from_checkpoints["epochs"]):
        if _learning_rates(checkpoint_epoch) is not None:    # a checkpoint without optimizer state says nothing
            assert _learning_rates(file_epoch) == _learning_rates(checkpoint_epoch)
    return from_files


def _learning_rates(epoch: dict) -> list | None:
    setup = epoch.get("training_setup")
    if setup is None or setup.get("optimizer") is None:
        return None
    return [group["lr"] for group in setup["optimizer"]["param_groups"]]


# ----------------------------------------------------------------------------- PyTorch Lightning
def _lightning_run(root: Path, validation_step: str, float16: bool = False, epochs: int = 4):
    """A Lightning fit: ModelCheckpoint every epoch beside the writer; SGD with two parameter groups (weight decay
    on the first) and a StepLR that halves the lr each epoch."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from postmortem.callbacks import LightningPredictionsWriter

    class Classifier(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = Net()

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, index):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def validation_step(self, batch, index):
            x, y = batch
            if validation_step == "returns":
                return {"logits": self.model(x), "labels": y}
            self.log("val_loss", F.cross_entropy(self(x), y))     # returns nothing: the writer hooks forward

        def configure_optimizers(self):
            optimizer = torch.optim.SGD([{"params": self.model.body[0].parameters(), "weight_decay": 1e-3},
                                         {"params": self.model.body[2].parameters()}], lr=0.5)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)]

    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(SPEC_SOURCE)
    x, y = validation_tensors()
    torch.save({"inputs": x, "labels": y}, run / "val.pt")
    torch.manual_seed(0)
    train_x, train_y = validation_tensors(seed=1, n=64)
    writer = LightningPredictionsWriter(root / "predictions", float16=float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                             accelerator="cpu", default_root_dir=root,
                             callbacks=[pl.callbacks.ModelCheckpoint(dirpath=run / "checkpoints", save_top_k=-1),
                                        writer])
        trainer.fit(Classifier(), DataLoader(TensorDataset(train_x, train_y), batch_size=16),
                    DataLoader(TensorDataset(x, y), batch_size=16))
    return run, writer


@pytest.mark.skipif(not HAS_LIGHTNING, reason="pytorch_lightning is in the test extra; not installed here")
@pytest.mark.parametrize("validation_step", ["returns", "logs_only"])
def test_lightning_writer_gives_the_report_of_the_checkpoints(tmp_path, capsys, validation_step):
    run, writer = _lightning_run(tmp_path, validation_step)
    predictions = tmp_path / "predictions"
    names = sorted(p.name for p in predictions.iterdir())
    assert names == ["epoch_0-step_4.npz", "epoch_1-step_8.npz", "epoch_2-step_12.npz", "epoch_3-step_16.npz"]
    assert [p.name for p in writer.written] == names                          # not the sanity check's batches
    for path in writer.written:
        stored = torch.load(run / "checkpoints" / path.name.replace("_", "=").replace(".npz", ".ckpt"),
                            weights_only=False)
        content = np.load(path, allow_pickle=False)
        assert int(content["epoch"]) == stored["epoch"] and int(content["global_step"]) == stored["global_step"]
        groups = stored["optimizer_states"][0]["param_groups"]
        assert content["lr"].dtype == np.float64
        assert content["lr"].tolist() == [g["lr"] for g in groups]           # as the checkpoint saved then holds
        assert content["weight_decay"].tolist() == [1e-3, 0.0]
        assert str(content["optimizer"]) == "SGD"
        assert content["outputs"].dtype == np.float32 and content["outputs"].shape == (40, 3)
    assert [float(np.load(p)["lr"][0]) for p in writer.written] == [0.25, 0.125, 0.0625, 0.03125]
    metrics = _same_report(run, predictions, capsys, "--data", str(run / "val.pt"), "--batch-size", "16")
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2, 3]


@pytest.mark.skipif(not HAS_LIGHTNING, reason="pytorch_lightning is in the test extra; not installed here")
def test_lightning_writer_float16_halves_the_outputs_and_moves_the_numbers_little(tmp_path, capsys):
    run, writer = _lightning_run(tmp_path, "returns", float16=True, epochs=2)
    for path in writer.written:
        assert np.load(path)["outputs"].dtype == np.float16
    code, err, full = report(run, "--data", str(run / "val.pt"), "--batch-size", "16", out=tmp_path / "a",
                             capsys=capsys)
    assert code == 0, err
    code, err, half = report(run, "--predictions", str(tmp_path / "predictions"), out=tmp_path / "b", capsys=capsys)
    assert code == 0, err
    for a, b in zip(full["epochs"], half["epochs"]):
        assert b["loss"] == pytest.approx(a["loss"], abs=2e-3) and b["accuracy"] == a["accuracy"]


@pytest.mark.skipif(not HAS_LIGHTNING, reason="pytorch_lightning is in the test extra; not installed here")
def test_lightning_writer_says_what_is_missing_in_one_line(tmp_path):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from postmortem.callbacks import LightningPredictionsWriter

    class NoForward(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = Net()

        def validation_step(self, batch, index):
            return F.cross_entropy(self.model(batch[0]), batch[1])

    x, y = validation_tensors()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                             default_root_dir=tmp_path, callbacks=[LightningPredictionsWriter(tmp_path / "p")])
        with pytest.raises(DataError) as error:
            trainer.validate(NoForward(), DataLoader(TensorDataset(x, y), batch_size=16))
    assert str(error.value) == (
        "LightningPredictionsWriter: validation batch 0: validation_step returned a Tensor and the LightningModule's "
        "forward was not called; return {'logits': ..., 'labels': ...} from validation_step, or call self(x) in it")
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- Hugging Face Trainer
TINY_BERT = dict(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                 max_position_embeddings=16)


def _trainer_arguments(output_dir: Path, **overrides):
    from transformers import TrainingArguments

    settings = dict(output_dir=str(output_dir), eval_strategy="epoch", save_strategy="epoch", num_train_epochs=3,
                    per_device_train_batch_size=16, per_device_eval_batch_size=8, learning_rate=1e-2,
                    weight_decay=0.01, report_to=[], use_cpu=True, logging_strategy="no", disable_tqdm=True, seed=0)
    return TrainingArguments(**{**settings, **overrides})


@pytest.fixture
def offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.mark.skipif(not HAS_TRAINER, reason="transformers and accelerate are in the test extra; not installed here")
def test_hugging_face_writer_gives_the_report_of_the_checkpoints(tmp_path, capsys, offline_hub):
    from transformers import BertConfig, BertForSequenceClassification, Trainer

    from postmortem.callbacks import HFPredictionsWriter

    run = tmp_path / "run"
    run.mkdir()
    generator = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 30, (88, 6), generator=generator)
    items = [{"input_ids": t, "labels": int(t[0] % 3)} for t in tokens]
    train, val = items[:64], items[64:]
    torch.save({"inputs": {"input_ids": tokens[64:]}, "labels": torch.tensor([v["labels"] for v in val])},
               run / "val.pt")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**TINY_BERT, num_labels=3))
    ids = [f"review-{i}" for i in range(len(val))]
    writer = HFPredictionsWriter(tmp_path / "predictions", ids=ids)
    trainer = Trainer(model=model, args=_trainer_arguments(run), train_dataset=train, eval_dataset=val,
                      callbacks=[writer])
    trainer.train()
    trainer.predict(val)                                                     # not an evaluation: nothing written
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == \
        ["epoch_1-step_4.npz", "epoch_2-step_8.npz", "epoch_3-step_12.npz"]
    for path in writer.written:
        content = np.load(path, allow_pickle=False)
        state = json.loads((run / f"checkpoint-{int(content['global_step'])}" / "trainer_state.json").read_text())
        assert int(content["epoch"]) == state["epoch"]
        assert str(content["optimizer"]) == "AdamW" and content["weight_decay"].tolist() == [0.01, 0.0]
        saved = torch.load(run / f"checkpoint-{int(content['global_step'])}" / "optimizer.pt", weights_only=True)
        assert content["lr"].tolist() == [g["lr"] for g in saved["param_groups"]]
        assert content["ids"].tolist() == ids
    logged = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    metrics = _same_report(run, tmp_path / "predictions", capsys, "--data", str(run / "val.pt"), "--batch-size", "8",
                           both=("--train-log", str(run / "checkpoint-12" / "trainer_state.json")))
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert not [f for f in metrics["findings"] if f["id"] == "logged_loss_mismatch"]
    assert [e["loss"] for e in metrics["epochs"]] == pytest.approx(logged, rel=1e-6)   # the Trainer's own loss


class _PadPerBatch:
    """Pads each batch of token sequences to its own longest (labels -100 and attention 0 beyond the end)."""

    def __call__(self, features):
        longest = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": torch.zeros(len(features), longest, dtype=torch.long),
                 "attention_mask": torch.zeros(len(features), longest, dtype=torch.long),
                 "labels": torch.full((len(features), longest), -100, dtype=torch.long)}
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            batch["input_ids"][i, :n] = f["input_ids"]
            batch["attention_mask"][i, :n] = 1
            batch["labels"][i, :n] = f["labels"]
        return batch


@pytest.mark.skipif(not HAS_TRAINER, reason="transformers and accelerate are in the test extra; not installed here")
def test_hugging_face_token_labels_of_different_lengths_are_padded_with_a_mask(tmp_path, capsys, offline_hub):
    """Token classification with batches padded to their own length (5, 8, 3 steps): the written file pads them
    to one length with a mask, and its report equals that of the checkpoints evaluated batch by batch."""
    from transformers import BertConfig, BertForTokenClassification, Trainer

    from postmortem.callbacks import HFPredictionsWriter

    run = tmp_path / "run"
    run.mkdir()
    generator = torch.Generator().manual_seed(3)

    def sentence(length):
        tokens = torch.randint(1, 30, (length,), generator=generator)
        return {"input_ids": tokens, "labels": tokens % 4}

    train = [sentence(int(n)) for n in torch.randint(2, 9, (48,), generator=generator)]
    val = [sentence(n) for n in (5, 2, 4, 5, 8, 6, 1, 3, 3, 2, 1, 3)]
    collate = _PadPerBatch()
    batches = [collate(val[start:start + 4]) for start in range(0, len(val), 4)]
    torch.save([{"inputs": {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]},
                 "labels": b["labels"]} for b in batches], run / "val.pt")
    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(**TINY_BERT, num_labels=4))
    writer = HFPredictionsWriter(tmp_path / "predictions")
    Trainer(model=model, args=_trainer_arguments(run, num_train_epochs=2, per_device_eval_batch_size=4),
            train_dataset=train, eval_dataset=val, data_collator=collate, callbacks=[writer]).train()
    content = np.load(writer.written[0])
    assert content["outputs"].shape == (12, 8, 4) and content["labels"].shape == (12, 8)
    lengths = [len(v["input_ids"]) for v in val]
    assert content["mask"].sum(axis=1).tolist() == [5] * 4 + [8] * 4 + [3] * 4     # each batch's own length
    assert ((content["labels"] != -100) & (content["mask"] == 1)).sum(axis=1).tolist() == lengths
    # The Trainer's eval_loss is a mean of per-batch means, not the loss over the tokens: both reports say so
    # (the checkpoints' report also names that reduction; a predictions file has no batches to name it by).
    from_checkpoints, from_files = _reports(run, tmp_path / "predictions", capsys, "--data", str(run / "val.pt"),
                                            both=("--train-log", str(run / "checkpoint-6" / "trainer_state.json")))
    for metrics in (from_checkpoints, from_files):
        assert [f["id"] for f in metrics["findings"]] == ["logged_loss_mismatch"]
        assert metrics["verdict"]["contributing_causes"] == ["logging_mismatch"]
    # every batch holds 4 sequences here, so weighting batch means by rows and averaging them agree: both are named
    summary = from_checkpoints["findings"][0]["summary"]
    assert "sum_b r_b*L_b / sum_b r_b, which reproduces the log" in summary and "mean_of_batch_means" in summary
    # (the checkpoints' report also runs the model in train mode to test the log against it; predictions cannot)
    numbers = {k: v for k, v in _without_names(from_checkpoints).items() if k not in ("findings", "verdict", "train_mode")}
    assert {k: v for k, v in _without_names(from_files).items()
            if k not in ("findings", "verdict", "train_mode")} == numbers
    assert from_files["train_mode"] is None and from_checkpoints["train_mode"]["epochs"][0]["layers"] == "5 Dropout (p 0.1)"
    assert from_files["epochs"][0]["n_samples"] == sum(lengths)


@pytest.mark.skipif(not HAS_TRAINER, reason="transformers and accelerate are in the test extra; not installed here")
def test_hugging_face_writer_added_too_late_says_so(tmp_path, offline_hub):
    from transformers import BertConfig, BertForSequenceClassification, Trainer

    from postmortem.callbacks import HFPredictionsWriter

    generator = torch.Generator().manual_seed(1)
    val = [{"input_ids": t, "labels": int(t[0] % 3)} for t in torch.randint(0, 30, (8, 6), generator=generator)]
    trainer = Trainer(model=BertForSequenceClassification(BertConfig(**TINY_BERT, num_labels=3)),
                      args=_trainer_arguments(tmp_path), eval_dataset=val)
    trainer.add_callback(HFPredictionsWriter(tmp_path / "p"))
    with pytest.raises(DataError, match=r"^HFPredictionsWriter: saw no evaluation batches: pass it in "
                                        r"Trainer\(callbacks=\[\.\.\.\]\), or add it before train\(\)$"):
        trainer.evaluate()


@pytest.mark.skipif(not HAS_TRAINER, reason="transformers and accelerate are in the test extra; not installed here")
def test_hugging_face_writer_keeps_only_its_evaluation_loops_forward_passes(tmp_path, offline_hub):
    """The hook stays on the model between evaluations: another Trainer's evaluation of the same model and the
    user's own eval-mode calls (without labels) are neither written nor failed on."""
    from transformers import BertConfig, BertForSequenceClassification, Trainer

    from postmortem.callbacks import HFPredictionsWriter

    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 30, (12, 6), generator=generator)
    val = [{"input_ids": t, "labels": int(t[0] % 3)} for t in tokens]
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**TINY_BERT, num_labels=3))
    writer = HFPredictionsWriter(tmp_path / "p")
    with_writer = Trainer(model=model, args=_trainer_arguments(tmp_path / "a"), eval_dataset=val, callbacks=[writer])
    other = Trainer(model=model, args=_trainer_arguments(tmp_path / "b"), eval_dataset=val[:5])
    other.evaluate()                                        # another loop over the same model
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=tokens).logits           # the user's own call, no labels
    with_writer.evaluate()
    [path] = writer.written
    content = np.load(path, allow_pickle=False)
    assert content["labels"].tolist() == [v["labels"] for v in val]                   # 12 items, not 12 + 5
    np.testing.assert_allclose(content["outputs"], expected.numpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- save_predictions
def test_save_predictions_from_a_loop_of_ones_own(tmp_path, capsys):
    """A hand-written loop saving per-batch tensors each epoch: the report equals that of its checkpoints."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(SPEC_SOURCE)
    x, y = validation_tensors()
    torch.save({"inputs": x, "labels": y}, run / "val.pt")
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    train_x, train_y = validation_tensors(seed=1, n=64)
    for epoch in range(1, 4):
        model.train()
        for _ in range(5):
            optimizer.zero_grad()
            F.cross_entropy(model(train_x), train_y).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            outputs = [model(x[i:i + 16]) for i in range(0, len(y), 16)]
        path = save_predictions(tmp_path / "predictions", epoch, outputs, [y[i:i + 16] for i in range(0, len(y), 16)],
                                optimizer=optimizer)
        assert path == tmp_path / "predictions" / f"epoch_{epoch}.npz"
        torch.save({"epoch": epoch, "model_state_dict": model.state_dict()}, run / "checkpoints" / f"e{epoch}.pt")
    content = np.load(tmp_path / "predictions" / "epoch_3.npz", allow_pickle=False)
    assert sorted(content.files) == ["epoch", "labels", "lr", "optimizer", "outputs", "weight_decay"]
    assert str(content["optimizer"]) == "Adam" and content["lr"].tolist() == [0.05]
    assert _same_report(run, tmp_path / "predictions", capsys, "--data", str(run / "val.pt"), "--batch-size", "16")


def test_save_predictions_writes_what_it_is_given_and_reads_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(6, 5, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (6, 5))
    mask = rng.integers(0, 2, (6, 5))
    path = save_predictions(tmp_path, 7, outputs, labels, mask, ids=[f"dialogue {i}" for i in range(6)],
                            groups=[0, 0, 1, 1, 2, 2], global_step=700)
    assert path.name == "epoch_7-step_700.npz"
    content = np.load(path, allow_pickle=False)
    assert np.array_equal(content["outputs"], outputs) and np.array_equal(content["labels"], labels)
    assert np.array_equal(content["mask"], mask) and content["mask"].dtype == np.uint8
    assert content["ids"].tolist() == [f"dialogue {i}" for i in range(6)] and content["groups"].tolist() == [0, 0, 1, 1, 2, 2]
    assert int(content["epoch"]) == 7 and int(content["global_step"]) == 700
    half = np.load(save_predictions(tmp_path / "half", 7, torch.from_numpy(outputs).bfloat16(), labels,
                                    float16=True))["outputs"]
    assert half.dtype == np.float16
    assert np.array_equal(half, torch.from_numpy(outputs).bfloat16().float().half().numpy())
    assert save_predictions(tmp_path / "mid", None, outputs[:, 0], labels[:, 0], global_step=150).name == "step_150.npz"


def test_save_predictions_replaces_a_file_whole_and_leaves_no_temporary_files(tmp_path):
    save_predictions(tmp_path, 1, np.zeros((4, 3)), np.zeros(4, int))
    save_predictions(tmp_path, 1, np.ones((5, 3)), np.ones(5, int))
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_1.npz"]
    assert np.load(tmp_path / "epoch_1.npz")["outputs"].shape == (5, 3)
    assert oct((tmp_path / "epoch_1.npz").stat().st_mode & 0o777) == "0o644"


def test_optimizer_settings_leave_out_what_a_group_does_not_have(tmp_path):
    """Adafactor-like groups with lr None: no 'lr' is written, rather than a made-up number."""
    from postmortem.callbacks.writer import optimizer_settings

    class Wrapped:                                  # accelerate's AcceleratedOptimizer holds the real one
        def __init__(self, optimizer):
            self.optimizer = optimizer

    parameter = torch.nn.Parameter(torch.zeros(2))
    sgd = torch.optim.SGD([{"params": [parameter], "lr": 0.1, "weight_decay": 0.5}], lr=0.1)
    settings = optimizer_settings(Wrapped(sgd))
    assert str(settings["optimizer"]) == "SGD" and settings["lr"].tolist() == [0.1]
    assert settings["weight_decay"].tolist() == [0.5]
    sgd.param_groups[0]["lr"] = None
    assert "lr" not in optimizer_settings(sgd) and "weight_decay" in optimizer_settings(sgd)


@pytest.mark.parametrize("call, message", [
    (lambda d: save_predictions(d, 1, np.zeros((4, 3)), np.zeros(5, int)),
     "save_predictions: outputs of shape (4, 3) do not fit labels of shape (5,) (expected outputs (N, C) or "
     "(N, T, C) and labels (N,) or (N, T))"),
    (lambda d: save_predictions(d, 1, np.zeros((4, 3)), np.zeros(4, int), mask=np.ones(3)),
     "save_predictions: mask of shape (3,) does not match labels of shape (4,)"),
    (lambda d: save_predictions(d, 1, np.zeros((4, 3)), np.zeros(4, int), ids=["a", "b"]),
     "save_predictions: 2 ids for 4 items"),
    (lambda d: save_predictions(d, -1, np.zeros((4, 3)), np.zeros(4, int)),
     "save_predictions: epoch must be a whole number >= 0, got -1"),
    (lambda d: save_predictions(d, None, np.zeros((4, 3)), np.zeros(4, int)),
     "save_predictions: give the epoch, the global_step, or both"),
    (lambda d: save_predictions(d, 1, np.zeros((4, 3)), np.zeros(4, int), optimizer=object()),
     "save_predictions: optimizer: a object has no param_groups"),
])
def test_save_predictions_errors_are_one_line(tmp_path, call, message):
    with pytest.raises((DataError, ConfigError)) as error:
        call(tmp_path / "p")
    assert str(error.value) == message
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").iterdir())


def test_postmortem_requires_neither_lightning_nor_transformers():
    code = ("import sys, postmortem, postmortem.callbacks; from postmortem import save_predictions; "
            "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'transformers', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)})
    assert result.stdout.strip() == "[]", result.stderr[-2000:]
