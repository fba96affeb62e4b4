"""Temperature scaling (Guo et al. 2017): how much of an epoch's loss is calibration, not discrimination.

It lives in evaluate/ because fitting T needs each epoch's full N x C matrix, which exists only while that
checkpoint's outputs are reduced to per-item records; the fit and its cross-fitted loss are stored with them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TemperatureFit", "scaled_nll", "fit_temperature", "crossfit_temperature", "LOG_T_BOUNDS"]

# log T is searched in [log 0.05, log 20]: wider than any useful calibration, narrow enough to stay finite.
LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))
LOG_T_TOLERANCE = 1e-8     # change of log T at which the search stops
MAX_NEWTON_STEPS = 60


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

    def derivatives(self, beta: float, weights: np.ndarray) -> tuple[float, float]:
        """f'(beta) and f''(beta) of the weighted mean NLL (weights summing to 1), in one exp pass."""
        e = np.exp(np.multiply(self.shifted, beta))
        norm = e.sum(axis=1)
        e *= self.shifted
        first = e.sum(axis=1) / norm                      # E_q[s_i]
        e *= self.shifted
        second = e.sum(axis=1) / norm                     # E_q[s_i^2]
        return float(weights @ (first - self.true_gap)), float(weights @ (second - first * first))

    def nll(self, beta: float) -> np.ndarray:
        """Per-item NLL of softmax(beta * z)."""
        scaled = np.multiply(self.shifted, beta)
        np.exp(scaled, out=scaled)
        return np.log(scaled.sum(axis=1)) - beta * self.true_gap


def scaled_nll(z: np.ndarray, labels: np.ndarray, beta: float) -> np.ndarray:
    """Per-item NLL of softmax(beta * z): logsumexp(beta z_i) - beta z_{i,y_i} (beta > 0)."""
    return _ShiftedLogits.of(z, labels).nll(beta)


def _slope_and_bend(logits: _ShiftedLogits, u: float, weights: np.ndarray) -> tuple[float, float]:
    """df/du and d2f/du2 at u = log beta = -log T."""
    beta = float(np.exp(u))
    gradient, curvature = logits.derivatives(beta, weights)
    return beta * gradient, beta * beta * curvature + beta * gradient


def _fit(logits: _ShiftedLogits, item_weights: np.ndarray, start: float = 1.0) -> float:
    """Minimise f = sum_i a_i nll_i / A over log T in LOG_T_BOUNDS by safeguarded Newton steps.

    With u = -log T = log beta, f is unimodal in u (convex in beta): df/du = beta f'(beta) and
    d2f/du2 = beta^2 f''(beta) + beta f'(beta), with f' = E_a[E_q s - g], f'' = E_a[Var_q s] from one pass over
    the N x C array (q = softmax(beta s)). A Newton step that would leave the shrinking bracket is replaced by
    bisection, so it converges like Newton (about 5 passes) where scipy's bounded Brent search needs about 30;
    when Newton points past a bound and f still falls there, that bound is the answer (one more pass).
    """
    total = item_weights.sum()
    if len(item_weights) == 0 or total <= 0:
        return 1.0
    weights = item_weights / total
    lower, upper = -LOG_T_BOUNDS[1], -LOG_T_BOUNDS[0]       # the search range of u = -log T
    low, high = lower, upper                                # the bracket, shrinking
    bounds_checked = set()
    u = min(max(-np.log(start), low), high)
    for _ in range(MAX_NEWTON_STEPS):
        slope, bend = _slope_and_bend(logits, u, weights)
        if slope > 0:
            high = u
        else:
            low = u
        step = u - slope / bend if bend > 0 else (np.inf if slope < 0 else -np.inf)
        bound = upper if step >= high == upper else lower if step <= low == lower else None
        if bound is not None and bound not in bounds_checked:
            # Newton points past the search range: if f still falls at the bound, the bound is the answer
            bounds_checked.add(bound)
            bound_slope, _ = _slope_and_bend(logits, bound, weights)
            if (bound_slope < 0) == (bound == upper):
                return float(np.exp(-bound))
        next_u = step if low < step < high else (low + high) / 2
        converged = abs(next_u - u) <= LOG_T_TOLERANCE or high - low <= LOG_T_TOLERANCE
        u = next_u
        if converged:
            break
    return float(np.exp(-u))


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
        t_half = _fit(logits.take(fit_half), item_weights[fit_half], start=temperature)
        weighted_sum += float(item_weights[score_half] @ logits.take(score_half).nll(1 / t_half))
    return TemperatureFit(temperature, weighted_sum / total)
