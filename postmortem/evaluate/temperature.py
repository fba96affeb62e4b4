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
# Before that search, a fold tries one third-order step from the full fit (_series_answer: the root of the cubic
# Taylor model of f' in beta, whose coefficients are the first four cumulants of one pass there): its error is
# about step^4 in log T (measured over 5-1,000 classes and 500-10,000 items: 0.1-4 step^4, e.g. 1.7e-9 at a step of
# 4.7e-3, 5e-12 at 3e-3), so a step up to 7e-3 leaves ~1e-8 as the Newton stop does, and the fold needs no pass of
# its own; a longer step (small sets, where folds differ more) goes on to the Newton search. (Halley's step, from
# the first three, erred by 0.3-2 step^3 and was kept to 3e-3: on 10,000 items 2 of 5 folds needed a pass.)
FOLD_SERIES_MAX_STEP = 7e-3
SERIES_ROOT_STEPS = 3      # Newton steps on the scalar cubic from Halley's root (quadratic: two already reach
                           # float64 resolution)
# The full fit's search runs on float32 moments (ShiftedLogits.for_search), whose rounding leaves its answer
# within about 1e-5 of the optimum, so it stops at this step; one float64 pass there finishes the fit (_fit_all).
SEARCH_LOG_T_TOLERANCE = 1e-4
FLOAT32_EXP_FLOOR = -87.0  # exp below this is a float32 subnormal (slow arithmetic) and adds < 1e-37 to a sum of >= 1
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

    def central_moments(self, beta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per item, E_q[s] and the central moments E_q[(s - E_q s)^k], k = 2, 3, 4, under q = softmax(beta s), in
        one exp pass: the first four derivatives of log sum_k exp(beta s_k) in beta are the mean, the variance,
        the third moment and the fourth minus 3 variance^2. Apart from `moments`, and one pass at the full fit's
        end: the third moment in every search pass cost more (crossfit of 30 epochs of 20k x 20: 0.24 s against
        0.22 s)."""
        n = len(self.true_gap)
        mean, variance, third, fourth = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
        for rows, block, e in self.blocks(beta):
            norm = np.einsum("ij->i", e)
            mean[rows] = np.einsum("ij,ij->i", e, block) / norm
            centred = block - mean[rows, None]
            e *= centred
            e *= centred
            variance[rows] = np.einsum("ij->i", e) / norm
            e *= centred
            third[rows] = np.einsum("ij->i", e) / norm
            fourth[rows] = np.einsum("ij,ij->i", e, centred) / norm
        return mean, variance, third, fourth

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

    def for_search(self) -> ShiftedLogits:
        """These logits for a fit's search passes: moments in float32 (SinglePrecisionLogits), whose answer a
        float64 pass then finishes."""
        return SinglePrecisionLogits(self.shifted, self.true_gap)

    def indices(self, mask: np.ndarray) -> np.ndarray:
        """The rows where a boolean item mask holds, as this array library indexes them."""
        return np.flatnonzero(mask)

    def as_array(self, values: np.ndarray) -> np.ndarray:
        """Per-item numpy values in this array library."""
        return values

    def zeros(self) -> np.ndarray:
        """A per-item array of zeros in this array library."""
        return np.zeros(len(self.true_gap))


class SinglePrecisionLogits(ShiftedLogits):
    """ShiftedLogits whose moments are computed in float32 arithmetic, for the search passes of a fit only: numpy's
    float32 exp is 4x faster than its float64 one (SIMD), and a 1,000-class epoch spent most of its reduction in
    the search's float64 exponentials. The moments come out within about 1e-6 relative (float32 rounding of the
    exponentials and of sums over a row), which moves the search's answer by about 1e-5 in log T; _fit_all then
    finishes it with one float64 pass, so no number the report gives is computed in float32."""

    def moments(self, beta: float) -> tuple[np.ndarray, np.ndarray]:
        n, n_classes = self.shifted.shape
        mean, variance = np.empty(n), np.empty(n)
        rows_per_block = min(n, _rows_per_block(n_classes))
        scores, e = np.empty((rows_per_block, n_classes), np.float32), np.empty((rows_per_block, n_classes), np.float32)
        for rows in row_blocks(n, n_classes):
            s, block_e = scores[:rows.stop - rows.start], e[:rows.stop - rows.start]
            np.copyto(s, self.shifted[rows], casting="same_kind")
            np.multiply(s, np.float32(beta), out=block_e)
            np.maximum(block_e, np.float32(FLOAT32_EXP_FLOOR), out=block_e)
            np.exp(block_e, out=block_e)
            norm = np.einsum("ij->i", block_e)
            block_mean = np.einsum("ij,ij->i", block_e, s) / norm
            block_e *= s
            mean[rows] = block_mean
            variance[rows] = np.einsum("ij,ij->i", block_e, s) / norm - block_mean * block_mean
        return mean, variance

    def for_search(self) -> ShiftedLogits:
        return self


def scaled_nll(z: np.ndarray, labels: np.ndarray, beta: float) -> np.ndarray:
    """Per-item NLL of softmax(beta * z): logsumexp(beta z_i) - beta z_{i,y_i} (beta > 0)."""
    return ShiftedLogits.of(z, labels).nll(beta)


def _derivatives(logits: ShiftedLogits, weights: np.ndarray, moments: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """f'(beta) = E_a[E_q s - g] and f''(beta) = E_a[Var_q s], from the per-item moments at beta."""
    mean, variance = moments
    return float(weights @ (mean - logits.true_gap)), float(weights @ variance)


