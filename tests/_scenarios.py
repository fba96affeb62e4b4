"""Scenario runs whose cause of the validation-loss rise is known by construction (issue 10, section 3).

Each `build_<name>(root, size)` trains a small MLP on synthetic Gaussian clusters (fixed seeds, one
thread, so every build writes the same files), saves the validation logits after every epoch as
postmortem predictions files (`root/predictions/epoch_NNN.npz`), writes the generative labels of the
validation items to `root/truth.npz`, and confirms the cause independently of postmortem: float64
`torch.nn.functional.nll_loss(weight=...)`, temperature fits with `scipy.optimize.minimize_scalar`
cross-fitted over K folds, and a seeded paired bootstrap (both epochs scored on the same resample of
items, or of whole groups when the run has groups). The lowest-loss epoch is compared with the last.

Two labellings of the clusters are used: "cluster" (an item's label is the cluster it was drawn from,
so overlapping clusters make labels inherently noisy) and "nearest" (the label is the nearest cluster
mean: noise-free and learnable without error).

Nothing here imports postmortem.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from torch import nn

CAUSES = ("calibration", "genuine_degradation", "class_collapse", "learned_confusion", "validation_labels",
          "class_weights")
CLASS_NAMES = ("ant", "bee", "cat", "dog", "eel", "fox", "gnu")
SIZES = ("small", "large")
N_RESAMPLES = 1000
FOLDS = 5
FOLD_REPEATS = 3
LEVEL = 0.95


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Interval:
    """A paired bootstrap estimate with its percentile interval."""

    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


@dataclass(frozen=True)
class Confirmation:
    """Numbers computed from the saved predictions files that show the cause (lowest-loss epoch -> last).

    The loss is the run's: weighted by the class weights when the run has them. Parts of dL are
    sum over the items of a_i (nll_i(last) - nll_i(best)) / sum_i a_i with a_i = w[y_i].
    """

    n_items: int
    losses: tuple[float, ...]                   # per epoch, in training order
    accuracies: tuple[float, ...]
    best_epoch: int                             # lowest loss
    last_epoch: int
    temperatures: tuple[float, float]           # T fitted on all items at the best and the last epoch
    loss_change: Interval
    scaled_loss_change: Interval                # cross-fitted temperature-scaled loss L_TS
    calibration_change: Interval                # (L - L_TS)
    accuracy_change: Interval
    macro_f1_change: Interval
    unweighted_loss_change: Interval | None = None   # runs with class weights
    flipped_part: Interval | None = None             # part of dL carried by the relabelled validation items
    rest_loss_change: Interval | None = None         # the loss change of all the other items
    confusion_growth: Interval | None = None         # share of c's items predicted as c' (last - best)
    confusion_part: Interval | None = None           # part of dL carried by c's items predicted as c' at the end
    recall_change: Interval | None = None            # of the collapsing class
    class_part: Interval | None = None               # part of dL carried by the collapsing class's items
    largest_destination_share: float | None = None   # of that class's items, the most predicted as one other class


@dataclass(frozen=True)
class Scenario:
    """A built run, what a correct verdict says about it, and the numbers that confirm it."""

    name: str
    kind: str                                    # the builder: build_<kind>
    size: str
    seed: int
    predictions_dir: Path
    truth_file: Path                             # 'ids' and 'true_labels' (the generative labels) of the items
    class_names: tuple[str, ...]
    class_weights: tuple[float, ...] | None      # the weights the run's loss uses
    expected_status: str                         # "rise" | "no_rise" | "unresolved"
    expected_primary: str | None
    acceptable_primary: frozenset[str]
    expected_classes: tuple[str, ...]
    flipped_ids: tuple[str, ...]                 # validation ids whose labels were corrupted
    clean_validation_labels: bool
    confirmation: Confirmation
    build_seconds: float


# ----------------------------------------------------------------------------- data and training
def _draw(rng: np.random.Generator, means: np.ndarray, counts, labelling: str, n_classes: int | None = None,
          shifts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """counts[m] items from N(means[m], I) (plus a per-item shift), labelled by `labelling`.

    Cluster m belongs to class m % n_classes (by default one cluster per class): "cluster" labels an item
    by the cluster it was drawn from, "nearest" by the cluster whose mean is nearest.
    """
    n_classes = n_classes or len(means)
    cluster = np.repeat(np.arange(len(counts)), counts)
    x = means[cluster] + rng.normal(size=(len(cluster), means.shape[1]))
    if shifts is not None:
        x += shifts
    if labelling == "nearest":
        cluster = ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    return x.astype(np.float32), (cluster % n_classes).astype(np.int64)


def _balanced(n: int, k: int) -> list[int]:
    """n items over k clusters, as evenly as possible."""
    return [n // k + (i < n % k) for i in range(k)]


def _mlp(dim: int, n_classes: int, hidden: int, depth: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, n_classes))


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, *, epochs: int, lr: float,
           batch: int, seed: int, weight_decay: float = 0.0, class_weights: np.ndarray | None = None,
           epoch_items: Callable[[int], np.ndarray] | None = None) -> list[np.ndarray]:
    """Adam (L2 weight decay when given) on cross-entropy (class-weighted when given), shuffled mini-batches;
    the validation logits after every epoch.

    epoch_items(e) gives the training rows used in epoch e (0-based); all rows by default.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        xt, yt, xv = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x_val)
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        outputs = []
        for epoch in range(epochs):
            rows = torch.arange(len(yt)) if epoch_items is None else torch.from_numpy(epoch_items(epoch))
            rows = rows[torch.randperm(len(rows), generator=generator)]
            model.train()
            for start in range(0, len(rows), batch):
                step = rows[start:start + batch]
                optimizer.zero_grad()
                F.cross_entropy(model(xt[step]), yt[step], weight=weight).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                outputs.append(model(xv).numpy().astype(np.float32))
        return outputs
    finally:
        torch.set_num_threads(threads)


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"size {size!r}: expected one of {SIZES}")


