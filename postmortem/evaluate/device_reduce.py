"""Reduction where the outputs are: on a CUDA GPU, the per-item records and the temperature fit are computed in
torch on the device, and only the N x 7 per-item scalars come back to the host.

The formulas are records.score_rows and the temperature search is temperature._fit, both shared with the host
reduction (records.reduce_outputs, numpy in cache-sized blocks: faster on a CPU), which this one is tested
against on CPU tensors; the fit only asks its logits for moments, central moments, nll, rows and for_search,
which TensorShiftedLogits answers.
"""
from __future__ import annotations

import numpy as np
import torch

from .records import EpochRecords, own_groups, score_rows
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

    def central_moments(self, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        e = torch.exp(self.shifted * beta)
        norm = e.sum(dim=1)
        mean = (e * self.shifted).sum(dim=1) / norm
        centred = self.shifted - mean[:, None]
        e_square = e * centred.square()
        e_cube = e_square * centred
        return mean, e_square.sum(dim=1) / norm, e_cube.sum(dim=1) / norm, (e_cube * centred).sum(dim=1) / norm

    def scaled(self, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        log_norm = torch.log(torch.exp(self.shifted * beta).sum(dim=1))
        return log_norm - beta * self.true_gap, torch.exp(-log_norm)

    def for_search(self) -> TensorShiftedLogits:
        """The search passes stay float64: a GPU's float64 exponentials are not what a reduction waits for."""
        return self

    def indices(self, mask: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.flatnonzero(mask), device=self.true_gap.device)

    def as_array(self, values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(values, dtype=self.true_gap.dtype, device=self.true_gap.device)

    def zeros(self) -> torch.Tensor:
        return torch.zeros_like(self.true_gap)


def reduce_on_device(outputs: torch.Tensor, labels: np.ndarray, item_weights: np.ndarray, kind: str = "logits", *,
                     groups: np.ndarray | None = None) -> tuple[EpochRecords | None, int]:
    """reduce_outputs for outputs (N, C) on a torch device: score_rows on the whole matrix there, then the
    temperature fit; the same records and the same count of items with no probabilities."""
    device = outputs.device
    scores = outputs.to(torch.float64)
    if kind == "probs":
        scores = scores.log()
    n_nonfinite, records, shifted, true_gap = score_rows(scores, torch.as_tensor(labels, device=device),
                                                         torch.arange(len(scores), device=device), torch)
    if n_nonfinite:
        return None, n_nonfinite
    fit = crossfit_temperature(TensorShiftedLogits(shifted, true_gap),
                               torch.as_tensor(item_weights, dtype=torch.float64, device=device),
                               own_groups(groups, len(labels)))
    records |= {"scaled_nll": fit.scaled_nll, "scaled_confidence": fit.scaled_confidence}
    return EpochRecords(n_classes=scores.shape[1], temperature=fit.temperature, scaled_loss=fit.scaled_loss,
                        **{name: values.cpu().numpy() for name, values in records.items()}), 0


class DeviceOutputs:
    """An accumulator's store for outputs left on the device: counted rows kept there, reduced there."""

    @staticmethod
    def keep(outputs: torch.Tensor, counted: np.ndarray, owned: bool = False) -> torch.Tensor:
        rows = outputs.reshape(-1, outputs.shape[-1])
        return rows.clone() if counted.all() else rows[torch.as_tensor(counted.reshape(-1), device=outputs.device)]

    join = staticmethod(torch.cat)
    reduce = staticmethod(reduce_on_device)