def _fit(logits: ShiftedLogits, item_weights: np.ndarray, start_u: float = 0.0,
         known: tuple[np.ndarray, np.ndarray] | None = None, tolerance: float = LOG_T_TOLERANCE) -> float:
    """The u = -log T in the search range minimising f = sum_i a_i nll_i / A, by safeguarded Newton steps.

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
        return 0.0
    if known is None and len(item_weights) >= 8 * COARSE_ROWS:
        every = len(item_weights) // COARSE_ROWS
        start_u = _fit(logits.rows(slice(None, None, every)), item_weights[::every], start_u, tolerance=tolerance)
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
                return bound
        next_u = step if low < step < high else (low + high) / 2
        if abs(next_u - u) <= tolerance or high - low <= tolerance:
            return next_u
        u = next_u
        moments = logits.moments(float(np.exp(u)))
    return u


def _series_answer(logits: ShiftedLogits, item_weights: np.ndarray, u: float,
                   moments: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> float | None:
    """u* = -log T for these weights by one third-order step in beta from u, given the per-item central moments at
    u: with d = beta' - beta, f'(beta') is about f1 + f2 d + f3 d^2 / 2 + f4 d^3 / 6, where f1 = E_a[E_q s - g],
    f2 = E_a[Var_q s], f3 = E_a[mu3] and f4 = E_a[mu4 - 3 Var_q s^2] (the derivatives of f' = E_a[E_q s] - E_a[g]),
    and the answer is this cubic's root nearest 0: Newton steps on it from Halley's root
    d = -2 f1 f2 / (2 f2^2 - f1 f3). None when the step is longer than FOLD_SERIES_MAX_STEP in u, leaves the search
    range, or the curvature does not allow it (the caller searches then)."""
    total = item_weights.sum()
    if total <= 0:
        return None
    weights = item_weights / total
    mean, variance, third, fourth = moments
    f1, f2 = float(weights @ (mean - logits.true_gap)), float(weights @ variance)
    f3, f4 = float(weights @ third), float(weights @ (fourth - 3 * variance * variance))
    denominator = 2 * f2 * f2 - f1 * f3
    if f2 <= 0 or denominator <= 0:
        return None
    d = -2 * f1 * f2 / denominator
    for _ in range(SERIES_ROOT_STEPS):
        slope = f2 + f3 * d + f4 * d * d / 2
        if slope <= 0:
            return None
        d -= (f1 + f2 * d + f3 * d * d / 2 + f4 * d ** 3 / 6) / slope
    beta = float(np.exp(u)) + d
    if beta <= 0:
        return None
    answer = float(np.log(beta))
    inside = -LOG_T_BOUNDS[1] < answer < -LOG_T_BOUNDS[0]
    return answer if inside and abs(answer - u) <= FOLD_SERIES_MAX_STEP else None


@dataclass(frozen=True)
class _FullFit:
    """The fit on all items: the answer u* = -log T, and the point u near it where the per-item central moments
    (ShiftedLogits.central_moments, float64) were taken, from which the folds take their steps."""

    answer: float
    at: float
    moments: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _fit_all(logits: ShiftedLogits, item_weights: np.ndarray) -> _FullFit:
    """u* on all items: the Newton search (_fit) on float32 moments (logits.for_search()) ends within about 1e-5
    of it; one float64 pass of the central moments there finishes it by one third-order step (_series_answer,
    error ~step^4: under 1e-14), or, where that step is longer than FOLD_SERIES_MAX_STEP (an optimum at a bound),
    by the float64 Newton search from there. Before the float32 search, all of the search's passes were float64:
    6 of the 8 exponential passes per epoch."""
    searched = _fit(logits.for_search(), item_weights, tolerance=SEARCH_LOG_T_TOLERANCE)
    moments = logits.central_moments(float(np.exp(searched)))
    answer = _series_answer(logits, item_weights, searched, moments)
    if answer is None:
        answer = _fit(logits, item_weights, searched, moments[:2])
    return _FullFit(answer, searched, moments)


def fit_temperature(z: np.ndarray, labels: np.ndarray, item_weights: np.ndarray) -> float:
    """The T minimising the weighted NLL of softmax(z / T), within exp(LOG_T_BOUNDS).

    At an interior optimum sum_i a_i z_iy = sum_i a_i sum_k q_ik z_ik with q = softmax(z / T).
    """
    return float(np.exp(-_fit_all(ShiftedLogits.of(z, labels), item_weights).answer))


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

    Each fold takes one third-order step from where the full fit took its float64 central moments (_fit_all), with
    those moments (_series_answer); where that step is too long, its Newton search starts there (one pass ahead)
    and stops at FOLD_LOG_T_TOLERANCE.
    Log-probabilities give the same softmax as the logits at any T, so either may be shifted in.
    """
    total = float(item_weights.sum())
    full = _fit_all(logits, item_weights)
    temperature = float(np.exp(-full.answer))
    folds = crossfit_folds(groups)
    if len(item_weights) < 2 or total <= 0 or folds[0].max(initial=0) == 0:   # one group: no apart, in-sample
        nll, confidence = logits.scaled(1 / temperature)
        return TemperatureFit(temperature, nll, confidence, float(item_weights @ nll) / max(total, 1e-300))
    scaled_nll, scaled_confidence = logits.zeros(), logits.zeros()
    for fold_of_item in folds:
        for fold in range(int(fold_of_item.max()) + 1):
            held_out = fold_of_item == fold
            # Fitted on the other folds by giving the held-out items weight 0: no copy of the other rows
            fit_weights = item_weights * logits.as_array(~held_out)
            answer = _series_answer(logits, fit_weights, full.at, full.moments)
            if answer is None:
                answer = _fit(logits, fit_weights, full.at, full.moments[:2], FOLD_LOG_T_TOLERANCE)
            beta = float(np.exp(answer))
            score_rows = logits.indices(held_out)
            nll, confidence = logits.rows(score_rows).scaled(beta)
            scaled_nll[score_rows] += nll
            scaled_confidence[score_rows] += confidence
    scaled_nll, scaled_confidence = scaled_nll / len(folds), scaled_confidence / len(folds)
    return TemperatureFit(temperature, scaled_nll, scaled_confidence, float(item_weights @ scaled_nll) / total)