def _n_val(size: str, small: int) -> int:
    """Validation items: `small` for the small size, three times as many for the large one."""
    _check_size(size)
    return small if size == "small" else 3 * small


def item_ids(n: int) -> np.ndarray:
    return np.array([f"v{i:05d}" for i in range(n)])


def _save(root: Path, logits: list[np.ndarray], labels: np.ndarray, true_labels: np.ndarray,
          groups: np.ndarray | None = None) -> tuple[Path, Path]:
    """One predictions file per epoch (epochs numbered from 1), and the truth file."""
    folder = root / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    ids = item_ids(len(labels))
    extra = {} if groups is None else {"groups": groups.astype(np.int64)}
    for epoch, z in enumerate(logits, start=1):
        np.savez(folder / f"epoch_{epoch:03d}.npz", outputs=z.astype(np.float32), labels=labels.astype(np.int64),
                 ids=ids, epoch=np.int64(epoch), **extra)
    truth = root / "truth.npz"
    np.savez(truth, ids=ids, true_labels=true_labels.astype(np.int64))
    return folder, truth


# ----------------------------------------------------------------------------- independent confirmation
@dataclass(frozen=True)
class Predictions:
    """A predictions folder read back: float32 logits per epoch (training order) and the item arrays."""

    outputs: tuple[np.ndarray, ...]
    labels: np.ndarray
    ids: np.ndarray
    groups: np.ndarray | None
    epochs: tuple[int, ...]


def read_predictions(folder: Path) -> Predictions:
    outputs, epochs = [], []
    labels = ids = groups = None
    for path in sorted(folder.glob("epoch_*.npz")):
        with np.load(path) as archive:
            outputs.append(archive["outputs"])
            epochs.append(int(archive["epoch"]))
            labels, ids = archive["labels"], archive["ids"]
            groups = archive["groups"] if "groups" in archive.files else None
    return Predictions(tuple(outputs), labels, ids, groups, tuple(epochs))


