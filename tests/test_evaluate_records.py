"""Per-item records against independent computations in torch (softmax, Categorical entropy, topk margins)."""
from __future__ import annotations

import numpy as np
import torch

from postmortem.evaluate.records import counted_rows, log_softmax64, reduce_log_probs


def test_every_item_scalar_matches_torch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 6, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, 6, (200,), generator=generator)
    weights = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0], dtype=torch.float64)
    records = reduce_log_probs(log_softmax64(logits.numpy()), labels.numpy(), weights[labels].numpy())

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
