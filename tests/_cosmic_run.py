"""A training run written the way the motivating model family's script is: COSMIC's erc-training/train_meld.py
(declare-lab/conv-emotion), read for this: dialogues of utterances batched 8 dialogues at a time by a collate_fn
that pads features sequence-first and the utterance mask and labels batch-first (pad_sequence), a GRU over each
dialogue returning log-probabilities (T, B, C), MaskedNLLLoss with MELD's class weights, and the validation loss
it logs:

    losses.append(loss.item() * masks[-1].sum())          # per batch: its weighted mean times its utterance count
    avg_loss = round(np.sum(losses) / np.sum(masks), 4)   # over the batches

The features are synthetic (no download): each utterance carries its emotion's direction plus noise, so a small
training set is learnt and then overfit. The batches of the validation loader carry the dialogue ids (COSMIC's
`vid`, the last element of each batch), which the spec's forward() returns as its fourth value.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

EMOTIONS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
# MELD's training-set label counts and the class weights train_meld.py hard-codes for --class-weight
MELD_COUNTS = (6436, 1636, 358, 1002, 2308, 361, 1607)
MELD_WEIGHTS = (0.30427062, 1.19699616, 5.47007183, 1.95437696, 0.84847735, 5.42461417, 1.21859721)
SIGNAL = 1.0          # how far an utterance's features point towards its emotion (noise: 1)
N_TRAIN, N_VALID = 16, 160   # dialogues: a small training set, to be overfit
BATCH_SIZE = 8          # train_meld.py's --batch-size default
FIRST_VID = 1000        # dialogue ids start here (MELD's are 0..1038 in dev; any integers do)

# Tiny models on 2 cores: one intra-op thread is 10-30x faster than a contended pool (a GRU step took 37 ms with two
# threads, 1.2 ms with one). As in _core_runs, for this process only (training, references and in-process reports).
torch.set_num_threads(1)

# The user's postmortem_spec.py: the model, the validation loader and forward() as train_meld.py has them.
SPEC_SOURCE = '''
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

FEATURES, HIDDEN, EMOTIONS = 12, 24, 7


class DialogueGRU(nn.Module):
    """A GRU over each dialogue, sequence-first like COSMIC's models: (T, B, D) in, (T, B, 7) log-probs out."""

    def __init__(self):
        super().__init__()
        self.encode = nn.Linear(FEATURES + 2, HIDDEN)
        self.gru = nn.GRU(HIDDEN, HIDDEN)
        self.dropout = nn.Dropout(0.5)
        self.classify = nn.Linear(HIDDEN, EMOTIONS)

    def forward(self, features, qmask, umask):
        hidden, _ = self.gru(torch.relu(self.encode(torch.cat([features, qmask], dim=-1))))
        return torch.log_softmax(self.classify(self.dropout(hidden)), dim=-1)


class MELDLikeDataset(Dataset):
    """One dialogue per item, returned as MELDRobertaCometDataset returns it (features, speakers, umask, labels, vid)."""

    def __init__(self, path):
        self.dialogues = torch.load(path, weights_only=True)

    def __len__(self):
        return len(self.dialogues)

    def __getitem__(self, index):
        d = self.dialogues[index]
        return d["features"], d["speakers"], torch.ones(len(d["labels"])), d["labels"], d["vid"]

    def collate_fn(self, data):
        features, speakers, umask, labels, vids = zip(*data)
        return [pad_sequence(features), pad_sequence(speakers), pad_sequence(umask, True),
                pad_sequence(labels, True), list(vids)]


def build_model():
    return DialogueGRU()


def val_data():
    validset = MELDLikeDataset(Path(__file__).with_name("valid.pt"))
    return DataLoader(validset, batch_size=8, collate_fn=validset.collate_fn)


def forward(model, data):
    features, qmask, umask, label, vid = data
    log_prob = model(features, qmask, umask)
    return log_prob.transpose(0, 1), label, umask, vid     # (B, T, 7), (B, T), (B, T), one id per dialogue