def item_nll(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log p_i[y_i] from float64 log-softmax (torch)."""
    log_probs = F.log_softmax(torch.from_numpy(np.asarray(logits, dtype=np.float64)), dim=1)
    return F.nll_loss(log_probs, torch.from_numpy(labels), reduction="none").numpy()


def run_loss(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """The run's loss, torch's nll_loss with weight=w: sum_i w[y_i] nll_i / sum_i w[y_i]."""
    log_probs = F.log_softmax(torch.from_numpy(np.asarray(logits, dtype=np.float64)), dim=1)
    return float(F.nll_loss(log_probs, torch.from_numpy(labels), weight=torch.from_numpy(weights)))


def fit_inverse_temperature(logits: np.ndarray, labels: np.ndarray, item_weights: np.ndarray) -> float:
    """b = 1/T minimising the weighted NLL of softmax(b z) (convex in b), by scipy's bounded Brent search."""
    z = np.asarray(logits, dtype=np.float64)
    z_label = z[np.arange(len(labels)), labels]

    def loss(b: float) -> float:
        return float(item_weights @ (logsumexp(b * z, axis=1) - b * z_label) / item_weights.sum())

    return float(minimize_scalar(loss, bounds=(1e-3, 50.0), method="bounded", options={"xatol": 1e-9}).x)


def cross_fitted_scaled_nll(logits: np.ndarray, labels: np.ndarray, item_weights: np.ndarray,
                            groups: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Each item's NLL after temperature scaling with a T fitted on the other folds.

    FOLDS folds (split by group when there are groups), repeated FOLD_REPEATS times with seeded splits
    and averaged.
    """
    units = np.arange(len(labels)) if groups is None else np.unique(groups, return_inverse=True)[1]
    n_units = units.max() + 1
    z = np.asarray(logits, dtype=np.float64)
    total = np.zeros(len(labels))
    for repeat in range(FOLD_REPEATS):
        fold_of_unit = np.random.default_rng(seed + repeat).permutation(n_units) % FOLDS
        fold = fold_of_unit[units]
        for k in range(FOLDS):
            held = fold == k
            b = fit_inverse_temperature(z[~held], labels[~held], item_weights[~held])
            total[held] += item_nll(b * z[held], labels[held])
    return total / FOLD_REPEATS


def resample_counts(n_items: int, groups: np.ndarray | None = None, n_resamples: int = N_RESAMPLES,
                    seed: int = 0) -> np.ndarray:
    """(n_resamples, n_items): how often each item is drawn in each bootstrap resample.

    Units (items, or whole groups) are drawn with replacement; every item of a drawn group counts as
    often as its group was drawn. Any weighted sum over a resample is then counts @ values, so every
    statistic is computed on the same resamples.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n_items, np.full(n_items, 1 / n_items), size=n_resamples).astype(np.float64)
    _, unit = np.unique(groups, return_inverse=True)
    n_units = unit.max() + 1
    return rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=n_resamples).astype(np.float64)[:, unit]


def _interval(estimate: float, samples: np.ndarray) -> Interval:
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


def _ratio(counts: np.ndarray, numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, np.ndarray]:
    """sum(numerator) / sum(denominator) on the full set and on every resample."""
    return float(numerator.sum() / denominator.sum()), (counts @ numerator) / (counts @ denominator)


def macro_f1(confusions: np.ndarray) -> np.ndarray:
    """Macro F1 over all classes from (..., K, K) confusion counts (rows true); 0 where undefined."""
    tp = np.diagonal(confusions, axis1=-2, axis2=-1)
    denominator = confusions.sum(-1) + confusions.sum(-2)
    return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0).mean(-1)


