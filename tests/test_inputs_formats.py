"""Real-world checkpoint and data layouts, written by the real libraries where they install here
(PyTorch itself, safetensors, PyTorch Lightning, Hugging Face transformers), otherwise by hand in
exactly their layout; every loss is compared with torch's nll_loss on the same weights."""
from __future__ import annotations

import contextlib
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _fixtures_inputs import (N_IN, SPEC_SOURCE, Net, assert_close, losses, make_run, reference_loss,
                              report, trained_models, validation_tensors)
from postmortem.config import build_config
from postmortem.evaluate.runner import evaluate_run
from postmortem.load.checkpoint_reader import read_checkpoint
from postmortem.load.discovery import CheckpointFile
from postmortem.load.state_dict_fit import fit_state_dict

HAS_LIGHTNING = importlib.util.find_spec("pytorch_lightning") is not None
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def evaluate(run: Path, **options):
    """The evaluation stage alone (what metrics.json's losses come from), for layout tests."""
    options.setdefault("quiet", True)
    options.setdefault("out", str(run.parent / "report"))
    return evaluate_run(build_config(run, {}, options))


def epoch_losses(evaluation) -> list[float]:
    w = evaluation.item_weights
    return [float((w * e.records.nll).sum() / w.sum()) for e in evaluation.epochs]


def expected_losses(models) -> list[float]:
    x, y = validation_tensors()
    return [reference_loss(m, x, y) for m in models]


# ----------------------------------------------------------------------------- plain PyTorch layouts
@pytest.mark.parametrize("layout", ["state_dict", "model_state_dict", "model", "module", "legacy_pickle", "safetensors"])
def test_dict_layouts(tmp_path, layout):
    def save(model, epoch, path):
        state = model.state_dict()
        if layout == "safetensors":
            from safetensors.torch import save_file
            save_file(state, str(path.with_suffix(".safetensors")), metadata={"epoch": str(epoch)})
        elif layout == "legacy_pickle":
            torch.save({"epoch": epoch, "state_dict": state}, path, _use_new_zipfile_serialization=False)
        elif layout == "state_dict":
            torch.save(state, path)
        else:
            torch.save({"epoch": epoch, layout: state, "optimizer_state_dict": {"lr": 0.1}}, path)

    run, models = make_run(tmp_path, n_epochs=3, save=save, name="ckpt_{epoch}.pt")
    evaluation = evaluate(run, data=str(run / "val.pt"))
    assert [e.epoch for e in evaluation.epochs] == [1, 2, 3]
    assert_close(epoch_losses(evaluation), expected_losses(models))


def test_data_parallel_ddp_and_compile_prefixes(tmp_path):
    """'module.' from nn.DataParallel and DistributedDataParallel, '_orig_mod.' from torch.compile, and both."""
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        wrappers = {1: nn.DataParallel, 2: lambda m: nn.parallel.DistributedDataParallel(m),
                    3: torch.compile, 4: lambda m: torch.compile(nn.DataParallel(m))}

        def save(model, epoch, path):
            wrapped = wrappers[epoch](model)
            torch.save({"epoch": epoch, "model_state_dict": wrapped.state_dict()}, path)

        run, models = make_run(tmp_path, n_epochs=4, save=save)
    finally:
        dist.destroy_process_group()
    keys = [next(iter(torch.load(run / "checkpoints" / f"epoch_{i}.pt")["model_state_dict"])) for i in (1, 2, 3, 4)]
    assert keys == ["module.body.0.weight", "module.body.0.weight", "_orig_mod.body.0.weight",
                    "_orig_mod.module.body.0.weight"]
    evaluation = evaluate(run, data=str(run / "val.pt"))
    assert evaluation.skipped == []
    assert_close(epoch_losses(evaluation), expected_losses(models))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archives_need_no_model_code(tmp_path):
    def save(model, epoch, path):
        torch.jit.trace(model, torch.zeros(2, N_IN)).save(str(path))

    run, models = make_run(tmp_path, n_epochs=2, save=save, spec=None)
    evaluation = evaluate(run, data=str(run / "val.pt"))
    assert_close(epoch_losses(evaluation), expected_losses(models))


