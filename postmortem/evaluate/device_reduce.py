"""Reduction where the outputs are: on a CUDA GPU, the per-item records and the temperature fit are computed in
torch on the device, and only the N x 7 per-item scalars come back to the host.

The formulas are those of records.reduce_outputs, which stays the reduction on a CPU (numpy in cache-sized
blocks is faster there) and is what this one is tested against, on CPU tensors. The temperature search itself
is shared: temperature._fit only asks its logits for moments, nll and rows, which TensorShiftedLogits answers.
"""
from __future__ import annotations

import numpy as np
import torch

from .records import EpochRecords
from .temperature import ShiftedLogits, crossfit_temperature

__all__ = ["DeviceOutputs", "TensorShiftedLogits", "reduce_on_device", "reduces_on_device"]


def reduces_on_device(device: str) -> bool:
    """CUDA reduces on the device. MPS has no float64, and on a CPU the host reduction is faster."""
    return torch.device(device).type == "cuda"


class TensorShiftedLogits(ShiftedLogits):
    """ShiftedLogits holding torch tensors: one whole-matrix pass per call (a GPU has no page faults to avoid)."""

    def moments(self, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        e = torch.exp(self.shifted * beta)
        norm = e.sum(dim=1)
        mean = (e * self.shifted).sum(dim=1) / norm
        return mean, (e * self.shifted.square()).sum(dim=1) / norm - mean.square()

    def nll(self, beta: float) -> torch.Tensor:
        return torch.log(torch.exp(self.shifted * beta).sum(dim=1)) - beta * self.true_gap


def reduce_on_device(outputs: torch.Tensor, labels: np.ndarray, item_weights: np.ndarray,
                     kind: str = "logits") -> tuple[EpochRecords | None, int]:
    """reduce_outputs for outputs (N, C) on a torch device: the same records, the same count of items with no
    probabilities (NaN or +inf anywhere, or a row of only -inf)."""
    device = outputs.device
    y = torch.as_tensor(labels, device=device)
    scores = outputs.to(torch.float64)
    if kind == "probs":
        scores = scores.log()
    finite = bool(torch.isfinite(scores).all())
    if not finite:
        n_nonfinite = int((scores.isnan().any(dim=1) | scores.isposinf().any(dim=1) | scores.isneginf().all(dim=1)).sum())
        if n_nonfinite:
            return None, n_nonfinite
    n, n_classes = scores.shape
    at = torch.arange(n, device=device)
    s = scores - scores.amax(dim=1, keepdim=True)
    e = torch.exp(s)
    norm = e.sum(dim=1, keepdim=True)
    log_probs = s - torch.log(norm)
    probs = e / norm
    pred = s.argmax(dim=1)
    if n_classes > 1:
        others = s.clone()
        others[at, y] = -torch.inf
        margin = s[at, y] - others.amax(dim=1)
    else:
        margin = torch.full((n,), torch.inf, dtype=torch.float64, device=device)
    # p log p is 0 where p is 0 (and log p is -inf)
    entropy = -(probs * (log_probs if finite else torch.where(probs > 0, log_probs, 0.0))).sum(dim=1)
    if not finite:   # probabilities of exactly 0: clamp at the float64 floor, so logits stay finite
        s = s.clamp_min(float(np.log(np.finfo(np.float64).tiny)))
    centred = s - s.mean(dim=1, keepdim=True)
    weights = torch.as_tensor(item_weights, dtype=torch.float64, device=device)
    fit = crossfit_temperature(TensorShiftedLogits(s, s[at, y]), weights)
    scalars = {"pred": pred, "confidence": probs[at, pred], "nll": -log_probs[at, y], "margin": margin,
               "logit_norm": centred.square().sum(dim=1).sqrt(), "entropy": entropy,
               "sum_sq_prob": probs.square().sum(dim=1)}
    return EpochRecords(n_classes=n_classes, temperature=fit.temperature, scaled_loss=fit.scaled_loss,
                        **{name: values.cpu().numpy() for name, values in scalars.items()}), 0


class DeviceOutputs:
    """An accumulator's store for outputs left on the device: counted rows kept there, reduced there."""

    @staticmethod
    def keep(outputs: torch.Tensor, counted: np.ndarray) -> torch.Tensor:
        rows = outputs.reshape(-1, outputs.shape[-1])
        return rows.clone() if counted.all() else rows[torch.as_tensor(counted.reshape(-1), device=outputs.device)]

    join = staticmethod(torch.cat)
    reduce = staticmethod(reduce_on_device)
