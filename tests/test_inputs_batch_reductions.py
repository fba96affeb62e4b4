"""Every candidate reduction of reconcile's table, computed from the cached records, against the same reduction written
as a training loop writes it (torch's nll_loss per batch, in float64); and each one named when a log is written
with it. The data: dialogues in batches of 4, 4, 3 and 2 rows, padded, with masked-in utterances whose label is
ignore_index (so mask sums differ from counted items) and one batch where nothing counts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _fixtures_inputs import make_run
from postmortem.analyze.reconcile import CANDIDATES, Candidate, measured_candidate, reconcile_logged_loss
from postmortem.config import build_config
from postmortem.evaluate.runner import evaluate_run
from postmortem.load.train_log import read_train_log

WEIGHTS = [0.5, 2.0, 1.0, 4.0]
ROWS = (4, 4, 1, 3, 2)          # the third batch counts nothing

SPEC = '''
import torch
from torch import nn


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.step = nn.Linear(5, 4)

    def forward(self, x):
        return self.step(x)


def build_model():
    return Tagger()
'''


def _batches() -> list[dict]:
    generator = torch.Generator().manual_seed(3)
    batches, vid = [], 100
    for number, rows in enumerate(ROWS):
        steps = 3 + number
        lengths = torch.randint(1, steps + 1, (rows,), generator=generator)
        mask = (torch.arange(steps)[None, :] < lengths[:, None]).long()
        labels = torch.randint(0, 4, (rows, steps), generator=generator)
        labels[mask == 0] = -100
        labels[(torch.rand(rows, steps, generator=generator) < 0.2) & (mask == 1)] = -100   # masked in, not counted
        if number == 2:
            labels[:] = -100
        batches.append({"inputs": torch.randn(rows, steps, 5, generator=generator), "labels": labels, "mask": mask,
                        "vid": torch.arange(vid, vid + rows)})
        vid += rows
    return batches


@pytest.fixture(scope="module")
def tagged_run(tmp_path_factory):
    """RUN/ with the tagger's spec, val.pt (the batches above) and two checkpoints of differently seeded taggers."""
    run = tmp_path_factory.mktemp("reductions") / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(SPEC)
    torch.save(_batches(), run / "val.pt")
    namespace: dict = {}
    exec(compile(SPEC, "<spec>", "exec"), namespace)
    models = []
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        models.append(namespace["Tagger"]().eval())
        torch.save(models[-1].state_dict(), run / "checkpoints" / f"epoch_{epoch}.pt")
    config = build_config(run, {}, {"data": str(run / "val.pt"), "class_weights": WEIGHTS, "quiet": True,
                                    "out": str(run.parent / "report")})
    return run, evaluate_run(config), models


def loop_values(model) -> dict[str, float]:
    """Each candidate as a validation loop computes it: per batch, torch's nll_loss over the items that count."""
    w = torch.tensor(WEIGHTS, dtype=torch.float64)
    batch_loss, batch_plain, counted, masked, rows, all_lp, all_y = [], [], [], [], [], [], []
    with torch.no_grad():
        for batch in _batches():
            lp = F.log_softmax(model(batch["inputs"]).double(), -1)
            keep = (batch["mask"] != 0) & (batch["labels"] != -100)
            if not keep.any():
                continue            # a loop skips a batch with nothing to count (its loss would be 0/0)
            lp, y = lp[keep], batch["labels"][keep]
            batch_loss.append(F.nll_loss(lp, y, weight=w).item())
            batch_plain.append(F.nll_loss(lp, y).item())
            counted.append(int(keep.sum()))
            masked.append(int(batch["mask"].sum()))
            rows.append(len(batch["labels"]))
            all_lp.append(lp)
            all_y.append(y)
    lp, y = torch.cat(all_lp), torch.cat(all_y)
    total = {}
    for name, by in (("count", counted), ("mask", masked), ("rows", rows)):
        total[name] = sum(loss * n for loss, n in zip(batch_loss, by)) / sum(by)
        total["plain_" + name] = sum(loss * n for loss, n in zip(batch_plain, by)) / sum(by)
    return {"exact": F.nll_loss(lp, y, weight=w).item(),
            "batch_means_by_count": total["count"], "batch_means_by_mask": total["mask"],
            "batch_means_by_rows": total["rows"], "mean_of_batch_means": sum(batch_loss) / len(batch_loss),
            "last_batch": batch_loss[-1], "sum_of_batch_means": sum(batch_loss),
            "unweighted": F.nll_loss(lp, y).item(), "mean_of_unweighted_batch_means": sum(batch_plain) / len(batch_plain),
            "unweighted_batch_means_by_mask": total["plain_mask"],
            "unweighted_batch_means_by_rows": total["plain_rows"],
            "weighted_sum_over_count": F.nll_loss(lp, y, weight=w, reduction="sum").item() / len(y),
            "sum": F.nll_loss(lp, y, weight=w, reduction="sum").item()}


def write_log(path, values, decimals=None):
    rows = "".join(f"{epoch},0.9,{(v if decimals is None else round(v, decimals))!r}\n"
                   for epoch, v in enumerate(values, start=1))
    path.write_text("epoch,train_loss,val_loss\n" + rows)
    return read_train_log(path)