@contextlib.contextmanager
def saved_as_on_gpu():
    """torch.save writes each storage's device into the archive; make it write 'cuda:0', exactly as a
    save on a GPU does, on this CPU-only machine."""
    import torch.serialization as serialization

    original = serialization.location_tag
    serialization.location_tag = lambda storage: "cuda:0"
    try:
        yield
    finally:
        serialization.location_tag = original


def test_checkpoints_saved_on_a_gpu_load_on_the_cpu(tmp_path):
    def save(model, epoch, path):
        with saved_as_on_gpu():
            torch.save({"epoch": epoch, "state_dict": model.state_dict()}, path)

    run, models = make_run(tmp_path, n_epochs=2, save=save)
    if not torch.cuda.is_available():   # the files really say cuda: a plain load fails here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(run / "checkpoints" / "epoch_1.pt", weights_only=True)
    evaluation = evaluate(run, data=str(run / "val.pt"))
    assert_close(epoch_losses(evaluation), expected_losses(models))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights(tmp_path, dtype):
    def save(model, epoch, path):
        torch.save({k: v.to(dtype) for k, v in model.state_dict().items()}, path)

    run, models = make_run(tmp_path, n_epochs=2, save=save)
    rounded = []
    for model in models:      # the reference: the same rounded weights, in float32
        copy = Net()
        copy.load_state_dict({k: v.to(dtype).float() for k, v in model.state_dict().items()})
        rounded.append(copy)
    evaluation = evaluate(run, data=str(run / "val.pt"))
    assert_close(epoch_losses(evaluation), expected_losses(rounded))


def test_tied_weights_saved_once(tmp_path):
    """Savers such as save_pretrained write a tied output layer once; the twin is filled from it."""
    spec = '''
import torch
from torch import nn

class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(3, 6)
        self.proj = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x):
        return self.out(torch.tanh(self.proj(x)))

def build_model():
    return Tied()
'''
    namespace: dict = {}
    exec(spec, namespace)
    torch.manual_seed(3)
    model = namespace["Tied"]()
    run, _ = make_run(tmp_path, n_epochs=0, spec=spec)
    state = {k: v for k, v in model.state_dict().items() if k != "out.weight"}
    from safetensors.torch import save_file
    save_file(state, str(run / "checkpoints" / "epoch_1.safetensors"))
    evaluation = evaluate(run, data=str(run / "val.pt"))
    x, y = validation_tensors()
    assert_close(epoch_losses(evaluation), [reference_loss(model, x, y)])


def test_fit_state_dict_adds_a_prefix_the_checkpoint_lacks():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = Net()

    model_state = Wrapper().state_dict()
    fitted = fit_state_dict(Net().state_dict(), model_state, Path("x.pt"))
    assert set(fitted) == set(model_state)


# ----------------------------------------------------------------------------- PyTorch Lightning
LIGHTNING_MODULE = '''
import torch
import pytorch_lightning as pl
from torch import nn
import torch.nn.functional as F

class Classifier(pl.LightningModule):
    def __init__(self, lr=0.5):
        super().__init__()
        self.save_hyperparameters()
        self.model = Net()
        self.loss_fn = nn.CrossEntropyLoss(weight=torch.ones(3))   # saved as 'loss_fn.weight' beside 'model.*'

    def training_step(self, batch, index):
        x, y = batch
        loss = self.loss_fn(self.model(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, index):
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
'''


