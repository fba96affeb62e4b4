"""Property-based tests (hypothesis): checkpoint name parsing and ordering, the config reader, training
logs, and the analyses' accounting (shares sum to the loss; confusion matrices sum to the counted items)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from postmortem.config import OPTION_NAMES, build_config, read_config_file
from postmortem.errors import ConfigError
from postmortem.evaluate.records import OutputsAccumulator
from postmortem.load.discovery import CheckpointFile, choose_order_key, last_integer, order_checkpoints

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

words = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz_-=."), min_size=0, max_size=8)


# ----------------------------------------------------------------------------- names and order
@FAST
@given(prefix=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10),
       number=st.integers(0, 10**12), suffix=words)
def test_last_integer_is_the_last_run_of_digits(prefix, number, suffix):
    suffix = re.sub(r"\d", "", suffix)
    assume(not prefix or not prefix[-1].isdigit())
    assert last_integer(f"{prefix}{number}{suffix}") == number


@FAST
@given(prefix=words.filter(lambda w: not any(c.isdigit() for c in w)), numbers=st.sets(st.integers(0, 5000), min_size=1, max_size=12),
       data=st.data())
def test_names_order_naturally_whatever_the_listing_order(prefix, numbers, data):
    """epoch_10 after epoch_9, and the epoch reported is the number in the name."""
    files = [CheckpointFile(Path(f"{prefix}{n}.pt"), Path(f"{prefix}{n}.pt")) for n in numbers]
    shuffled = data.draw(st.permutations(files))
    ordered = order_checkpoints([(f, {}) for f in shuffled])
    assert [epoch for _, epoch in ordered] == sorted(numbers)
    assert [c.name for c, _ in ordered] == [f"{prefix}{n}.pt" for n in sorted(numbers)]


@FAST
@given(epochs=st.lists(st.integers(0, 100), min_size=1, max_size=10, unique=True), data=st.data())
def test_stored_epochs_win_over_names_and_order_is_listing_independent(epochs, data):
    names = data.draw(st.lists(st.integers(0, 10**6), min_size=len(epochs), max_size=len(epochs), unique=True))
    entries = [(CheckpointFile(Path(f"ckpt_{n}.pt"), Path(f"ckpt_{n}.pt")), {"epoch": e, "global_step": 10 * e})
               for n, e in zip(names, epochs)]
    ordered = order_checkpoints(entries)
    assert [epoch for _, epoch in ordered] == sorted(epochs)
    assert order_checkpoints(data.draw(st.permutations(entries))) == ordered


@FAST
@given(steps=st.lists(st.integers(1, 10**6), min_size=2, max_size=10, unique=True), data=st.data())
def test_one_key_for_the_whole_series(steps, data):
    """When only some checkpoints store a whole epoch (Hugging Face: 0.5, 1.0, 1.5), all order by step."""
    steps = sorted(steps)
    with_epoch = data.draw(st.lists(st.booleans(), min_size=len(steps), max_size=len(steps)))
    assume(not all(with_epoch))
    entries = [(CheckpointFile(Path(f"checkpoint-{s}"), Path(f"checkpoint-{s}/model.safetensors")),
                {"global_step": s, **({"epoch": len(steps) - i} if has else {})})   # epochs that would reverse the order
               for i, (s, has) in enumerate(zip(steps, with_epoch))]
    assert choose_order_key([meta for _, meta in entries]) == "global_step"
    assert [epoch for _, epoch in order_checkpoints(data.draw(st.permutations(entries)))] == steps


@FAST
@given(numbered=st.sets(st.integers(0, 50), min_size=0, max_size=5),
       unnumbered=st.sets(st.sampled_from(["best", "last", "final", "latest", "model"]), min_size=1, max_size=3))
def test_unnumbered_files_come_last_numbered_on(numbered, unnumbered):
    entries = [(CheckpointFile(Path(f"e{n}.pt"), Path(f"e{n}.pt")), {}) for n in numbered] + \
              [(CheckpointFile(Path(f"{w}.pt"), Path(f"{w}.pt")), {}) for w in unnumbered]
    ordered = order_checkpoints(entries)
    epochs = [epoch for _, epoch in ordered]
    assert epochs[:len(numbered)] == sorted(numbered)
    start = max(numbered) + 1 if numbered else 1
    assert epochs[len(numbered):] == list(range(start, start + len(unnumbered)))
    assert [c.name for c, _ in ordered][len(numbered):] == [f"{w}.pt" for w in sorted(unnumbered)]


# ----------------------------------------------------------------------------- the config reader
simple_values = {
    "outputs": st.sampled_from(["auto", "logits", "log_probs", "probs"]),
    "ignore_index": st.integers(-1000, 1000),
    "batch_size": st.integers(1, 4096),
    "no_pdf": st.booleans(),
    "quiet": st.booleans(),
    "trust_checkpoints": st.booleans(),
    "device": st.sampled_from(["cpu", "cuda", "mps", "cuda:1"]),
    "title": st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),
    "class_weights": st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=6),
    "class_names": st.lists(st.text(alphabet="abcxyz<>&\"' ", min_size=1, max_size=6).map(str.strip).filter(bool).filter(lambda s: "," not in s),
                            min_size=1, max_size=6, unique=True),
}


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@FAST
@given(options=st.fixed_dictionaries({}, optional=simple_values), dashes=st.booleans())
def test_config_file_round_trip(tmp_path_factory, options, dashes):
    if "class_names" in options and "class_weights" in options:
        options["class_weights"] = (options["class_weights"] * 6)[:len(options["class_names"])]
    run = tmp_path_factory.mktemp("run")
    lines = [f"{name.replace('_', '-') if dashes else name} = {toml_value(value)}" for name, value in options.items()]
    (run / "postmortem.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    read = read_config_file(run)
    assert read == options
    config = build_config(run, read, {})
    for name, value in options.items():
        got = getattr(config, name)
        assert (tuple(value) if isinstance(value, list) else value) == (tuple(got) if isinstance(got, tuple) else got)


@FAST
@given(file_value=st.integers(1, 100), flag_value=st.one_of(st.none(), st.integers(1, 100)))
def test_flags_override_the_file(tmp_path_factory, file_value, flag_value):
    run = tmp_path_factory.mktemp("run")
    (run / "postmortem.toml").write_text(f"batch-size = {file_value}\n")
    config = build_config(run, read_config_file(run), {"batch_size": flag_value})
    assert config.batch_size == (flag_value if flag_value is not None else file_value)


@FAST
@given(key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=16))
def test_unknown_keys_are_named(tmp_path_factory, key):
    assume(key.strip().replace("-", "_") not in OPTION_NAMES)
    run = tmp_path_factory.mktemp("run")
    (run / "postmortem.toml").write_text(f'"{key}" = 1\n')
    with pytest.raises(ConfigError) as error:
        read_config_file(run)
    message = str(error.value)
    assert f"unknown option '{key}'" in message
    suggestion = re.search(r"did you mean '([\w-]+)'\?$", message)
    if suggestion:
        assert suggestion.group(1).replace("-", "_") in OPTION_NAMES


@FAST
@given(path=st.sampled_from(["val.pt", "data/val.npz", "spec.py:val_data", "sub/dir/spec.py:build", "pkg.mod:fn"]))
def test_paths_in_the_file_are_relative_to_run(tmp_path_factory, path):
    run = tmp_path_factory.mktemp("run")
    (run / "postmortem.toml").write_text(f'data = "{path}"\n')
    value = read_config_file(run)["data"]
    if path == "pkg.mod:fn":
        assert value == path
    else:
        assert value == str(run / path.split(":")[0]) + (":" + path.split(":")[1] if ":" in path else "")


# ----------------------------------------------------------------------------- training logs
@FAST
@given(n=st.integers(1, 12), one_based=st.booleans(), extra=st.booleans(), data=st.data())
def test_csv_logs_read_back(tmp_path_factory, n, one_based, extra, data):
    from postmortem.load.train_log import per_epoch, read_train_log

    numbers = st.floats(0.001, 10, allow_nan=False)
    val = data.draw(st.lists(numbers, min_size=n, max_size=n))
    train = data.draw(st.lists(numbers, min_size=n, max_size=n))
    header = data.draw(st.sampled_from(["epoch,train_loss,val_loss", "Epoch,Train Loss,Val Loss",
                                        "epoch,loss,eval_loss", "epoch,train/loss,val/loss"]))
    path = tmp_path_factory.mktemp("log") / "log.csv"
    rows = [f"{i + one_based},{t!r},{v!r}" + (",0.5" if extra else "") for i, (t, v) in enumerate(zip(train, val))]
    path.write_text(header + (",val_acc" if extra else "") + "\n" + "\n".join(rows) + "\n")
    log = read_train_log(path)
    assert log["val_loss"].tolist() == val and log["train_loss"].tolist() == train
    assert log["epoch"].tolist() == [float(i + one_based) for i in range(n)]
    assert per_epoch(log)["val_loss"].tolist() == val


# ----------------------------------------------------------------------------- the analyses' accounting
@st.composite
def epoch_outputs(draw):
    n_classes = draw(st.integers(2, 6))
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 60.0]))
    logits = rng.normal(size=(n, n_classes)) * scale
    labels = rng.integers(0, n_classes, n)
    ignored = rng.random(n) < draw(st.sampled_from([0.0, 0.3]))
    labels[ignored] = -100
    mask = (rng.random(n) < 0.8).astype(np.int64) if draw(st.booleans()) else None
    weights = draw(st.one_of(st.none(), st.lists(st.floats(0.1, 5), min_size=n_classes, max_size=n_classes)))
    return logits, labels, mask, weights


@FAST
@given(outputs=epoch_outputs(), other_seed=st.integers(0, 1000))
def test_shares_sum_to_the_loss_and_confusion_sums_to_the_counted_items(outputs, other_seed):
    from postmortem.analyze.decomposition import decompose_loss_change
    from postmortem.analyze.metrics import epoch_metrics

    logits, labels, mask, weights = outputs
    counted = (labels != -100) & (mask != 0 if mask is not None else True)
    assume(counted.sum() > 0)
    if weights is not None:
        assume(np.asarray(weights)[labels[counted]].sum() > 0)
    accumulator = OutputsAccumulator(weights, -100, "test")
    accumulator.add(logits, labels, mask)
    items, records = accumulator.finish()
    class_weights = np.ones(logits.shape[1]) if weights is None else np.asarray(weights)
    metrics = epoch_metrics(items.labels, records.pred, records.nll, class_weights)

    assert metrics.n_samples == int(counted.sum()) == metrics.confusion.sum()
    assert math.isclose(sum(c.loss_share for c in metrics.per_class), metrics.loss, rel_tol=1e-9, abs_tol=1e-12)
    assert [c.support for c in metrics.per_class] == metrics.confusion.sum(axis=1).tolist()
    expected = F.nll_loss(torch.log_softmax(torch.from_numpy(logits[counted]), -1), torch.from_numpy(labels[counted]),
                          weight=None if weights is None else torch.tensor(weights, dtype=torch.float64))
    assert math.isclose(metrics.loss, float(expected), rel_tol=1e-9, abs_tol=1e-12)

    rng = np.random.default_rng(other_seed)        # a second epoch: the change splits exactly by class and group
    later = OutputsAccumulator(weights, -100, "test")
    later.add(logits + rng.normal(size=logits.shape) * 3, labels, mask)
    _, after = later.finish()
    change = decompose_loss_change(items.labels, class_weights, records, after, 0, 1)
    assert math.isclose(change.by_class_transition.sum(), change.loss_change, rel_tol=1e-9, abs_tol=1e-12)
    assert change.item_counts.sum() == metrics.n_samples