'''


class MaskedNLLLoss(torch.nn.Module):
    """COSMIC's loss (erc-training/model.py), as it is written there."""

    def __init__(self, weight=None):
        super().__init__()
        self.weight = weight
        self.loss = torch.nn.NLLLoss(weight=weight, reduction='sum')

    def forward(self, pred, target, mask):
        mask_ = mask.view(-1, 1)
        if self.weight is None:
            return self.loss(pred * mask_, target) / torch.sum(mask)
        return self.loss(pred * mask_, target) / torch.sum(self.weight[target] * mask_.squeeze())


def spec_namespace() -> dict:
    namespace: dict = {"__file__": "<spec>"}
    exec(compile(SPEC_SOURCE, "<spec>", "exec"), namespace)
    return namespace


def dialogues(n: int, rng: np.random.Generator, first_vid: int) -> list[dict]:
    """n dialogues of 1..16 utterances, emotions drawn with MELD's frequencies; each utterance's features point
    towards its emotion (plus noise), two speakers alternate."""
    directions = np.random.default_rng(7).normal(size=(len(EMOTIONS), 12))
    p = np.asarray(MELD_COUNTS, float) / sum(MELD_COUNTS)
    out = []
    for k in range(n):
        length = int(rng.integers(1, 17))
        labels = rng.choice(len(EMOTIONS), size=length, p=p)
        features = SIGNAL * directions[labels] + rng.normal(size=(length, 12))
        speakers = np.eye(2)[np.arange(length) % 2]
        out.append({"features": torch.tensor(features, dtype=torch.float32),
                    "speakers": torch.tensor(speakers, dtype=torch.float32),
                    "labels": torch.tensor(labels, dtype=torch.int64), "vid": first_vid + k})
    return out


def train_or_eval_model(model, loss_function, dataloader, optimizer=None, train=False, decimals: int | None = 4):
    """train_meld.py's loop: the logged loss is sum_b loss_b.item() * mask_b.sum() / sum_b mask_b.sum(), rounded to
    4 decimals as the script rounds it (decimals=None keeps every digit). Returns (loss, accuracy %). (The script's
    `epoch` argument only fed tensorboard, and is left out.)"""
    losses, preds, labels, masks = [], [], [], []
    model.train() if train else model.eval()
    for data in dataloader:
        if train:
            optimizer.zero_grad()
        features, qmask, umask, label, _ = data
        log_prob = model(features, qmask, umask)
        lp_ = log_prob.transpose(0, 1).contiguous().view(-1, log_prob.size()[2])
        labels_ = label.view(-1)
        loss = loss_function(lp_, labels_, umask)
        preds.append(torch.argmax(lp_, 1).data.cpu().numpy())
        labels.append(labels_.data.cpu().numpy())
        masks.append(umask.view(-1).cpu().numpy())
        losses.append(loss.item() * masks[-1].sum())
        if train:
            loss.backward()
            optimizer.step()
    preds, labels, masks = np.concatenate(preds), np.concatenate(labels), np.concatenate(masks)
    avg_loss = float(np.sum(losses) / np.sum(masks))
    accuracy = float(((preds == labels) * masks).sum() / masks.sum() * 100)
    return (round(avg_loss, decimals) if decimals is not None else avg_loss), accuracy


def make_cosmic_run(root: Path, n_epochs: int = 14, seed: int = 0) -> tuple[Path, list[dict]]:
    """RUN/ with postmortem_spec.py, valid.pt, checkpoints/epoch_N.pt (N = e + 1, as train_meld.py numbers its
    epochs) and the script's epoch lines as CSV (epoch, train_loss, acc, valid_loss, valid_acc): log.csv with the
    losses rounded to 4 decimals as the script rounds them, log_full.csv with every digit. Returns the run and, per
    epoch, what the loop computed (unrounded)."""
    run = root / "cosmic_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(SPEC_SOURCE)
    rng = np.random.default_rng(seed)
    torch.save(dialogues(N_VALID, rng, FIRST_VID), run / "valid.pt")
    torch.save(dialogues(N_TRAIN, rng, 0), root / "train.pt")
    spec = spec_namespace()
    trainset, validset = spec["MELDLikeDataset"](root / "train.pt"), spec["MELDLikeDataset"](run / "valid.pt")
    loader = torch.utils.data.DataLoader
    train_loader = loader(trainset, batch_size=BATCH_SIZE, collate_fn=trainset.collate_fn)
    valid_loader = loader(validset, batch_size=BATCH_SIZE, collate_fn=validset.collate_fn)
    torch.manual_seed(seed)
    model = spec["build_model"]()
    loss_function = MaskedNLLLoss(torch.FloatTensor(MELD_WEIGHTS))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    logged = []
    for e in range(n_epochs):
        train_loss, train_acc = train_or_eval_model(model, loss_function, train_loader, optimizer, True, None)
        with torch.no_grad():
            valid_loss, valid_acc = train_or_eval_model(model, loss_function, valid_loader, decimals=None)
        torch.save(model.state_dict(), run / "checkpoints" / f"epoch_{e + 1}.pt")
        logged.append({"epoch": e + 1, "train_loss": train_loss, "acc": train_acc, "valid_loss": valid_loss,
                       "valid_acc": valid_acc})
    for name, decimals in (("log.csv", 4), ("log_full.csv", None)):
        def written(value: float) -> str:
            return repr(value if decimals is None else round(value, decimals))
        lines = ["epoch,train_loss,acc,valid_loss,valid_acc"] + [
            f"{row['epoch']},{written(row['train_loss'])},{row['acc']:.2f},{written(row['valid_loss'])},"
            f"{row['valid_acc']:.2f}" for row in logged]
        (run / name).write_text("\n".join(lines) + "\n")
    return run, logged


def recomputed_losses(run: Path) -> list[float]:
    """The loss itself per checkpoint, independently of postmortem: torch's nll_loss(weight=w) in float64 over every
    utterance of the validation set at once."""
    spec = spec_namespace()
    validset = spec["MELDLikeDataset"](run / "valid.pt")
    values = []
    for path in sorted((run / "checkpoints").glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1])):
        model = spec["build_model"]()
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
        log_probs, labels = [], []
        with torch.no_grad():
            for d in validset.dialogues:
                out = model(d["features"][:, None], d["speakers"][:, None], torch.ones(1, len(d["labels"])))
                log_probs.append(out[:, 0].double())
                labels.append(d["labels"])
        values.append(float(torch.nn.functional.nll_loss(
            torch.log_softmax(torch.cat(log_probs), -1), torch.cat(labels),
            weight=torch.tensor(MELD_WEIGHTS, dtype=torch.float64))))
    return values


__all__ = ["EMOTIONS", "MELD_WEIGHTS", "BATCH_SIZE", "FIRST_VID", "SPEC_SOURCE", "MaskedNLLLoss", "make_cosmic_run",
           "recomputed_losses", "train_or_eval_model"]
