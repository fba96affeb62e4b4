"""The on-device reduction (torch; what a CUDA run uses) against the host one (numpy), run here on CPU tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from postmortem.evaluate.device_reduce import DeviceOutputs, reduce_on_device, reduces_on_device
from postmortem.evaluate.model_runner import run_checkpoint
from postmortem.evaluate.records import HostOutputs, OutputsAccumulator, reduce_outputs


def _assert_same_records(device_records, host_records):
    for name, values in host_records.arrays().items():
        np.testing.assert_allclose(getattr(device_records, name), values, rtol=1e-11, atol=1e-12, err_msg=name)
    assert device_records.pred.dtype == np.int64 and device_records.n_classes == host_records.n_classes
    assert device_records.temperature == pytest.approx(host_records.temperature, rel=1e-9)
    assert device_records.scaled_loss == pytest.approx(host_records.scaled_loss, rel=1e-9)


def _outputs(kind: str, n=17000, c=7, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 3
    labels = rng.integers(0, c, n)
    log_probs = torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()
    return {"logits": logits.astype(np.float32), "log_probs": log_probs, "probs": np.exp(log_probs)}[kind], labels


@pytest.mark.parametrize("kind", ["logits", "log_probs", "probs"])
def test_device_records_equal_host_records(kind):
    outputs, labels = _outputs(kind)
    weights = np.random.default_rng(1).uniform(0.5, 3.0, len(labels))   # over 16k items: the subsample start too
    host, host_bad = reduce_outputs(outputs, labels, weights, kind)
    device, device_bad = reduce_on_device(torch.from_numpy(outputs), labels, weights, kind)
    assert host_bad == device_bad == 0
    _assert_same_records(device, host)


def test_device_reduction_counts_the_same_items_without_probabilities_and_handles_zero_probabilities():
    outputs = np.array([[0.0, 1.0, 2.0], [np.nan, 1.0, 2.0], [np.inf, 1.0, 2.0], [-np.inf] * 3, [-np.inf, 1.0, 2.0]])
    labels = np.array([0, 1, 2, 0, 1])
    assert reduce_on_device(torch.from_numpy(outputs), labels, np.ones(5))[1] == reduce_outputs(outputs, labels, np.ones(5))[1] == 3
    kept, kept_labels = outputs[[0, 4]], np.array([0, 0])
    device, _ = reduce_on_device(torch.from_numpy(kept), kept_labels, np.ones(2))
    host, _ = reduce_outputs(kept, kept_labels, np.ones(2))
    assert device.nll[1] == host.nll[1] == np.inf
    _assert_same_records(device, host)
    single, _ = reduce_on_device(torch.zeros(4, 1), np.zeros(4, dtype=np.int64), np.ones(4))   # one class
    assert (single.margin == np.inf).all() and (single.nll == 0).all()


def test_a_checkpoint_reduced_on_its_device_gives_the_host_numbers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.GRU(8, 16, batch_first=True))
    head = torch.nn.Linear(16, 5)

    class Tagger(torch.nn.Module):
        def forward(self, tokens):
            return head(model(tokens)[0])

    tokens = torch.randint(0, 50, (40, 9))
    labels = torch.randint(0, 5, (40, 9))
    labels[:, 7:] = -100                                                  # padding that does not count
    mask = (torch.rand(40, 9) > 0.2).long()
    batches = [{"inputs": tokens[i:i + 16], "labels": labels[i:i + 16], "mask": mask[i:i + 16]} for i in range(0, 40, 16)]
    weights = np.array([1.0, 2.0, 0.5, 1.5, 3.0])
    results = []
    for store, on_device in ((HostOutputs(), False), (DeviceOutputs(), True)):
        accumulator = OutputsAccumulator(weights, -100, "test", store=store)
        kind = run_checkpoint(Tagger().eval(), batches, None, "auto", accumulator, on_device)
        results.append((kind, *accumulator.finish(kind)))
    (host_kind, host_items, host), (device_kind, device_items, device) = results
    assert host_kind == device_kind == "logits"
    np.testing.assert_array_equal(device_items.labels, host_items.labels)
    np.testing.assert_array_equal(device_items.ids, host_items.ids)
    _assert_same_records(device, host)
    counted = (labels != -100) & (mask != 0)
    expected = torch.nn.functional.cross_entropy(Tagger()(tokens)[counted].double(), labels[counted], reduction="none")
    np.testing.assert_allclose(device.nll, expected.detach().numpy(), rtol=1e-6)   # float32 forward, float64 loss


def test_only_cuda_reduces_on_the_device():
    assert reduces_on_device("cuda") and reduces_on_device("cuda:1")
    assert not reduces_on_device("cpu") and not reduces_on_device("mps")   # MPS has no float64
