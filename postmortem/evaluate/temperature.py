"""Temperature scaling (Guo et al. 2017): how much of an epoch's loss is calibration, not discrimination.

It lives in evaluate/ because fitting T needs each epoch's full N x C matrix, which exists only while that
checkpoint's outputs are reduced to per-item records; the fit and its cross-fitted loss are stored with them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TemperatureFit", "ShiftedLogits", "scaled_nll", "fit_temperature", "crossfit_folds", "crossfit_temperature",
           "row_blocks", "LOG_T_BOUNDS", "CROSSFIT_FOLDS", "CROSSFIT_REPEATS", "REPEAT_BELOW_GROUPS"]

# log T is searched in [log 0.05, log 20]: wider than any useful calibration, narrow enough to stay finite.
LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))
LOG_T_TOLERANCE = 1e-8     # change of log T at which the search stops
# A cross-fit fold's search stops at a larger step: the answer is the Newton step past the last pass, whose error
# is about the square of the last step, so a step below 1e-4 already leaves ~1e-8 in log T (one pass per fold
# instead of two on large sets).
FOLD_LOG_T_TOLERANCE = 1e-4
# Before that search, a fold tries one Halley step from the full fit (its third derivative comes from the same
# pass as the first two): its error is about 0.3 step^3 in log T (measured on 20,000 items: 1.9e-8 at a step of
# 3.9e-3, 7e-11 at 6e-4), so a step up to 3e-3 leaves ~1e-8 as the Newton stop does, and the fold needs no pass
# of its own; a longer step (small sets, where folds differ more) goes on to the Newton search.
FOLD_HALLEY_MAX_STEP = 3e-3
MAX_NEWTON_STEPS = 60
COARSE_ROWS = 2048         # a search over at least 8x this many items starts where a search over this many ended
CROSSFIT_FOLDS = 5         # L_TS: each item scored with the T fitted on the other folds (whole groups per fold) ...
CROSSFIT_REPEATS = 3       # ... over this many seeded splits, averaged, when there are fewer groups than
REPEAT_BELOW_GROUPS = 5000  # this; above it one split's luck moves L_TS by under 1e-4 relative (measured: 6e-5
                           # at 5,000 items, 2e-5 at 20,000, against 2e-3 at 140), so one split is kept
CROSSFIT_SEED = 0


@dataclass(frozen=True)
class TemperatureFit:
    """Fitted temperature T on all items; per item, the cross-fitted NLL and top-class probability after scaling;
    and L_TS, their weighted mean loss."""

    temperature: float
    scaled_nll: np.ndarray
    scaled_confidence: np.ndarray
    scaled_loss: float


BLOCK_BYTES = 1 << 19      # float64 bytes per block of rows in a pass over an N x C matrix (see row_blocks;
                           # reducing 30 epochs of 20k x 20 took 0.41 s at 256 KiB, 0.40 s at 512 KiB, 0.49 s at 1 MiB)


def row_blocks(n_rows: int, n_classes: int):
    """Slices of about BLOCK_BYTES of rows each, for passes over an N x C float64 matrix.

    Whole-matrix numpy expressions allocate fresh N x C temporaries, and on large arrays the page faults of
    those allocations cost more than the arithmetic (a pass over 20k x 20 is 4x slower); a block's temporaries
    stay in cache and are recycled by the allocator."""
    rows = _rows_per_block(n_classes)
    for start in range(0, n_rows, rows):
        yield slice(start, min(start + rows, n_rows))


def _rows_per_block(n_classes: int) -> int:
    return max(1, BLOCK_BYTES // (8 * max(n_classes, 1)))


@dataclass(frozen=True)
class ShiftedLogits:
    """z minus its row maximum, and z_y minus the same maximum: softmax(beta z) without a max per call.

    For beta > 0, logsumexp(beta z_i) - beta z_iy = log sum_k exp(beta s_ik) - beta g_i with s = z - max z
    and g = z_y - max z; every exponent is <= 0 and one is 0, so the sum lies in [1, C] and never overflows.
    (scipy.special.logsumexp recomputes the maximum and is several times slower on an N x C array.)
    """

    shifted: np.ndarray
    true_gap: np.ndarray

    @classmethod
    def of(cls, z: np.ndarray, labels: np.ndarray) -> ShiftedLogits:
        row_max = z.max(axis=1)
        return cls(z - row_max[:, None], z[np.arange(len(labels)), labels] - row_max)

    def rows(self, which) -> ShiftedLogits:
        """Some rows: a slice gives a view (no copy), an index array a copy."""
        return type(self)(self.shifted[which], self.true_gap[which])

    def blocks(self, beta: float):
        """(rows, s block, exp(beta s) block) for each row_blocks slice, the exponentials in one reused buffer."""
        n, n_classes = self.shifted.shape
        work = np.empty((min(n, _rows_per_block(n_classes)), n_classes))
        for rows in row_blocks(n, n_classes):
            block = self.shifted[rows]
            e = work[:len(block)]
            np.multiply(block, beta, out=e)
            np.exp(e, out=e)
            yield rows, block, e

    def moments(self, beta: float) -> tuple[np.ndarray, np.ndarray]:
        """Per item, E_q[s] and Var_q[s] under q = softmax(beta s), in one exp pass."""
        mean, variance = np.empty(len(self.true_gap)), np.empty(len(self.true_gap))
        for rows, block, e in self.blocks(beta):
            norm = np.einsum("ij->i", e)     # 4x faster than e.sum(axis=1) over a short row
            mean[rows] = np.einsum("ij,ij->i", e, block) / norm
            e *= block
            variance[rows] = np.einsum("ij,ij->i", e, block) / norm - mean[rows] ** 2
        return mean, variance

    def central_moments(self, beta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per item, E_q[s], Var_q[s] and E_q[(s - E_q s)^3] under q = softmax(beta s), in one exp pass: the
        first three derivatives of log sum_k exp(beta s_k) in beta. Apart from `moments`, and one pass more at the
        full fit's end: the third moment in every search pass cost more (crossfit of 30 epochs of 20k x 20: 0.24 s
        against 0.22 s)."""
        n = len(self.true_gap)
        mean, variance, third = np.empty(n), np.empty(n), np.empty(n)
        for rows, block, e in self.blocks(beta):
            norm = np.einsum("ij->i", e)
            mean[rows] = np.einsum("ij,ij->i", e, block) / norm
            centred = block - mean[rows, None]
            e *= centred
            e *= centred
            variance[rows] = np.einsum("ij->i", e) / norm
            third[rows] = np.einsum("ij,ij->i", e, centred) / norm
        return mean, variance, third

    def nll(self, beta: float) -> np.ndarray:
        """Per-item NLL of softmax(beta * z)."""
        return self.scaled(beta)[0]

    def scaled(self, beta: float) -> tuple[np.ndarray, np.ndarray]:
        """Per item, the NLL of softmax(beta * z) and its top-class probability, from one exp pass: with
        n = log sum_k exp(beta s_k), the NLL is n - beta g and the top class (shifted score 0) has exp(-n)."""
        log_norm = np.empty(len(self.true_gap))
        for rows, _, e in self.blocks(beta):
            np.log(np.einsum("ij->i", e), out=log_norm[rows])
        return log_norm - beta * self.true_gap, np.exp(-log_norm)

    def indices(self, mask: np.ndarray) -> np.ndarray:
        """The rows where a boolean item mask holds, as this array library indexes them."""
        return np.flatnonzero(mask)

    def as_array(self, values: np.ndarray) -> np.ndarray:
        """Per-item numpy values in this array library."""
        return values

    def zeros(self) -> np.ndarray:
        """A per-item array of zeros in this array library."""
        return np.zeros(len(self.true_gap))


