"""Temperature scaling (Guo et al. 2017): how much of an epoch's loss is calibration, not discrimination."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

__all__ = ["TemperatureFit", "scaled_nll", "fit_temperature", "crossfit_temperature", "LOG_T_BOUNDS"]

# log T is searched in [log 0.05, log 20]: wider than any useful calibration, narrow enough to stay finite.
LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))
LOG_T_TOLERANCE = 1e-6


@dataclass(frozen=True)
class TemperatureFit:
    """Fitted temperature T on all items, and the cross-fitted loss after scaling (L_TS)."""

    temperature: float
    scaled_loss: float


@dataclass(frozen=True)
class _ShiftedLogits:
    """z minus its row maximum, and z_y minus the same maximum: softmax(beta z) without a max per call.

    For beta > 0, logsumexp(beta z_i) - beta z_iy = log sum_k exp(beta s_ik) - beta g_i with s = z - max z
    and g = z_y - max z; every exponent is <= 0 and one is 0, so the sum lies in [1, C] and never overflows.
    (scipy.special.logsumexp recomputes the maximum and is several times slower on an N x C array.)
    """

    shifted: np.ndarray
    true_gap: np.ndarray

    @classmethod
    def of(cls, z: np.ndarray, labels: np.ndarray) -> _ShiftedLogits:
        row_max = z.max(axis=1)
        return cls(z - row_max[:, None], z[np.arange(len(labels)), labels] - row_max)

    def take(self, rows: np.ndarray) -> _ShiftedLogits:
        return _ShiftedLogits(self.shifted[rows], self.true_gap[rows])

    def nll(self, beta: float) -> np.ndarray:
        """Per-item NLL of softmax(beta * z)."""
        scaled = np.multiply(self.shifted, beta)
        np.exp(scaled, out=scaled)
        return np.log(scaled.sum(axis=1)) - beta * self.true_gap


def scaled_nll(z: np.ndarray, labels: np.ndarray, beta: float) -> np.ndarray:
    """Per-item NLL of softmax(beta * z): logsumexp(beta z_i) - beta z_{i,y_i} (beta > 0)."""
    return _ShiftedLogits.of(z, labels).nll(beta)


def _fit(logits: _ShiftedLogits, item_weights: np.ndarray) -> float:
    """Bounded Brent search on log T; f is convex in beta = 1/T, so unimodal in log T."""
    total = item_weights.sum()
    if len(item_weights) == 0 or total <= 0:
        return 1.0

    def objective(log_t: float) -> float:
        return float(item_weights @ logits.nll(np.exp(-log_t)) / total)

    result = minimize_scalar(objective, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": LOG_T_TOLERANCE})
    return float(np.exp(result.x))


def fit_temperature(z: np.ndarray, labels: np.ndarray, item_weights: np.ndarray) -> float:
    """The T minimising the weighted NLL of softmax(z / T), within exp(LOG_T_BOUNDS).

    At an interior optimum sum_i a_i z_iy = sum_i a_i sum_k q_ik z_ik with q = softmax(z / T).
    """
    return _fit(_ShiftedLogits.of(z, labels), item_weights)


def crossfit_temperature(log_probs: np.ndarray, labels: np.ndarray, item_weights: np.ndarray) -> TemperatureFit:
    """T fitted on all items, and L_TS scored on each half with the T fitted on the other half.

    Halves are items at even and odd positions; cross-fitting keeps L_TS from being optimistic.
    Works on centred log-probabilities, which give the same softmax as the logits at any T.
    """
    z = log_probs - log_probs.mean(axis=1, keepdims=True)
    logits = _ShiftedLogits.of(z, labels)
    total = item_weights.sum()
    temperature = _fit(logits, item_weights)
    if len(labels) < 2 or total <= 0:
        return TemperatureFit(temperature, float(item_weights @ logits.nll(1 / temperature) / max(total, 1e-300)))
    halves = [np.arange(0, len(labels), 2), np.arange(1, len(labels), 2)]
    weighted_sum = 0.0
    for fit_half, score_half in (halves, halves[::-1]):
        t_half = _fit(logits.take(fit_half), item_weights[fit_half])
        weighted_sum += float(item_weights[score_half] @ logits.take(score_half).nll(1 / t_half))
    return TemperatureFit(temperature, weighted_sum / total)
