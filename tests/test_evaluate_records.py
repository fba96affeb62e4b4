"""Per-item records against independent computations in torch (softmax, Categorical entropy, topk margins)."""
from __future__ import annotations

import numpy as np
import torch

import pytest

from postmortem.evaluate import temperature
from postmortem.evaluate.records import counted_rows, reduce_outputs


@pytest.mark.parametrize("block_bytes", [temperature.BLOCK_BYTES, 8 * 6 * 7])   # one block, and blocks of 7 rows
def test_every_item_scalar_matches_torch(block_bytes, monkeypatch):
    monkeypatch.setattr(temperature, "BLOCK_BYTES", block_bytes)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 6, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, 6, (200,), generator=generator)
    weights = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0], dtype=torch.float64)
    records, n_nonfinite = reduce_outputs(logits.numpy(), labels.numpy(), weights[labels].numpy())
    assert n_nonfinite == 0

    probs = torch.softmax(logits, dim=1)
    np.testing.assert_array_equal(records.pred, probs.argmax(dim=1).numpy())
    np.testing.assert_allclose(records.confidence, probs.max(dim=1).values.numpy(), rtol=1e-12)
    nll = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    np.testing.assert_allclose(records.nll, nll.numpy(), rtol=1e-12)
    np.testing.assert_allclose(records.entropy, torch.distributions.Categorical(logits=logits).entropy().numpy(),
                               rtol=1e-10)
    np.testing.assert_allclose(records.sum_sq_prob, (probs ** 2).sum(dim=1).numpy(), rtol=1e-12)
    centred = logits - logits.mean(dim=1, keepdim=True)           # the logits up to a shift
    np.testing.assert_allclose(records.logit_norm, centred.norm(dim=1).numpy(), rtol=1e-12)
    true_logit = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf"))
    np.testing.assert_allclose(records.margin, (true_logit - others.max(dim=1).values).numpy(), rtol=1e-10, atol=1e-12)
    assert ((records.margin > 0) == (records.pred == labels.numpy())).all()


def test_counted_rows_keeps_unmasked_items_that_are_not_ignored():
    outputs = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2)
    labels = np.array([[0, -100, 1], [1, 0, 0]])
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    rows = counted_rows(outputs, labels, mask, ignore_index=-100)
    np.testing.assert_array_equal(rows, outputs[[0, 0, 1, 1], [0, 2, 0, 1]])
    assert counted_rows(outputs, labels[:, :2], None, -100).shape == (0, 2)   # shapes disagree: nothing
    np.testing.assert_array_equal(counted_rows(outputs, labels, mask, -100, limit=3), rows[:3])
    np.testing.assert_array_equal(counted_rows(outputs, labels, mask, -100, limit=10), rows)


def test_an_owned_batch_is_kept_without_a_copy_and_another_is_copied():
    """A predictions file's outputs are the accumulator's to keep (owned); a model's batch may be reused."""
    from postmortem.evaluate.records import OutputsAccumulator

    outputs, labels = np.random.default_rng(0).normal(size=(6, 3)), np.array([0, 1, 2, 0, 1, 2])
    for owned in (True, False):
        accumulator = OutputsAccumulator(None, -100, "test")
        accumulator.add(outputs, labels, None, owned=owned)
        assert np.shares_memory(accumulator._outputs[0], outputs) == owned
        items, records = accumulator.finish()
        np.testing.assert_array_equal(records.pred, outputs.argmax(axis=1))


def test_probabilities_log_probabilities_and_float32_logits_give_the_same_records():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(300, 5)) * 2
    labels = rng.integers(0, 5, 300)
    weights = np.ones(300)
    reference, _ = reduce_outputs(logits, labels, weights)
    log_probs = torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()
    for outputs, kind in ((log_probs, "log_probs"), (np.exp(log_probs), "probs"), (log_probs, "logits")):
        records, _ = reduce_outputs(outputs, labels, weights, kind)
        for name, values in reference.arrays().items():
            if name != "logit_norm":     # log-probabilities are the logits up to a shift, which centring removes
                np.testing.assert_allclose(getattr(records, name), values, rtol=1e-12, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(records.logit_norm, reference.logit_norm, rtol=1e-12)
        assert records.temperature == pytest.approx(reference.temperature, rel=1e-9)
    # float32 outputs are taken to float64 before the softmax: the loss is that of the float32 logits, exactly
    single = logits.astype(np.float32)
    records, _ = reduce_outputs(single, labels, weights)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(single).double(), torch.from_numpy(labels), reduction="none")
    np.testing.assert_allclose(records.nll, expected.numpy(), rtol=1e-13)


def test_items_without_probabilities_are_counted_and_a_zero_probability_is_not_one():
    outputs = np.array([[0.0, 1.0, 2.0],
                        [np.nan, 1.0, 2.0],          # NaN anywhere: no probabilities
                        [np.inf, 1.0, 2.0],          # +inf anywhere: none either
                        [-np.inf, -np.inf, -np.inf],  # all -inf: none
                        [-np.inf, 1.0, 2.0]])        # one -inf: a probability of exactly 0
    labels = np.array([0, 1, 2, 0, 1])
    records, n_nonfinite = reduce_outputs(outputs, labels, np.ones(5))
    assert records is None and n_nonfinite == 3
    records, n_nonfinite = reduce_outputs(outputs[[0, 4]], np.array([0, 0]), np.ones(2))
    assert n_nonfinite == 0
    assert records.nll[1] == np.inf                      # the true class has probability 0
    expected_entropy = torch.distributions.Categorical(logits=torch.tensor([1.0, 2.0], dtype=torch.float64)).entropy()
    assert records.entropy[1] == pytest.approx(float(expected_entropy), rel=1e-12)
    assert np.isfinite(records.logit_norm).all() and np.isfinite([records.temperature, records.scaled_loss]).all()
