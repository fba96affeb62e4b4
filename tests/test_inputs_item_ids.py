"""Items named by the user's own ids: a batch's 'ids', 'utterance_ids' or 'vid', or forward's fourth returned value;
for sequences, one id per sequence (an item is 'id:t', t the step from 0) or one per step (taken as given). A counted
item without an id, ids for some batches only, or an id naming two items is a one-line error naming the data."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from _fixtures_inputs import report
from postmortem.config import build_config
from postmortem.evaluate.runner import evaluate_run

SPEC = '''
import torch
from torch import nn


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.step = nn.Linear(5, 3)

    def forward(self, x):
        return self.step(x)


def build_model():
    return Tagger()
'''
FORWARD = '''

def forward(model, batch):
    features, labels, mask, dialogue_ids = batch            # a list, as COSMIC's collate_fn returns
    return model(features), labels, mask, dialogue_ids
'''
KEYWORDS = '''

class Keywords(nn.Module):
    def __init__(self):
        super().__init__()
        self.step = nn.Linear(5, 3)

    def forward(self, features, mask=None):                # no 'vid' argument: it must not be passed
        return self.step(features)


def build_model():
    return Keywords()
'''


def dialogue_batches(vids=((10, 11, 12), (13, 14)), lengths=((2, 3, 1), (3, 2))) -> list[dict]:
    """Padded dialogues (B, T) of 5 features, 3 emotions, a mask, and one id per dialogue under 'vid'."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for ids, sizes in zip(vids, lengths):
        steps = max(sizes)
        mask = (torch.arange(steps)[None, :] < torch.tensor(sizes)[:, None]).long()
        labels = torch.randint(0, 3, (len(ids), steps), generator=generator) * mask
        batches.append({"inputs": torch.randn(len(ids), steps, 5, generator=generator), "labels": labels,
                        "mask": mask, "vid": list(ids)})
    return batches


def make_tagger_run(root, batches, spec=SPEC, n_epochs=2):
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(spec)
    namespace: dict = {}
    exec(compile(spec, "<spec>", "exec"), namespace)
    for epoch in range(1, n_epochs + 1):
        torch.manual_seed(epoch)
        torch.save(namespace["build_model"]().state_dict(), run / "checkpoints" / f"epoch_{epoch}.pt")
    torch.save(batches, run / "val.pt")
    return run


def evaluated_ids(run, tmp_path) -> list[str]:
    config = build_config(run, {}, {"data": str(run / "val.pt"), "quiet": True, "out": str(tmp_path / "report")})
    return evaluate_run(config).items.ids.tolist()


DIALOGUE_ITEMS = ["10:0", "10:1", "11:0", "11:1", "11:2", "12:0", "13:0", "13:1", "13:2", "14:0", "14:1"]


def test_a_vid_per_dialogue_names_each_utterance(tmp_path):
    assert evaluated_ids(make_tagger_run(tmp_path, dialogue_batches()), tmp_path) == DIALOGUE_ITEMS


def test_ids_per_step_are_taken_as_given_and_ids_comes_first(tmp_path):
    batches = dialogue_batches()
    for batch in batches:
        batch["utterance_ids"] = [[f"d{vid}_u{t}" for t in range(batch["labels"].shape[1])] for vid in batch["vid"]]
    assert evaluated_ids(make_tagger_run(tmp_path / "a", batches), tmp_path / "a") == \
        [f"d{item.split(':')[0]}_u{item.split(':')[1]}" for item in DIALOGUE_ITEMS]
    for batch in batches:
        batch["ids"] = [f"dialogue-{vid}" for vid in batch["vid"]]
    assert evaluated_ids(make_tagger_run(tmp_path / "b", batches), tmp_path / "b") == \
        [f"dialogue-{item}" for item in DIALOGUE_ITEMS]


def test_forward_returns_the_ids_as_its_fourth_value(tmp_path):
    batches = [[b["inputs"], b["labels"], b["mask"], torch.tensor(b["vid"])] for b in dialogue_batches()]
    run = make_tagger_run(tmp_path, batches, SPEC + FORWARD)
    code, _, metrics = report(run, "--data", str(run / "val.pt"))
    assert code == 0
    assert evaluated_ids(run, tmp_path) == DIALOGUE_ITEMS