def scaled_nll(z: np.ndarray, labels: np.ndarray, beta: float) -> np.ndarray:
    """Per-item NLL of softmax(beta * z): logsumexp(beta z_i) - beta z_{i,y_i} (beta > 0)."""
    return ShiftedLogits.of(z, labels).nll(beta)


@dataclass(frozen=True)
class _Search:
    """Where a fit ended: the answer u* = -log T, and the last point evaluated with its per-item moments."""

    answer: float
    last_u: float
    moments: tuple[np.ndarray, np.ndarray]


def _derivatives(logits: ShiftedLogits, weights: np.ndarray, moments: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """f'(beta) = E_a[E_q s - g] and f''(beta) = E_a[Var_q s], from the per-item moments at beta."""
    mean, variance = moments
    return float(weights @ (mean - logits.true_gap)), float(weights @ variance)


def _fit(logits: ShiftedLogits, item_weights: np.ndarray, start_u: float = 0.0,
         known: tuple[np.ndarray, np.ndarray] | None = None, tolerance: float = LOG_T_TOLERANCE) -> _Search:
    """Minimise f = sum_i a_i nll_i / A over u = -log T in the search range by safeguarded Newton steps.

    f is convex in beta = 1/T, with f' = E_a[E_q s - g] and f'' = E_a[Var_q s] from one pass over the N x C
    array (q = softmax(beta s)), so the Newton step is taken in beta; the bracket is kept in u = log beta, and a
    step that would leave it is replaced by bisection in u (a geometric mean of the beta ends). It converges in
    about 4-8 passes where scipy's bounded Brent search needs about 30; Newton in u instead of beta needs as many
    where T is large and several more where T < 1 or the predictions are near uniform (the optimum at a bound).
    When Newton points past a bound and f still falls there, that bound is the answer (one more pass).
    `known` holds the per-item moments at start_u when a caller already has them (one pass saved). On many
    items, the search first runs on an evenly spaced subsample of about COARSE_ROWS, whose optimum is close
    enough for Newton to finish on all items in about 3 passes instead of 5-8 (the answer is the same).
    """
    total = item_weights.sum()
    if len(item_weights) == 0 or total <= 0:
        return _Search(0.0, 0.0, (np.zeros(len(item_weights)), np.zeros(len(item_weights))))
    if known is None and len(item_weights) >= 8 * COARSE_ROWS:
        every = len(item_weights) // COARSE_ROWS
        start_u = _fit(logits.rows(slice(None, None, every)), item_weights[::every], start_u).answer
    weights = item_weights / total
    lower, upper = -LOG_T_BOUNDS[1], -LOG_T_BOUNDS[0]       # the search range of u = -log T
    low, high = lower, upper                                # the bracket, shrinking
    bounds_checked = set()
    u = min(max(start_u, low), high)
    moments = known if known is not None and u == start_u else logits.moments(float(np.exp(u)))
    for _ in range(MAX_NEWTON_STEPS):
        gradient, curvature = _derivatives(logits, weights, moments)
        if gradient > 0:
            high = u
        else:
            low = u
        beta = float(np.exp(u))
        newton_beta = beta - gradient / curvature if curvature > 0 else (np.inf if gradient < 0 else 0.0)
        step = float(np.log(newton_beta)) if newton_beta > 0 else -np.inf
        bound = upper if step >= high == upper else lower if step <= low == lower else None
        if bound is not None and bound not in bounds_checked:
            # Newton points past the search range: if f still falls at the bound, the bound is the answer
            bounds_checked.add(bound)
            at_bound = moments if bound == u else logits.moments(float(np.exp(bound)))
            bound_gradient, _ = _derivatives(logits, weights, at_bound)
            if (bound_gradient < 0) == (bound == upper):
                return _Search(bound, bound, at_bound)
        next_u = step if low < step < high else (low + high) / 2
        if abs(next_u - u) <= tolerance or high - low <= tolerance:
            return _Search(next_u, u, moments)
        u = next_u
        moments = logits.moments(float(np.exp(u)))
    return _Search(u, u, moments)


def _halley_fold_answer(logits: ShiftedLogits, item_weights: np.ndarray, u: float,
                        moments: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float | None:
    """u* = -log T for these weights by one Halley step in beta from u, given the per-item central moments at u:
    beta - 2 f1 f2 / (2 f2^2 - f1 f3) with f1 = E_a[E_q s - g], f2 = E_a[Var_q s], f3 = E_a[E_q (s - E_q s)^3].
    None when the step is longer than FOLD_HALLEY_MAX_STEP in u, leaves the search range, or the curvature does
    not allow it (the caller searches then)."""
    total = item_weights.sum()
    if total <= 0:
        return None
    weights = item_weights / total
    mean, variance, third = moments
    gradient, curvature = float(weights @ (mean - logits.true_gap)), float(weights @ variance)
    denominator = 2 * curvature * curvature - gradient * float(weights @ third)
    if curvature <= 0 or denominator <= 0:
        return None
    beta = float(np.exp(u)) - 2 * gradient * curvature / denominator
    if beta <= 0:
        return None
    answer = float(np.log(beta))
    inside = -LOG_T_BOUNDS[1] < answer < -LOG_T_BOUNDS[0]
    return answer if inside and abs(answer - u) <= FOLD_HALLEY_MAX_STEP else None


def fit_temperature(z: np.ndarray, labels: np.ndarray, item_weights: np.ndarray) -> float:
    """The T minimising the weighted NLL of softmax(z / T), within exp(LOG_T_BOUNDS).

    At an interior optimum sum_i a_i z_iy = sum_i a_i sum_k q_ik z_ik with q = softmax(z / T).
    """
    return float(np.exp(-_fit(ShiftedLogits.of(z, labels), item_weights).answer))


def crossfit_folds(groups: np.ndarray, n_folds: int = CROSSFIT_FOLDS, repeats: int | None = None,
                   seed: int = CROSSFIT_SEED) -> list[np.ndarray]:
    """For each repeat, every item's fold in [0, K): whole groups are dealt to K = min(n_folds, groups) folds in a
    seeded random order, so the items of one group (e.g. one dialogue) are never fitted and scored apart.
    Repeats default to CROSSFIT_REPEATS below REPEAT_BELOW_GROUPS groups, else 1. Deterministic: the same
    groups give the same folds."""
    unique, codes = np.unique(groups, return_inverse=True)
    if repeats is None:
        repeats = CROSSFIT_REPEATS if len(unique) < REPEAT_BELOW_GROUPS else 1
    k = min(n_folds, len(unique))
    rng = np.random.default_rng(seed)
    folds = []
    for _ in range(repeats):
        fold_of_group = np.empty(len(unique), dtype=np.int64)
        fold_of_group[rng.permutation(len(unique))] = np.arange(len(unique)) % k
        folds.append(fold_of_group[codes.reshape(-1)])
    return folds


def crossfit_temperature(logits: ShiftedLogits, item_weights: np.ndarray, groups: np.ndarray) -> TemperatureFit:
    """T fitted on all items, and each item's NLL and top-class probability after scaling with the T fitted
    on the other folds (crossfit_folds), averaged over the repeats: cross-fitting keeps L_TS from being optimistic,
    and the repeats on smaller sets average away the luck of one split (an even/odd split of 140 items moves L_TS
    by 0.03; one 5-fold split by 0.004).

    Each fold takes one Halley step from where the full fit's last pass was, with the first three central moments
    from one pass there (_halley_fold_answer); where that step is too long, its Newton search starts there (one
    pass ahead) and stops at FOLD_LOG_T_TOLERANCE.
    Log-probabilities give the same softmax as the logits at any T, so either may be shifted in.
    """
    total = float(item_weights.sum())
    full = _fit(logits, item_weights)
    temperature = float(np.exp(-full.answer))
    folds = crossfit_folds(groups)
    if len(item_weights) < 2 or total <= 0 or folds[0].max(initial=0) == 0:   # one group: no apart, in-sample
        nll, confidence = logits.scaled(1 / temperature)
        return TemperatureFit(temperature, nll, confidence, float(item_weights @ nll) / max(total, 1e-300))
    scaled_nll, scaled_confidence = logits.zeros(), logits.zeros()
    moments = logits.central_moments(float(np.exp(full.last_u)))
    for fold_of_item in folds:
        for fold in range(int(fold_of_item.max()) + 1):
            held_out = fold_of_item == fold
            # Fitted on the other folds by giving the held-out items weight 0: no copy of the other rows
            fit_weights = item_weights * logits.as_array(~held_out)
            answer = _halley_fold_answer(logits, fit_weights, full.last_u, moments)
            if answer is None:
                answer = _fit(logits, fit_weights, full.last_u, moments[:2], FOLD_LOG_T_TOLERANCE).answer
            beta = float(np.exp(answer))
            score_rows = logits.indices(held_out)
            nll, confidence = logits.rows(score_rows).scaled(beta)
            scaled_nll[score_rows] += nll
            scaled_confidence[score_rows] += confidence
    scaled_nll, scaled_confidence = scaled_nll / len(folds), scaled_confidence / len(folds)
    return TemperatureFit(temperature, scaled_nll, scaled_confidence, float(item_weights @ scaled_nll) / total)