@pytest.fixture(scope="module")
def lightning_run(tmp_path_factory):
    """A real Lightning run when pytorch_lightning installs here, else files of the same layout."""
    root = tmp_path_factory.mktemp("lightning")
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(SPEC_SOURCE)
    x, y = validation_tensors()
    torch.save({"inputs": x, "labels": y}, run / "val.pt")
    if HAS_LIGHTNING:
        import pytorch_lightning as pl
        from pytorch_lightning.loggers import CSVLogger
        from torch.utils.data import DataLoader, TensorDataset

        namespace = {"Net": Net}
        exec(LIGHTNING_MODULE, namespace)
        torch.manual_seed(0)
        train_x, train_y = validation_tensors(seed=1, n=64)
        callback = pl.callbacks.ModelCheckpoint(dirpath=run / "checkpoints", save_top_k=-1, save_last=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = pl.Trainer(max_epochs=3, logger=CSVLogger(run / "logs", name="", version=0), callbacks=[callback],
                                 enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                                 default_root_dir=root, log_every_n_steps=1)
            trainer.fit(namespace["Classifier"](), DataLoader(TensorDataset(train_x, train_y), batch_size=16),
                        DataLoader(TensorDataset(x, y), batch_size=16))
        metrics_csv = run / "logs" / "version_0" / "metrics.csv"
    else:   # the layout Lightning 2.x writes
        metrics_csv = run / "logs" / "version_0" / "metrics.csv"
        metrics_csv.parent.mkdir(parents=True)
        lines = ["epoch,step,train_loss_epoch,train_loss_step,val_acc,val_loss"]
        for epoch, model in enumerate(trained_models(3)):
            state = {f"model.{k}": v for k, v in model.state_dict().items()} | {"loss_fn.weight": torch.ones(3)}
            step = 4 * (epoch + 1)
            checkpoint = {"epoch": epoch, "global_step": step, "pytorch-lightning_version": "2.6.6",
                          "state_dict": state, "loops": {}, "callbacks": {}, "optimizer_states": [],
                          "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"lr": 0.5}}
            torch.save(checkpoint, run / "checkpoints" / f"epoch={epoch}-step={step}.ckpt")
            if epoch == 2:
                torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
            loss = reference_loss(model, x, y)
            lines += [f"{epoch},{step - 1},,0.9,,", f"{epoch},{step - 1},,,0.5,{loss}", f"{epoch},{step - 1},1.0,,,"]
        metrics_csv.write_text("\n".join(lines) + "\n")
    return run, metrics_csv


def lightning_reference(run: Path) -> list[float]:
    x, y = validation_tensors()
    result = []
    for epoch in range(3):
        [path] = (run / "checkpoints").glob(f"epoch={epoch}-*.ckpt")
        model = Net()
        model.load_state_dict({k[len("model."):]: v for k, v in torch.load(path)["state_dict"].items()
                               if k.startswith("model.")})
        result.append(reference_loss(model, x, y))
    return result


def test_lightning_checkpoints_end_to_end(lightning_run, capsys):
    run, _ = lightning_run
    code, err, metrics = report(run, "--data", str(run / "val.pt"), out=run.parent / "report-e2e", capsys=capsys)
    assert code == 0, err
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2]          # Lightning's 0-based epochs, as stored
    assert [e["checkpoint"] for e in metrics["epochs"]][0].startswith("epoch=0-step=")
    assert_close(losses(metrics), lightning_reference(run))
    [duplicate] = metrics["skipped"]                                    # last.ckpt repeats epoch 2
    assert duplicate["checkpoint"] == "last.ckpt"
    assert "left out as a duplicate" in duplicate["error"]
    assert not (run / "lightning_logs").exists()


def test_lightning_metrics_csv_as_a_training_log(lightning_run):
    from postmortem.analyze.reconcile import reconcile_logged_loss
    from postmortem.load.train_log import per_epoch, read_train_log

    run, metrics_csv = lightning_run
    log = read_train_log(metrics_csv)
    assert log.attrs["format"] == "lightning"
    assert list(log.columns[:4]) == ["epoch", "step", "train_loss", "val_loss"]
    assert log["epoch"].tolist() == [0.0, 1.0, 2.0]                    # step and epoch rows merged
    assert log["train_loss"].notna().all() and log["val_loss"].notna().all()
    assert "val_acc" in log.columns
    assert per_epoch(log)["epoch"].tolist() == [0, 1, 2]
    evaluation = evaluate(run, data=str(run / "val.pt"), train_log=str(metrics_csv))
    assert evaluation.train_log_source == str(metrics_csv)
    reconciliation = reconcile_logged_loss(evaluation, evaluation.train_log)
    assert reconciliation.n_matched == 3
    assert reconciliation.agrees, reconciliation.rows      # Lightning weights batch means by batch size: exact
    assert reconciliation.max_relative_difference < 1e-5


# ----------------------------------------------------------------------------- Hugging Face
HF_SPEC = '''
from transformers import BertConfig, BertForSequenceClassification

def build_model():
    return BertForSequenceClassification(BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=16, num_labels=3))
'''


def _hf_models(n: int):
    namespace: dict = {}
    exec(HF_SPEC, namespace)
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        models.append(namespace["build_model"]().eval())
    return models


def _hf_inputs():
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 30, (24, 6), generator=generator)
    attention = torch.ones_like(ids)
    attention[::3, 4:] = 0
    labels = torch.randint(0, 3, (24,), generator=generator)
    return ids, attention, labels


