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
