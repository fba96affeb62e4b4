"""Temperature scaling (Guo et al. 2017): how much of an epoch's loss is calibration, not discrimination."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

__all__ = ["TemperatureFit", "scaled_nll", "fit_temperature", "crossfit_temperature", "LOG_T_BOUNDS"]

# log T is searched in [log 0.05, log 20]: wider than any useful calibration, narrow enough to stay finite.
LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))


@dataclass(frozen=True)
class TemperatureFit:
    """Fitted temperature T on all items, and the cross-fitted loss after scaling (L_TS)."""

    temperature: float
    scaled_loss: float


def scaled_nll(z: np.ndarray, labels: np.ndarray, beta: float) -> np.ndarray:
    """Per-item NLL of softmax(beta * z): logsumexp(beta z_i) - beta z_{i,y_i}."""
    scaled = beta * z
    return logsumexp(scaled, axis=1) - scaled[np.arange(len(labels)), labels]


def fit_temperature(z: np.ndarray, labels: np.ndarray, item_weights: np.ndarray) -> float:
    """The T minimising the weighted NLL of softmax(z / T), by a bounded 1-D search on log T (convex in 1/T)."""
    total = item_weights.sum()
    if len(labels) == 0 or total <= 0:
        return 1.0

    def objective(log_t: float) -> float:
        return float(item_weights @ scaled_nll(z, labels, np.exp(-log_t)) / total)

    result = minimize_scalar(objective, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def crossfit_temperature(log_probs: np.ndarray, labels: np.ndarray, item_weights: np.ndarray) -> TemperatureFit:
    """T fitted on all items, and L_TS scored on each half with the T fitted on the other half.

    Halves are items at even and odd positions; cross-fitting keeps L_TS from being optimistic.
    Works on centred log-probabilities, which give the same softmax as the logits at any T.
    """
    z = log_probs - log_probs.mean(axis=1, keepdims=True)
    total = item_weights.sum()
    temperature = fit_temperature(z, labels, item_weights)
    if len(labels) < 2 or total <= 0:
        return TemperatureFit(temperature, float(item_weights @ scaled_nll(z, labels, 1 / temperature) / max(total, 1e-300)))
    halves = [np.arange(0, len(labels), 2), np.arange(1, len(labels), 2)]
    weighted_sum = 0.0
    for fit_half, score_half in (halves, halves[::-1]):
        t_half = fit_temperature(z[fit_half], labels[fit_half], item_weights[fit_half])
        weighted_sum += float(item_weights[score_half] @ scaled_nll(z[score_half], labels[score_half], 1 / t_half))
    return TemperatureFit(temperature, weighted_sum / total)