def test_every_candidate_is_the_loop_it_describes(tagged_run, tmp_path):
    _, evaluation, models = tagged_run
    assert evaluation.batch_sizes.rows == ROWS
    assert evaluation.batch_sizes.counted[2] == 0
    assert all(m > n for m, n in zip(evaluation.batch_sizes.masked, evaluation.batch_sizes.counted))
    expected = [loop_values(m) for m in models]
    assert set(expected[0]) == {c.name for c in CANDIDATES}
    result = reconcile_logged_loss(evaluation, write_log(tmp_path / "log.csv", [1.0, 1.0]))
    for name in expected[0]:
        assert np.allclose(result.rows[name], [e[name] for e in expected], rtol=1e-10, atol=0), name
    values = np.array(list(expected[0].values()))
    gaps = np.abs(values[:, None] - values[None, :]) / values[None, :]
    assert gaps[~np.eye(len(values), dtype=bool)].min() > 1e-3      # the data tells every candidate apart


@pytest.mark.parametrize("name", [c.name for c in CANDIDATES])
def test_a_log_written_with_a_reduction_is_named_by_it(tagged_run, tmp_path, name):
    _, evaluation, models = tagged_run
    logged = [loop_values(m)[name] for m in models]
    result = reconcile_logged_loss(evaluation, write_log(tmp_path / "log.csv", logged))
    assert result.explanation == name
    assert result.agrees == (name == "exact")
    chosen = result.explained_by
    assert chosen.formula in result.explanation_text and chosen.meaning in result.explanation_text
    if name != "exact":
        assert result.matching == (name,)
        assert result.difference(name) < 1e-9
        assert "which reproduces the log at all 2 epochs" in result.explanation_text


def test_a_rounded_log_is_named_to_its_decimals_and_a_coarse_one_is_not(tagged_run, tmp_path):
    _, evaluation, models = tagged_run
    logged = [loop_values(m)["batch_means_by_mask"] for m in models]
    rounded = reconcile_logged_loss(evaluation, write_log(tmp_path / "log4.csv", logged, decimals=4))
    assert rounded.explanation == "batch_means_by_mask" and rounded.written_decimals == 4
    assert rounded.rounded and rounded.reproduce_tolerance == pytest.approx(0.5e-4 / min(round(v, 4) for v in logged))
    assert f"to {rounded.reproduce_tolerance:.1e} relative, the rounding of the 4 decimals the log is written with" \
        in rounded.explanation_text
    full = reconcile_logged_loss(evaluation, write_log(tmp_path / "log.csv", logged))
    assert full.written_decimals is None and not full.rounded and full.reproduce_tolerance == 1e-6
    coarse = reconcile_logged_loss(evaluation, write_log(tmp_path / "log1.csv", logged, decimals=1))
    assert coarse.explanation is None and coarse.written_decimals == 1 and not coarse.resolvable
    assert "the 1 decimal the log is written with, too few to tell the reductions apart" in coarse.explanation_text


def test_a_log_no_candidate_reproduces_names_the_closest(tagged_run, tmp_path):
    _, evaluation, models = tagged_run
    logged = [loop_values(m)["batch_means_by_count"] * (1 + 3e-5) for m in models]   # off by more than 1e-6
    result = reconcile_logged_loss(evaluation, write_log(tmp_path / "log.csv", logged))
    assert result.explanation is None and result.closest == "batch_means_by_count"
    assert abs(result.closest_difference - 3e-5) < 1e-9
    assert "closest: the per-batch losses averaged with each batch's number of counted items" in result.explanation_text
    looser = reconcile_logged_loss(evaluation, write_log(tmp_path / "log.csv", logged), reproduce_tolerance=1e-4)
    assert looser.explanation == "batch_means_by_count"


def test_a_measured_candidate_is_named_at_the_epochs_it_was_measured(tagged_run, tmp_path):
    """The integrator's later candidate (a train-mode pass measured for some checkpoints) is one more row of the
    table, with values from outside the per-item losses; epochs without a value are not compared."""
    _, evaluation, models = tagged_run
    measured = measured_candidate("train_mode", "the loss of a train-mode pass", "L_train_mode", {1: 1.2345678})
    log = write_log(tmp_path / "log.csv", [1.2345678, 5.0])
    result = reconcile_logged_loss(evaluation, log, candidates=CANDIDATES + (measured,))
    assert result.explanation == "train_mode" and math.isnan(result.rows["train_mode"].iloc[1])
    assert "which reproduces the log at the 1 of 2 epochs it was measured at" in result.explanation_text
    other = measured_candidate("train_mode", "the loss of a train-mode pass", "L_train_mode", {1: 1.3})
    assert reconcile_logged_loss(evaluation, log, candidates=CANDIDATES + (other,)).explanation is None
    with pytest.raises(ValueError, match="candidate names repeat"):
        reconcile_logged_loss(evaluation, log, candidates=CANDIDATES + (Candidate("sum", "", "", lambda e: 0.0),))


def test_data_read_as_one_batch_has_no_per_batch_values(tmp_path):
    run, models = make_run(tmp_path, n_epochs=2)
    evaluation = evaluate_run(build_config(run, {}, {"data": str(run / "val.pt"), "quiet": True,
                                                     "out": str(tmp_path / "report")}))
    assert evaluation.batch_sizes.counted == (40,)
    result = reconcile_logged_loss(evaluation, write_log(tmp_path / "log.csv", [0.5, 0.4]))
    per_batch = [c.name for c in CANDIDATES if c.per_batch]
    assert result.rows[per_batch].isna().all().all()
    assert "the data came as one batch" in result.batch_note


def test_the_readme_lists_every_candidate_with_its_formula():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for candidate in CANDIDATES:
        assert f"| `{candidate.name}` | `{candidate.formula}` |" in readme, candidate.name