def confirm(folder: Path, class_weights=None, *, flipped_ids=(), pair: tuple[int, int] | None = None,
            collapsed: int | None = None) -> Confirmation:
    """The defining numbers of a predictions folder, best (lowest-loss) epoch against the last."""
    run = read_predictions(folder)
    y = run.labels
    n, k = run.outputs[0].shape
    weights = np.ones(k) if class_weights is None else np.asarray(class_weights, dtype=np.float64)
    a = weights[y]
    losses = [run_loss(z, y, weights) for z in run.outputs]
    accuracies = [float((z.argmax(1) == y).mean()) for z in run.outputs]
    best, last = int(np.argmin(losses)), len(losses) - 1
    z_best, z_last = run.outputs[best], run.outputs[last]
    counts = resample_counts(n, run.groups)

    d_nll = item_nll(z_last, y) - item_nll(z_best, y)
    d_scaled = (cross_fitted_scaled_nll(z_last, y, a, run.groups)
                - cross_fitted_scaled_nll(z_best, y, a, run.groups))
    change = {name: _interval(*_ratio(counts, a * d, a)) for name, d in
              (("loss", d_nll), ("scaled", d_scaled), ("calibration", d_nll - d_scaled))}
    p_best, p_last = z_best.argmax(1), z_last.argmax(1)
    ones = np.ones(n)
    accuracy = _interval(*_ratio(counts, (p_last == y) - (p_best == y) * 1.0, ones))
    cells = np.eye(k * k)
    f1 = [macro_f1((counts @ cells[y * k + p]).reshape(-1, k, k)) for p in (p_best, p_last)]
    f1_full = [macro_f1(np.bincount(y * k + p, minlength=k * k).reshape(k, k)) for p in (p_best, p_last)]
    extra: dict[str, object] = {}
    if class_weights is not None:
        extra["unweighted_loss_change"] = _interval(*_ratio(counts, d_nll, ones))
    if len(flipped_ids):
        flipped = np.isin(run.ids, np.asarray(flipped_ids))
        extra["flipped_part"] = _interval(*_ratio(counts, a * d_nll * flipped, a))
        extra["rest_loss_change"] = _interval(*_ratio(counts, a * d_nll * ~flipped, a * ~flipped))
    if pair is not None:
        c, c2 = pair
        of_c = (y == c) * 1.0
        extra["confusion_growth"] = _interval(*_ratio(counts, of_c * ((p_last == c2) * 1.0 - (p_best == c2)), of_c))
        extra["confusion_part"] = _interval(*_ratio(counts, a * d_nll * of_c * (p_last == c2), a))
    if collapsed is not None:
        of_c = (y == collapsed) * 1.0
        extra["recall_change"] = _interval(*_ratio(counts, of_c * ((p_last == collapsed) * 1.0 - (p_best == collapsed)),
                                                   of_c))
        extra["class_part"] = _interval(*_ratio(counts, a * d_nll * of_c, a))
        destinations = np.bincount(p_last[y == collapsed], minlength=k)
        destinations[collapsed] = 0
        extra["largest_destination_share"] = float(destinations.max() / of_c.sum())
    return Confirmation(
        n_items=n, losses=tuple(losses), accuracies=tuple(accuracies),
        best_epoch=run.epochs[best], last_epoch=run.epochs[last],
        temperatures=tuple(1 / fit_inverse_temperature(z, y, a) for z in (z_best, z_last)),
        loss_change=change["loss"], scaled_loss_change=change["scaled"], calibration_change=change["calibration"],
        accuracy_change=accuracy, macro_f1_change=_interval(f1_full[1] - f1_full[0], f1[1] - f1[0]), **extra)


