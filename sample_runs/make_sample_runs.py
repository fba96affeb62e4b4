"""Build the bundled sample runs from scikit-learn's digits (shipped with the package; no downloads).

    python sample_runs/make_sample_runs.py        # rewrites sample_runs/*/ deterministically

dialogue_gru  the motivating case: a GRU over "dialogues" (sequences of utterances, each a digit image
              standing in for multimodal features) classifies each utterance into 7 imbalanced
              "emotions"; padded (B, T) batches with a 0/1 mask, class weights w_c = N / (K n_c),
              log_softmax outputs, the user's loss
              NLLLoss(weight=w, reduction='sum')(log_softmax * mask, y) / sum(w[y] * mask),
              Adam with weight decay (saved in each checkpoint's optimizer_state_dict), 8% of
              training labels flipped; the training dialogues are saved as the run's training subset
              (train_data() in its spec). Validation loss falls for a few epochs, then rises while
              accuracy holds.
digits_mlp    a plain MLP on digit images with raw logits and bare state_dicts, trained on 150 images
              without weight decay: the same phenomenon in its simplest form.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent
EMOTIONS = ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]
# digit -> emotion: neutral gets four digits, fear only one (and is thinned below): an imbalanced task.
DIGIT_TO_EMOTION = np.array([0, 0, 0, 1, 1, 2, 3, 4, 5, 6])

DIALOGUE_SPEC = '''\
"""The dialogue_gru sample run: a GRU over dialogues of utterances, one emotion per utterance."""
from pathlib import Path

import torch
import torch.nn as nn

FEATURES, HIDDEN, EMOTIONS = 64, 48, 7


class DialogueGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU())
        self.gru = nn.GRU(HIDDEN, HIDDEN, batch_first=True, bidirectional=True)
        self.classify = nn.Linear(2 * HIDDEN, EMOTIONS)

    def forward(self, utterances):
        context, _ = self.gru(self.encode(utterances))
        return torch.log_softmax(self.classify(context), dim=-1)      # (B, T, 7) log-probabilities


def build_model():
    return DialogueGRU()


def val_data():
    """Batches of 16 dialogues: 'utterances' (B, T, 64), 'emotions' (B, T), 'mask' (B, T), 'ids' (B,)."""
    return torch.load(Path(__file__).with_name("val_dialogues.pt"), weights_only=True)


def train_data():
    """The training dialogues with the labels the model trained on (8% of them flipped), ids from 1000 on: the
    training subset (--train-data), scored by every checkpoint as the validation set is."""
    return torch.load(Path(__file__).with_name("train_dialogues.pt"), weights_only=True)


def forward(model, batch):
    return model(batch["utterances"]), batch["emotions"], batch["mask"]
'''

MLP_SPEC = '''\
"""The digits_mlp sample run: an MLP over 8x8 digit images (64 features), raw logits."""
import torch.nn as nn


def build_model():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
'''


def fresh_dir(name: str) -> Path:
    run = HERE / name
    if run.exists():
        shutil.rmtree(run)
    (run / "checkpoints").mkdir(parents=True)
    return run


def make_dialogues(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, max_len: int = 10):
    """Cut shuffled utterances into dialogues of 3..max_len, padded; returns utterances, labels, mask."""
    order = rng.permutation(len(x))
    lengths = []
    while sum(lengths) < len(order):
        lengths.append(int(rng.integers(3, max_len + 1)))
    n = len(lengths)
    utterances = np.zeros((n, max_len, x.shape[1]), dtype=np.float32)
    labels = np.zeros((n, max_len), dtype=np.int64)          # padding carries a real class; the mask excludes it
    mask = np.zeros((n, max_len), dtype=np.int64)
    start = 0
    for d, length in enumerate(lengths):
        idx = order[start:start + length]
        start += length
        utterances[d, :len(idx)], labels[d, :len(idx)], mask[d, :len(idx)] = x[idx], y[idx], 1
    return torch.from_numpy(utterances), torch.from_numpy(labels), torch.from_numpy(mask)


def build_dialogue_run() -> None:
    run = fresh_dir("dialogue_gru")
    (run / "postmortem_spec.py").write_text(DIALOGUE_SPEC)
    namespace: dict = {}
    exec(compile(DIALOGUE_SPEC, "postmortem_spec.py", "exec"), namespace)

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = DIGIT_TO_EMOTION[digits.target]
    rng = np.random.default_rng(0)
    keep = (y != 6) | (rng.random(len(y)) < 0.35)             # fear becomes rare
    x, y = x[keep], y[keep]
    order = rng.permutation(len(y))
    train_idx, val_idx = order[:500], order[500:]
    y_train = y[train_idx].copy()
    flip = rng.random(len(y_train)) < 0.08                    # label noise the model can memorise
    y_train[flip] = rng.integers(0, 7, size=int(flip.sum()))
    train = make_dialogues(x[train_idx], y_train, rng)
    val = make_dialogues(x[val_idx], y[val_idx], rng)

    counts = np.bincount(y_train, minlength=7)
    weights = torch.tensor(len(y_train) / (7 * counts), dtype=torch.float32)   # w_c = N / (K n_c)
    val_batches = [{"utterances": val[0][i:i + 16], "emotions": val[1][i:i + 16], "mask": val[2][i:i + 16],
                    "ids": torch.arange(i, min(i + 16, len(val[0])))} for i in range(0, len(val[0]), 16)]
    torch.save(val_batches, run / "val_dialogues.pt")
    train_batches = [{"utterances": train[0][i:i + 16], "emotions": train[1][i:i + 16], "mask": train[2][i:i + 16],
                      "ids": 1000 + torch.arange(i, min(i + 16, len(train[0])))} for i in range(0, len(train[0]), 16)]
    torch.save(train_batches, run / "train_dialogues.pt")

    torch.manual_seed(0)
    model = namespace["build_model"]()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-5)
    criterion = nn.NLLLoss(weight=weights, reduction="sum")
    for epoch in range(1, 21):
        model.train()
        perm = torch.randperm(len(train[0]))
        for i in range(0, len(perm), 16):
            b = perm[i:i + 16]
            utterances, labels, mask = train[0][b], train[1][b], train[2][b]
            log_probs = model(utterances) * mask.unsqueeze(-1)
            loss = criterion(log_probs.reshape(-1, 7), labels.reshape(-1)) / (weights[labels] * mask).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        # the optimizer's state too, as most training loops save it: the report reads the training setup from it
        torch.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": optimizer.state_dict()},
                   run / "checkpoints" / f"epoch_{epoch:02d}.pth")
    (run / "postmortem.toml").write_text(
        'title = "dialogue_gru (sample: GRU emotion classifier, weighted NLL, masks)"\n'
        f'class-names = {EMOTIONS!r}\n'.replace("'", '"') +
        "class-weights = [" + ", ".join(f"{w:.6f}" for w in weights.tolist()) + "]\n"
        'outputs = "log_probs"\n')


def build_mlp_run() -> None:
    run = fresh_dir("digits_mlp")
    (run / "postmortem_spec.py").write_text(MLP_SPEC)
    namespace: dict = {}
    exec(compile(MLP_SPEC, "postmortem_spec.py", "exec"), namespace)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=generator)
    train_idx, val_idx = order[:150], order[1000:1600]       # 150 clean training images: it will overfit
    y_train = y[train_idx]
    torch.save({"inputs": x[val_idx], "labels": y[val_idx], "ids": val_idx}, run / "val.pt")
    torch.manual_seed(0)
    model = namespace["build_model"]()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(1, 21):
        for _ in range(10):
            optimizer.zero_grad()
            F.cross_entropy(model(x[train_idx]), y_train).backward()
            optimizer.step()
        torch.save(model.state_dict(), run / "checkpoints" / f"epoch_{epoch}.pt")
    (run / "postmortem.toml").write_text('data = "val.pt"\nclass-names = "0,1,2,3,4,5,6,7,8,9"\n')


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    build_dialogue_run()
    build_mlp_run()
    print("wrote", ", ".join(sorted(p.name for p in HERE.iterdir() if p.is_dir())))