def test_id_keys_are_not_passed_to_a_model_taking_keywords(tmp_path):
    batches = [{"features": b["inputs"], "labels": b["labels"], "mask": b["mask"], "vid": b["vid"]}
               for b in dialogue_batches()]
    assert evaluated_ids(make_tagger_run(tmp_path, batches, SPEC + KEYWORDS), tmp_path) == DIALOGUE_ITEMS


def test_a_data_file_of_whole_set_tensors_may_carry_vid(tmp_path):
    generator = torch.Generator().manual_seed(1)
    content = {"inputs": torch.randn(5, 4, 5, generator=generator), "labels": torch.randint(0, 3, (5, 4)),
               "mask": torch.ones(5, 4, dtype=torch.long), "vid": torch.arange(500, 505)}
    run = make_tagger_run(tmp_path, [])
    torch.save(content, run / "val.pt")
    config = build_config(run, {}, {"data": str(run / "val.pt"), "batch_size": 2, "quiet": True,
                                    "out": str(tmp_path / "report")})
    evaluation = evaluate_run(config)
    assert evaluation.items.ids.tolist() == [f"{v}:{t}" for v in range(500, 505) for t in range(4)]
    assert evaluation.batch_sizes.rows == (2, 2, 1)


def _error(tmp_path, capsys, batches, spec=SPEC) -> str:
    run = make_tagger_run(tmp_path, batches, spec)
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("postmortem: error: "), err
    return lines[0]


def test_an_id_naming_two_items_is_an_error_naming_it(tmp_path, capsys):
    batches = dialogue_batches(vids=((10, 11, 12), (13, 11)))
    line = _error(tmp_path, capsys, batches)
    assert re.search(r"val\.pt: item id '11:0' names 2 counted items \(2 ids repeat\); ids must be unique "
                     r"\(two sequences with the same id\?\) \(the same for all 2 checkpoints\)$", line), line


def test_a_counted_item_without_an_id_is_an_error(tmp_path, capsys):
    batches = dialogue_batches()
    batches[1]["vid"] = [13, None]
    line = _error(tmp_path, capsys, batches)
    assert "val.pt: batch 2: the item at position 1 has no id (None); every counted item needs one" in line


def test_a_padded_row_may_go_without_an_id(tmp_path):
    batches = dialogue_batches(vids=((10, 11, 12), (13, None)), lengths=((2, 3, 1), (3, 2)))
    batches[1]["mask"][1] = 0
    assert evaluated_ids(make_tagger_run(tmp_path, batches), tmp_path) == DIALOGUE_ITEMS[:-2]


@pytest.mark.parametrize("missing", [0, 1])
def test_ids_for_some_batches_only_are_an_error(tmp_path, capsys, missing):
    batches = dialogue_batches()
    del batches[missing]["vid"]
    line = _error(tmp_path, capsys, batches)
    given = 2 if missing == 0 else 1
    assert f"val.pt: batch {missing + 1} has no item ids but batch {given} has them; give ids for every batch " \
           "(a batch key 'ids', 'utterance_ids', 'vid', or forward's fourth returned value) or for none" in line


def test_per_step_ids_of_the_wrong_length_are_an_error(tmp_path, capsys):
    batches = dialogue_batches()
    batches[0]["utterance_ids"] = [["a", "b"], ["c", "d"], ["e", "f"]]       # the batch has 3 steps
    batches[1]["utterance_ids"] = [["g", "h", "i"], ["j", "k", "l"]]
    line = _error(tmp_path, capsys, batches)
    assert "val.pt: batch 1: per-step ids of lengths [2] for labels of shape (3, 3); give one id per sequence (3,) " \
           "or one per step (3, 3)" in line


def test_default_ids_stay_positions(tmp_path):
    batches = dialogue_batches()
    for batch in batches:
        del batch["vid"]
    ids = evaluated_ids(make_tagger_run(tmp_path, batches), tmp_path)
    assert ids == ["0:0", "0:1", "1:0", "1:1", "1:2", "2:0", "3:0", "3:1", "3:2", "4:0", "4:1"]
    assert np.unique(ids).size == len(ids)