# ----------------------------------------------------------------------------- the scenarios
def _scenario(kind: str, root: Path, size: str, seed: int, started: float, *, logits: list[np.ndarray],
              labels: np.ndarray, true_labels: np.ndarray, n_classes: int, status: str, primary: str | None = None,
              also: tuple[str, ...] = (), classes: tuple[int, ...] = (), weights: np.ndarray | None = None,
              flipped: np.ndarray | None = None, groups: np.ndarray | None = None,
              pair: tuple[int, int] | None = None, collapsed: int | None = None) -> Scenario:
    """Save the run, confirm it from the saved files, and record what a right verdict says."""
    folder, truth = _save(root, logits, labels, true_labels, groups)
    flipped_ids = () if flipped is None else tuple(item_ids(len(labels))[flipped].tolist())
    weights_tuple = None if weights is None else tuple(float(w) for w in weights)
    confirmation = confirm(folder, weights_tuple, flipped_ids=flipped_ids, pair=pair, collapsed=collapsed)
    names = CLASS_NAMES[:n_classes]
    return Scenario(
        name=kind if seed == 0 else f"{kind}_seed{seed}", kind=kind, size=size, seed=seed, predictions_dir=folder,
        truth_file=truth, class_names=names, class_weights=weights_tuple, expected_status=status,
        expected_primary=primary, acceptable_primary=frozenset(() if primary is None else (primary, *also)),
        expected_classes=tuple(names[c] for c in classes), flipped_ids=flipped_ids,
        clean_validation_labels=flipped is None, confirmation=confirmation,
        build_seconds=time.perf_counter() - started)