def _hf_reference(model) -> float:
    ids, attention, labels = _hf_inputs()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits.double()
    return float(F.nll_loss(F.log_softmax(logits, -1), labels))


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    """Trainer output: checkpoint-N/ with model.safetensors (written by save_pretrained, as the Trainer
    does) or pytorch_model.bin, trainer_state.json (TrainerState.save_to_json), optimizer.pt beside."""
    if not HAS_TRANSFORMERS:
        pytest.skip("transformers is not installed")
    from transformers.trainer_callback import TrainerState

    run = tmp_path_factory.mktemp("hf") / "run"
    run.mkdir()
    (run / "postmortem_spec.py").write_text(HF_SPEC)
    ids, attention, labels = _hf_inputs()
    torch.save({"inputs": {"input_ids": ids, "attention_mask": attention}, "labels": labels}, run / "val.pt")
    models = _hf_models(3)
    history = []
    for i, model in enumerate(models):
        step, epoch = 5 * (i + 1), 0.5 * (i + 1)            # saved every 5 steps: epochs 0.5, 1.0, 1.5
        folder = run / f"checkpoint-{step}"
        if i == 1:   # the older layout: pytorch_model.bin holding a bare state_dict
            folder.mkdir()
            torch.save(model.state_dict(), folder / "pytorch_model.bin")
        else:
            model.save_pretrained(folder)
        torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
        history += [{"epoch": epoch, "grad_norm": 0.5, "learning_rate": 1e-4, "loss": 1.2 - 0.1 * i, "step": step},
                    {"epoch": epoch, "eval_loss": _hf_reference(model), "eval_runtime": 0.1, "step": step}]
        TrainerState(epoch=epoch, global_step=step, max_steps=15, log_history=list(history)).save_to_json(
            str(folder / "trainer_state.json"))
    return run, models


def test_hugging_face_trainer_folders_end_to_end(hf_run, capsys):
    run, models = hf_run
    code, err, metrics = report(run, "--data", str(run / "val.pt"), out=run.parent / "report-e2e", capsys=capsys)
    assert code == 0, err
    assert [e["checkpoint"] for e in metrics["epochs"]] == ["checkpoint-5", "checkpoint-10", "checkpoint-15"]
    assert [e["epoch"] for e in metrics["epochs"]] == [5, 10, 15]   # fractional epochs: global_step orders them
    assert_close(losses(metrics), [_hf_reference(m) for m in models])
    assert metrics["skipped"] == []


def test_hugging_face_trainer_state_is_the_training_log(hf_run):
    from postmortem.analyze.reconcile import reconcile_logged_loss

    run, _ = hf_run
    evaluation = evaluate(run, data=str(run / "val.pt"))
    assert evaluation.order_key == "global_step"
    assert evaluation.train_log_source == str(run / "checkpoint-15" / "trainer_state.json")
    log = evaluation.train_log
    assert log.attrs["format"] == "huggingface"
    assert log["step"].tolist() == [5.0, 5.0, 10.0, 10.0, 15.0, 15.0]
    assert log["val_loss"].notna().sum() == 3 and log["train_loss"].notna().sum() == 3
    reconciliation = reconcile_logged_loss(evaluation, log)
    assert reconciliation.key == "step" and reconciliation.n_matched == 3 and reconciliation.agrees


def test_hugging_face_whole_epochs_and_flat_dict_batches(tmp_path):
    """save_strategy='epoch' gives whole epochs; a factory yields the Trainer's own batch layout
    (input_ids, attention_mask, labels), passed to the model as keyword arguments."""
    if not HAS_TRANSFORMERS:
        pytest.skip("transformers is not installed")
    from transformers.trainer_callback import TrainerState

    run = tmp_path / "run"
    run.mkdir()
    (run / "postmortem_spec.py").write_text(HF_SPEC + '''
import torch

def val_data():
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 30, (24, 6), generator=generator)
    attention = torch.ones_like(ids)
    attention[::3, 4:] = 0
    labels = torch.randint(0, 3, (24,), generator=generator)
    return [{"input_ids": ids[i:i + 10], "attention_mask": attention[i:i + 10], "labels": labels[i:i + 10]}
            for i in range(0, 24, 10)]
''')
    models = _hf_models(2)
    for epoch, model in enumerate(models, start=1):
        folder = run / "checkpoints" / f"checkpoint-{7 * epoch}"
        model.save_pretrained(folder, max_shard_size="4KB")      # sharded: an index and several files
        TrainerState(epoch=float(epoch), global_step=7 * epoch).save_to_json(str(folder / "trainer_state.json"))
    assert (run / "checkpoints" / "checkpoint-7" / "model.safetensors.index.json").is_file()
    (run / "checkpoints" / "checkpoint-21").mkdir()               # a save that died before the weights
    (run / "checkpoints" / "checkpoint-21" / "trainer_state.json").write_text('{"epoch": 3.0, "global_step": 21}')
    evaluation = evaluate(run)
    assert [e.epoch for e in evaluation.epochs] == [1, 2]
    assert_close(epoch_losses(evaluation), [_hf_reference(m) for m in models])
    [skipped] = evaluation.skipped
    assert skipped.checkpoint == "checkpoint-21"
    assert "checkpoint-21: holds no model weights (looked for model.safetensors, pytorch_model.bin" in skipped.error


# ----------------------------------------------------------------------------- validation data layouts
def test_npz_data_with_mask_and_ids(tmp_path):
    run, models = make_run(tmp_path, n_epochs=2)
    x, y = validation_tensors()
    mask = np.ones(len(y), dtype=np.int64)
    mask[:5] = 0
    np.savez(run / "val.npz", inputs=x.numpy(), labels=y.numpy(), mask=mask,
             ids=np.array([f"item-{i}" for i in range(len(y))]))
    evaluation = evaluate(run, data=str(run / "val.npz"))
    assert list(evaluation.items.ids[:2]) == ["item-5", "item-6"]
    assert_close(epoch_losses(evaluation), [reference_loss(m, x[5:], y[5:]) for m in models])


@pytest.mark.parametrize("factory", [
    "return DataLoader(TensorDataset(x, y), batch_size=7)",                          # tuples
    "return TensorDataset(x, y)",                                                    # a Dataset
    "return [{'inputs': x[i:i + 9], 'labels': y[i:i + 9]} for i in range(0, len(y), 9)]",   # dict batches
    "return [(x[i:i + 9], y[i:i + 9], torch.ones(len(y[i:i + 9]))) for i in range(0, len(y), 9)]",  # with mask
    "return (b for b in [(x[:20], y[:20]), (x[20:], y[20:])])",                       # a generator
])
def test_python_factories(tmp_path, factory):
    spec = SPEC_SOURCE + f'''
from torch.utils.data import DataLoader, TensorDataset

def val_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=generator)
    y = torch.randint(0, 3, (40,), generator=generator)
    {factory}
'''
    run, models = make_run(tmp_path, n_epochs=2, spec=spec, data=False)
    evaluation = evaluate(run)
    assert_close(epoch_losses(evaluation), expected_losses(models))


def test_a_shuffling_data_loader_is_refused(tmp_path, capsys):
    spec = SPEC_SOURCE + '''
from torch.utils.data import DataLoader, TensorDataset

def val_data():
    return DataLoader(TensorDataset(torch.randn(8, 6), torch.zeros(8, dtype=torch.long)), shuffle=True)
'''
    run, _ = make_run(tmp_path, n_epochs=1, spec=spec, data=False)
    code, err, _ = report(run, capsys=capsys)
    assert code == 2
    assert err.strip().endswith("postmortem_spec.py:val_data: returns a DataLoader with shuffle=True; items must "
                                "come in the same order for every checkpoint")