def _overconfident_run(rng: np.random.Generator, seed: int, n_val: int, epochs: int,
                       shifts: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Noise-free labels: 5 classes, each the union of 3 clusters in 20-D, an item labelled by the class of the
    nearest cluster mean; 6,000 training items; a 2-hidden-layer MLP trained by Adam without regularisation."""
    means = rng.normal(size=(15, 20)) * 0.6
    x, y = _draw(rng, means, _balanced(6000, 15), "nearest", 5)
    x_val, y_val = _draw(rng, means, _balanced(n_val, 15), "nearest", 5, shifts)
    return _train(_mlp(20, 5, 128, 2, seed), x, y, x_val, epochs=epochs, lr=0.003, batch=128, seed=seed), y_val


def build_overconfidence_only(root: Path, size: str = "small", seed: int = 0) -> Scenario:
    """Calibration. `_overconfident_run` for 40 epochs: plenty of noise-free data keeps the decisions improving
    (the temperature-scaled loss falls), but once the training set is fit the logits keep growing, so the few
    wrong validation items become confidently wrong and the raw loss rises."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    logits, y_val = _overconfident_run(rng, seed, _n_val(size, 2000), 40)
    return _scenario("overconfidence_only", root, size, seed, started, logits=logits, labels=y_val,
                     true_labels=y_val, n_classes=5, status="rise", primary="calibration")


def build_genuine_degradation(root: Path, size: str = "small", seed: int = 0) -> Scenario:
    """Genuine degradation. Noise-free labels (nearest of 5 cluster means) on 1,000 training items, 20% of them
    then relabelled uniformly at random; an MLP with weight decay trained 60 epochs. It memorises the wrong
    labels, spread over every class pair, so its decisions get worse everywhere; the decay keeps its
    confidence from running away, so the temperature-scaled loss rises by more than the raw loss."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(5, 20)) * 0.5
    x, y = _draw(rng, means, _balanced(1000, 5), "nearest")
    noisy = rng.random(len(y)) < 0.2
    y[noisy] = (y[noisy] + rng.integers(1, 5, noisy.sum())) % 5
    x_val, y_val = _draw(rng, means, _balanced(_n_val(size, 2000), 5), "nearest")
    logits = _train(_mlp(20, 5, 128, 1, seed), x, y, x_val, epochs=60, lr=0.003, batch=64, seed=seed,
                    weight_decay=0.01)
    return _scenario("genuine_degradation", root, size, seed, started, logits=logits, labels=y_val,
                     true_labels=y_val, n_classes=5, status="rise", primary="genuine_degradation")


def build_mixed(root: Path, size: str = "small", seed: int = 0) -> Scenario:
    """Calibration and genuine degradation together. 5 overlapping clusters labelled by the cluster drawn from
    (inherently noisy labels), 500 training items, an MLP without regularisation trained 60 epochs: it fits
    the noisy training set, so its decisions degrade (scaled loss up) and its confidence grows far beyond its
    accuracy (calibration part up), each beyond its interval."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(5, 20)) * 0.6
    x, y = _draw(rng, means, _balanced(500, 5), "cluster")
    x_val, y_val = _draw(rng, means, _balanced(_n_val(size, 2000), 5), "cluster")
    logits = _train(_mlp(20, 5, 64, 1, seed), x, y, x_val, epochs=60, lr=0.003, batch=64, seed=seed)
    return _scenario("mixed", root, size, seed, started, logits=logits, labels=y_val, true_labels=y_val,
                     n_classes=5, status="rise", primary="calibration", also=("genuine_degradation",))


def build_validation_label_noise(root: Path, size: str = "small", seed: int = 0) -> Scenario:
    """Wrong validation labels. Noise-free training labels (nearest of 5 cluster means); 15% of the validation
    items of classes 0 and 1 get a label drawn from the other four. The model grows ever more sure of the
    true classes, so the relabelled items' loss rises while every other item's loss falls. The verdict should
    name the relabelled ids; their labels are spread over all classes, so no class is expected."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(5, 20)) * 0.5
    x, y = _draw(rng, means, _balanced(1500, 5), "nearest")
    x_val, y_true = _draw(rng, means, _balanced(_n_val(size, 2000), 5), "nearest")
    y_val = y_true.copy()
    flipped = np.zeros(len(y_val), dtype=bool)
    for c in (0, 1):
        members = np.flatnonzero(y_true == c)
        chosen = rng.choice(members, int(round(0.15 * len(members))), replace=False)
        flipped[chosen] = True
        y_val[chosen] = (c + rng.integers(1, 5, len(chosen))) % 5
    logits = _train(_mlp(20, 5, 64, 1, seed), x, y, x_val, epochs=60, lr=0.003, batch=128, seed=seed)
    return _scenario("validation_label_noise", root, size, seed, started, logits=logits, labels=y_val,
                     true_labels=y_true, n_classes=5, status="rise", primary="validation_labels", flipped=flipped)


def build_training_label_noise_pair(root: Path, size: str = "small", seed: int = 0) -> Scenario:
    """A learned confusion. Noise-free labels (nearest of 5 cluster means) except that 40% of class c's training
    items are labelled c', the class whose mean is nearest c's. A 2-hidden-layer MLP memorises them and
    carves c' regions inside c, so a growing share of c's (correctly labelled) validation items is predicted
    c', and those items carry the rise."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(5, 20)) * 0.5
    x, y_clean = _draw(rng, means, _balanced(1500, 5), "nearest")
    c = 0
    distances = ((means - means[c]) ** 2).sum(1)
    distances[c] = np.inf
    c2 = int(distances.argmin())
    y = y_clean.copy()
    members = np.flatnonzero(y_clean == c)
    y[rng.choice(members, int(round(0.4 * len(members))), replace=False)] = c2
    x_val, y_val = _draw(rng, means, _balanced(_n_val(size, 2000), 5), "nearest")
    logits = _train(_mlp(20, 5, 128, 2, seed), x, y, x_val, epochs=60, lr=0.003, batch=64, seed=seed)
    return _scenario("training_label_noise_pair", root, size, seed, started, logits=logits, labels=y_val,
                     true_labels=y_val, n_classes=5, status="rise", primary="learned_confusion", classes=(c, c2),
                     pair=(c, c2))


def build_class_collapse(root: Path, size: str = "small", seed: int = 0) -> Scenario:
    """One class collapses while accuracy holds. Noise-free labels (nearest of 6 cluster means in 20-D); class 5's
    mean sits off the centroid of the other five, about equally far from each. Epochs 1-8 train on 1,500
    items (10% class 5); from epoch 9 on, a new 10,000-item shard that lacks class 5 (a pipeline bug): the
    other classes improve while class 5 (3% of validation items) is forgotten, its items spread over the
    other five classes."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(6, 20)) * 0.5
    c = 5
    basis, _ = np.linalg.qr(np.concatenate([means[:c].T, rng.normal(size=(20, 1))], axis=1))
    means[c] = means[:c].mean(0) + 3.0 * basis[:, c]

    def counts(n: int, share: float) -> list[int]:
        n_c = int(round(n * share))
        return _balanced(n - n_c, c) + [n_c]

    x1, y1 = _draw(rng, means, counts(1500, 0.10), "nearest")
    x2, y2 = _draw(rng, means, counts(10000, 0.0), "nearest")
    keep = y2 != c
    x, y = np.concatenate([x1, x2[keep]]), np.concatenate([y1, y2[keep]])
    x_val, y_val = _draw(rng, means, counts(_n_val(size, 2000), 0.03), "nearest")
    first = np.arange(len(y)) < len(y1)
    logits = _train(_mlp(20, 6, 64, 1, seed), x, y, x_val, epochs=30, lr=0.002, batch=64, seed=seed,
                    epoch_items=lambda e: np.flatnonzero(first if e < 8 else ~first))
    return _scenario("class_collapse", root, size, seed, started, logits=logits, labels=y_val, true_labels=y_val,
                     n_classes=6, status="rise", primary="class_collapse", classes=(c,), collapsed=c)


def build_class_weight_amplification(root: Path, size: str = "small", seed: int = 0) -> Scenario:
    """Class weights. 5 clusters labelled by the cluster drawn from; the rare class 4 (2% of items) overlaps
    class 0; the loss uses w_c = N / (K n_c) from the training counts (w_4 = 10). The MLP overfits the 100
    rare training items, so the rare class's validation loss rises while class 0's falls: weighted by 10,
    the rise wins; unweighted, the loss falls."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(5, 20)) * 1.0
    r = 4
    means[r] = means[0] + 2.5 * rng.normal(size=20) / np.sqrt(20)

    def counts(n: int) -> list[int]:
        n_r = int(round(0.02 * n))
        return _balanced(n - n_r, r) + [n_r]

    x, y = _draw(rng, means, counts(5000), "cluster")
    weights = len(y) / (5 * np.bincount(y, minlength=5))
    x_val, y_val = _draw(rng, means, counts(_n_val(size, 4000)), "cluster")
    logits = _train(_mlp(20, 5, 128, 1, seed), x, y, x_val, epochs=30, lr=0.001, batch=64, seed=seed,
                    class_weights=weights)
    return _scenario("class_weight_amplification", root, size, seed, started, logits=logits, labels=y_val,
                     true_labels=y_val, n_classes=5, status="rise", primary="class_weights", classes=(r,),
                     weights=weights)


def build_no_rise(root: Path, size: str = "small", seed: int = 0) -> Scenario:
    """No rise. Noise-free labels, 1,500 training items, an MLP trained 12 epochs at a small learning rate:
    still learning, so the loss is lowest at the last epoch."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(5, 20)) * 0.5
    x, y = _draw(rng, means, _balanced(1500, 5), "nearest")
    x_val, y_val = _draw(rng, means, _balanced(_n_val(size, 2000), 5), "nearest")
    logits = _train(_mlp(20, 5, 64, 1, seed), x, y, x_val, epochs=12, lr=0.001, batch=128, seed=seed)
    return _scenario("no_rise", root, size, seed, started, logits=logits, labels=y_val, true_labels=y_val,
                     n_classes=5, status="no_rise")


def build_small_noise(root: Path, size: str = "small", seed: int = 0) -> Scenario:
    """A rise within noise. `_overconfident_run` stopped at 12 epochs, a little past its loss minimum, validated on
    only 140 items in 28 groups of 5 (items of a group share a random offset, as turns of one dialogue share
    a speaker): the loss is higher at the end than at its minimum, but the paired bootstrap over whole groups
    cannot tell the change from 0. Both sizes keep the 140 items: the scenario is the small set."""
    started = time.perf_counter()
    _check_size(size)
    rng = np.random.default_rng(seed)
    groups = rng.permutation(np.repeat(np.arange(28), 5))
    shifts = 0.5 * rng.normal(size=(28, 20))[groups]
    logits, y_val = _overconfident_run(rng, seed, 140, 12, shifts)
    return _scenario("small_noise", root, size, seed, started, logits=logits, labels=y_val, true_labels=y_val,
                     n_classes=5, status="unresolved", groups=groups)


BUILDERS: dict[str, Callable[..., Scenario]] = {
    "overconfidence_only": build_overconfidence_only,
    "genuine_degradation": build_genuine_degradation,
    "mixed": build_mixed,
    "validation_label_noise": build_validation_label_noise,
    "training_label_noise_pair": build_training_label_noise_pair,
    "class_collapse": build_class_collapse,
    "class_weight_amplification": build_class_weight_amplification,
    "no_rise": build_no_rise,
    "small_noise": build_small_noise,
}
# (kind, seed): seed 0 of every kind, and a second seed of two
SUITE: tuple[tuple[str, int], ...] = (*((kind, 0) for kind in BUILDERS), ("overconfidence_only", 1),
                                      ("validation_label_noise", 1))


def build(kind: str, root: Path, size: str = "small", seed: int = 0) -> Scenario:
    name = kind if seed == 0 else f"{kind}_seed{seed}"
    return BUILDERS[kind](root / name, size, seed)


# ----------------------------------------------------------------------------- the defining facts
def defining_facts(s: Scenario) -> dict[str, bool]:
    """Each fact that makes the scenario's expected verdict right, computed from its confirmation."""
    c = s.confirmation
    rose = c.best_epoch < c.last_epoch
    facts = {}
    if s.expected_status == "rise":
        facts["the loss rose after its minimum beyond its interval"] = rose and c.loss_change.low > 0
    elif s.expected_status == "no_rise":
        facts["the loss is lowest at the last epoch"] = c.best_epoch == c.last_epoch
    else:
        facts["the loss rose after its minimum, within its interval"] = (
            rose and c.loss_change.estimate > 0 and c.loss_change.low <= 0 <= c.loss_change.high)
    if s.kind == "overconfidence_only":
        facts["the calibration part rose beyond its interval"] = c.calibration_change.low > 0
        facts["the scaled loss did not rise beyond its interval"] = c.scaled_loss_change.low <= 0
        facts["accuracy held"] = c.accuracy_change.high >= 0
    elif s.kind == "genuine_degradation":
        facts["the scaled loss rose beyond its interval"] = c.scaled_loss_change.low > 0
        facts["the scaled loss carries most of the rise"] = c.scaled_loss_change.estimate > c.loss_change.estimate / 2
    elif s.kind == "mixed":
        facts["the scaled loss rose beyond its interval"] = c.scaled_loss_change.low > 0
        facts["the calibration part rose beyond its interval"] = c.calibration_change.low > 0
    elif s.kind == "validation_label_noise":
        facts["the flipped items carry more than the whole rise"] = c.flipped_part.estimate > c.loss_change.estimate
        facts["the other items' loss fell beyond its interval"] = c.rest_loss_change.high < 0
    elif s.kind == "training_label_noise_pair":
        facts["the confusion c -> c' grew beyond its interval"] = c.confusion_growth.low > 0
        facts["its items carry most of the rise"] = c.confusion_part.low > 0 and \
            c.confusion_part.estimate > c.loss_change.estimate / 2
    elif s.kind == "class_collapse":
        facts["the class's recall fell beyond its interval"] = c.recall_change.high < 0
        facts["accuracy held"] = c.accuracy_change.high >= 0
        facts["the class's items carry most of the rise"] = c.class_part.estimate > c.loss_change.estimate / 2
        facts["its items went to several classes, not mostly one"] = c.largest_destination_share < 0.5
    elif s.kind == "class_weight_amplification":
        facts["the unweighted loss fell"] = c.unweighted_loss_change.estimate < 0
    return facts