SEQUENCE_SPEC = '''
import torch
from torch import nn

class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 8)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.out = nn.Linear(8, 4)

    def forward(self, tokens):
        return torch.log_softmax(self.out(self.rnn(self.emb(tokens))[0]), dim=-1)

def build_model():
    return Tagger()
'''


def test_sequence_labels_with_masks_and_log_prob_outputs(tmp_path):
    """(B, T) labels, a (B, T) padding mask, -100 labels, class weights: the motivating user's loss
    NLLLoss(weight=w, reduction='sum')(log_probs * mask, y) / sum(w[y] * mask)."""
    namespace: dict = {}
    exec(SEQUENCE_SPEC, namespace)
    run, _ = make_run(tmp_path, n_epochs=0, spec=SEQUENCE_SPEC, data=False)
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 12, (10, 7), generator=generator)
    labels = torch.randint(0, 4, (10, 7), generator=generator)
    lengths = torch.randint(2, 8, (10,), generator=generator)
    mask = (torch.arange(7)[None, :] < lengths[:, None]).long()
    labels[0, 1] = -100
    torch.save({"inputs": tokens, "labels": labels, "mask": mask}, run / "val.pt")
    weights = [1.0, 2.5, 0.5, 3.0]
    models = []
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        model = namespace["build_model"]().eval()
        models.append(model)
        torch.save({"epoch": epoch, "model_state_dict": model.state_dict()}, run / "checkpoints" / f"e{epoch}.pth")
    evaluation = evaluate(run, data=str(run / "val.pt"), outputs="log_probs", class_weights=weights, batch_size=4)
    w = torch.tensor(weights, dtype=torch.float64)
    counted = (mask != 0) & (labels != -100)
    expected = []
    for model in models:
        with torch.no_grad():
            log_probs = model(tokens).double()
        safe = labels.clamp(min=0)
        total = F.nll_loss((log_probs * counted[..., None]).reshape(-1, 4), safe.reshape(-1), weight=w, reduction="sum")
        expected.append(float(total / (w[safe] * counted).sum()))
    assert_close(epoch_losses(evaluation), expected)
    assert len(evaluation.items) == int(counted.sum())
    assert evaluation.batch_counts == tuple(int(counted[i:i + 4].sum()) for i in range(0, 10, 4))


def test_predictions_mode_pt_files(tmp_path):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    rng = np.random.default_rng(1)
    labels = torch.from_numpy(rng.integers(0, 3, 30))
    expected = []
    for step in (100, 50, 150):        # ordered by the stored 'step', not by name
        outputs = torch.from_numpy(rng.normal(size=(30, 3)))
        torch.save({"outputs": outputs, "labels": labels, "step": step}, predictions / f"preds_{step}.pt")
        expected.append((step, float(F.cross_entropy(outputs, labels))))
    run = tmp_path / "run"
    run.mkdir()
    evaluation = evaluate(run, predictions=str(predictions))
    assert [e.epoch for e in evaluation.epochs] == [50, 100, 150]
    assert evaluation.order_key == "step"
    assert_close(epoch_losses(evaluation), [loss for _, loss in sorted(expected)])


def test_predictions_mode_pt_files_in_half_precision(tmp_path):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    labels = torch.randint(0, 4, (40,), generator=torch.Generator().manual_seed(0))
    expected = []
    for epoch, dtype in ((1, torch.bfloat16), (2, torch.float16)):   # numpy has no bfloat16
        outputs = torch.randn(40, 4, generator=torch.Generator().manual_seed(epoch)).to(dtype)
        torch.save({"outputs": outputs, "labels": labels, "epoch": epoch}, predictions / f"epoch_{epoch}.pt")
        expected.append(float(F.cross_entropy(outputs.double(), labels)))
    run = tmp_path / "run"
    run.mkdir()
    assert_close(epoch_losses(evaluate(run, predictions=str(predictions))), expected)


def test_read_checkpoint_reports_its_order_metadata(tmp_path):
    path = tmp_path / "x.ckpt"
    torch.save({"epoch": torch.tensor(4), "global_step": 4.0, "state_dict": Net().state_dict()}, path)
    loaded = read_checkpoint(CheckpointFile(path, path))
    assert loaded.metadata == {"epoch": 4, "global_step": 4}
