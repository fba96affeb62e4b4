"""Training-side scenario runs (issue 16, item 5): model-mode runs whose cause is known by construction.

Each `build_<kind>(root, size, seed)` trains a small torch MLP on synthetic Gaussian clusters (fixed seeds, one
thread: every build writes the same files) and writes a run folder as README's model mode documents it:

    RUN/checkpoints/epoch_NNN.pt    {"epoch", "model_state_dict", "optimizer_state_dict"(, "lr_scheduler")}
    RUN/postmortem_spec.py          build_model(), val_data() (and train_data() where a training subset is given)
    RUN/val.pt, RUN/train.pt        {"inputs", "labels", "ids"}: the validation set, the training subset
    RUN/postmortem.toml             class names (and the training log, or another run's checkpoints)
    RUN/truth.npz                   what the construction did: relabelled training ids, leaked validation ids, ...

The scheduler is stepped after each epoch and before the checkpoint is saved (as torchvision's reference script
does), so the lr a checkpoint holds is the one the next epoch trains with.

Every cause is confirmed without postmortem (`confirm`): the checkpoints are loaded into the spec's model by torch,
both sets scored in eval mode, the loss taken from float64 `torch.nn.functional.nll_loss`, the confusions from
predictions, and every change given a seeded paired bootstrap interval (tests/_scenarios.py's resamples). The
lowest-loss epoch is compared with the last. Nothing here imports postmortem.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from _scenarios import CLASS_NAMES, Interval, _balanced, _check_size, _draw, _interval, _ratio, item_nll, \
    resample_counts

SIZES = ("small", "large")
LR_EVENT_WINDOW = 2            # checkpoints after an LR event within which the rise must begin (DiagnosisConfig's)
MIN_LR_CHANGE = 0.2            # |r| = |lr_after - lr_before| / max(both) that makes an LR event (DiagnosisConfig's)

SPEC = '''"""A training-side scenario run (tests/_training_scenarios.py)."""
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
DIM, CLASSES, HIDDEN, DEPTH, DROPOUT = {dim}, {classes}, {hidden}, {depth}, {dropout}


def build_model():
    layers, width = [], DIM
    for _ in range(DEPTH):
        layers += [nn.Linear(width, HIDDEN), nn.ReLU()] + ([nn.Dropout(DROPOUT)] if DROPOUT else [])
        width = HIDDEN
    return nn.Sequential(*layers, nn.Linear(width, CLASSES))


def val_data():
    return torch.load(HERE / "val.pt", weights_only=True)
'''
TRAIN_DATA = '''

def train_data():
    return torch.load(HERE / "train.pt", weights_only=True)
'''


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TrainingConfirmation:
    """Numbers computed from the checkpoints on disk (torch, eval mode) that show the cause, lowest-loss epoch ->
    last. Parts of dL are sum over the selected items of (nll_i(last) - nll_i(best)) / n."""

    n_items: int
    epochs: tuple[int, ...]
    losses: tuple[float, ...]
    accuracies: tuple[float, ...]
    best_epoch: int
    last_epoch: int
    loss_change: Interval
    accuracy_change: Interval
    learning_rates: tuple[float, ...]                   # group 0's lr saved in each checkpoint
    train_losses: tuple[float, ...] | None = None       # the training subset's loss per epoch
    confusion_growth: Interval | None = None            # share of c's validation items predicted c' (last - best)
    confusion_part: Interval | None = None              # part of dL carried by c's items predicted c' at the end
    train_drift_growth: Interval | None = None          # share of c's training-subset items predicted c'
    train_recall_change: Interval | None = None         # c's recall on the training subset
    trained_share: tuple[float, ...] | None = None      # c's share of the items each epoch trained on
    subset_share_ratio: float | None = None             # c's share of the training subset / of the validation set
    relabelled_placed: float | None = None              # share of the relabelled subset items with AUM < 0, toward c
    clean_placed: float | None = None                   # the same among the clean items labelled c'
    label_excess: float | None = None                   # share of c'-labelled subset items placed in c minus the
                                                        # share of c'-labelled validation items placed in c
    leaked_exact: int | None = None                     # leaked validation items whose inputs a training item repeats
    leaked_near_max_difference: float | None = None     # largest |x_val - x_copy| of the near copies
    leaked_output_distance: float | None = None         # largest |logits_val - logits_copy| over epochs, leaked items
    other_output_distance: float | None = None          # median nearest-training distance of the other items
    logged_losses: tuple[float, ...] | None = None      # the training log's val_loss
    train_mode_losses: tuple[float, ...] | None = None  # torch's train-mode loss with the log's seeds
    eval_relative_difference: float | None = None       # largest |logged - eval| / eval


@dataclass(frozen=True)
class LrEventFact:
    """An LR event read from the checkpoints' optimizer state (group 0): the step between checkpoints `from_epoch`
    and `to_epoch`, its lr before and after and r = (after - before) / max(before, after)."""

    kind: str                     # "lr_drop" | "lr_restart" | "lr_warmup"
    from_epoch: int
    to_epoch: int
    lr_before: float
    lr_after: float
    relative_change: float


@dataclass(frozen=True)
class TrainingScenario:
    """A built run, what a correct verdict says about it, and the numbers that confirm it."""

    name: str
    kind: str
    size: str
    seed: int
    run: Path
    class_names: tuple[str, ...]
    with_subset: bool
    expected_status: str
    expected_primary: str | None
    acceptable_primary: frozenset[str]           # empty: the construction fixes no mechanism of the rise (leakage,
                                                 # a log in train mode are problems of the data or the log)
    expected_classes: tuple[str, ...]
    expected_findings: tuple[str, ...]
    confirmation: TrainingConfirmation
    build_seconds: float
    pair: tuple[int, int] | None = None
    relabelled_ids: tuple[str, ...] = ()        # training ids whose labels were set to c'
    leaked_ids: tuple[str, ...] = ()            # validation ids duplicated in the training data
    leaked_copies: tuple[tuple[str, str], ...] = ()   # (validation id, the training id of its copy)
    exact_copies: tuple[str, ...] = ()          # the leaked validation ids copied byte for byte
    lr_event: LrEventFact | None = None         # the event the rise follows
    facts: dict[str, bool] = field(default_factory=dict)


# ----------------------------------------------------------------------------- writing a run
@dataclass(frozen=True)
class Architecture:
    dim: int
    classes: int
    hidden: int
    depth: int
    dropout: float = 0.0


def _spec_text(arch: Architecture, with_subset: bool) -> str:
    return SPEC.format(dim=arch.dim, classes=arch.classes, hidden=arch.hidden, depth=arch.depth,
                       dropout=arch.dropout) + (TRAIN_DATA if with_subset else "")


def load_spec(run: Path) -> dict:
    """The run's spec file executed, as a namespace (its build_model, val_data, train_data)."""
    path = run / "postmortem_spec.py"
    namespace = {"__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def _write_set(path: Path, x: np.ndarray, y: np.ndarray, prefix: str) -> None:
    torch.save({"inputs": torch.from_numpy(x), "labels": torch.from_numpy(y),
                "ids": [f"{prefix}{i:05d}" for i in range(len(y))]}, path)


def _toml(run: Path, names: tuple[str, ...], **options: str) -> None:
    lines = ["class-names = [" + ", ".join(f'"{n}"' for n in names) + "]"]
    lines += [f'{key} = "{value}"' for key, value in options.items()]
    (run / "postmortem.toml").write_text("\n".join(lines) + "\n")


def _write_run(run: Path, arch: Architecture, names: tuple[str, ...], x_val, y_val, subset: tuple | None) -> None:
    if run.exists():
        shutil.rmtree(run)
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(_spec_text(arch, subset is not None))
    _write_set(run / "val.pt", x_val, y_val, "v")
    if subset is not None:
        _write_set(run / "train.pt", *subset, "t")
    _toml(run, names)


def _twin_without_subset(run: Path, twin: Path, arch: Architecture, names: tuple[str, ...]) -> None:
    """A second run folder over the same checkpoints whose spec defines no train_data()."""
    twin.mkdir(parents=True, exist_ok=True)
    (twin / "postmortem_spec.py").write_text(_spec_text(arch, False))
    (twin / "val.pt").write_bytes((run / "val.pt").read_bytes())
    _toml(twin, names, checkpoints=str((run / "checkpoints").resolve()))


def _train(run: Path, model: torch.nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int, seed: int,
           optimizer: Callable, scheduler: Callable | None = None,
           epoch_items: Callable[[int], np.ndarray] | None = None,
           log_train_mode: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Mini-batch training on cross-entropy, one checkpoint per epoch (epochs numbered from 1).

    epoch_items(e) gives the rows epoch e (0-based) trains on (all by default). With `log_train_mode` (x_val, y_val)
    a training log is written whose val_loss is computed WITHOUT model.eval() (dropout active), with torch's
    generator seeded 1000 + epoch before each, so the logged values can be recomputed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(seed)
        opt = optimizer(model.parameters())
        sched = scheduler(opt) if scheduler is not None else None
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        log = ["epoch,train_loss,val_loss"]
        for epoch in range(1, epochs + 1):
            rows = torch.arange(len(yt)) if epoch_items is None else torch.from_numpy(epoch_items(epoch - 1))
            rows = rows[torch.randperm(len(rows), generator=generator)]
            model.train()
            total, count = 0.0, 0
            for start in range(0, len(rows), batch):
                step = rows[start:start + batch]
                opt.zero_grad()
                loss = F.cross_entropy(model(xt[step]), yt[step])
                loss.backward()
                opt.step()
                total, count = total + loss.item() * len(step), count + len(step)
            if sched is not None:
                sched.step()
            if log_train_mode is not None:
                with torch.no_grad():            # the bug: validation without model.eval()
                    torch.manual_seed(1000 + epoch)
                    logged = F.cross_entropy(model(torch.from_numpy(log_train_mode[0])),
                                             torch.from_numpy(log_train_mode[1])).item()
                log.append(f"{epoch},{total / count!r},{logged!r}")
            state = {"epoch": epoch, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict()}
            if sched is not None:
                state["lr_scheduler"] = sched.state_dict()
            torch.save(state, run / "checkpoints" / f"epoch_{epoch:03d}.pt")
        if log_train_mode is not None:
            (run / "train_log.csv").write_text("\n".join(log) + "\n")
    finally:
        torch.set_num_threads(threads)


def _model(run: Path, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return load_spec(run)["build_model"]()


# ----------------------------------------------------------------------------- reading a run back (torch only)
@dataclass(frozen=True)
class RunOutputs:
    """A run's checkpoints scored by torch in eval mode: float32 logits per epoch of both sets."""

    epochs: tuple[int, ...]
    val_logits: tuple[np.ndarray, ...]
    val_labels: np.ndarray
    val_ids: np.ndarray
    val_inputs: np.ndarray
    train_logits: tuple[np.ndarray, ...] | None
    train_labels: np.ndarray | None
    train_ids: np.ndarray | None
    train_inputs: np.ndarray | None
    learning_rates: tuple[float, ...]
    states: tuple[dict, ...]


def checkpoint_files(run: Path) -> list[Path]:
    folder = run / "checkpoints"
    toml = run / "postmortem.toml"
    if toml.is_file() and "checkpoints = " in toml.read_text():
        folder = Path(toml.read_text().split('checkpoints = "')[1].split('"')[0])
    return sorted(folder.glob("epoch_*.pt"))


def read_run(run: Path) -> RunOutputs:
    spec = load_spec(run)
    val = torch.load(run / "val.pt", weights_only=True)
    train = torch.load(run / "train.pt", weights_only=True) if "train_data" in spec else None
    model = spec["build_model"]()
    epochs, val_logits, train_logits, rates, states = [], [], [], [], []
    for path in checkpoint_files(run):
        checkpoint = torch.load(path, weights_only=True)
        model.load_state_dict(checkpoint["model_state_dict"])
        model.eval()
        with torch.no_grad():
            val_logits.append(model(val["inputs"]).numpy())
            if train is not None:
                train_logits.append(model(train["inputs"]).numpy())
        epochs.append(int(checkpoint["epoch"]))
        rates.append(float(checkpoint["optimizer_state_dict"]["param_groups"][0]["lr"]))
        states.append(checkpoint["model_state_dict"])
    return RunOutputs(
        tuple(epochs), tuple(val_logits), val["labels"].numpy(), np.array(val["ids"]), val["inputs"].numpy(),
        None if train is None else tuple(train_logits), None if train is None else train["labels"].numpy(),
        None if train is None else np.array(train["ids"]), None if train is None else train["inputs"].numpy(),
        tuple(rates), tuple(states))


def lr_event_facts(epochs: tuple[int, ...], rates: tuple[float, ...]) -> tuple[LrEventFact, ...]:
    """Every step between consecutive checkpoints whose |r| reaches MIN_LR_CHANGE: a fall is a drop, a rise after the
    lr fell from its peak by MIN_LR_CHANGE a restart, any other rise a warm-up (steps are not merged here)."""
    facts, peak = [], rates[0]
    for i in range(len(rates) - 1):
        before, after = rates[i], rates[i + 1]
        peak = max(peak, before)
        r = (after - before) / max(before, after)
        if abs(r) >= MIN_LR_CHANGE:
            kind = "lr_drop" if r < 0 else ("lr_restart" if (before - peak) / peak <= -MIN_LR_CHANGE else "lr_warmup")
            facts.append(LrEventFact(kind, epochs[i], epochs[i + 1], before, after, r))
    return tuple(facts)


def _bootstrap_change(counts, before: np.ndarray, after: np.ndarray, of: np.ndarray) -> Interval:
    """Change of the share of the `of` items where the 0/1 arrays `before` / `after` hold, on every resample."""
    return _interval(*_ratio(counts, of * (after * 1.0 - before), of * 1.0))


def area_under_margin(logits: tuple[np.ndarray, ...], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUM, competitor): margin z_y - max_{k != y} z_k averaged over the epochs, and the class most often
    predicted while wrong (by torch's argmax of the logits)."""
    margins, wrong_votes = [], np.zeros((len(labels), logits[0].shape[1]))
    rows = np.arange(len(labels))
    for z in logits:
        z = z.astype(np.float64)
        own = z[rows, labels]
        others = z.copy()
        others[rows, labels] = -np.inf
        margins.append(own - others.max(1))
        pred = z.argmax(1)
        wrong = pred != labels
        wrong_votes[rows[wrong], pred[wrong]] += 1
    return np.mean(margins, axis=0), wrong_votes.argmax(1)


def confirm(run: Path, *, pair: tuple[int, int] | None = None, trained_share: tuple[float, ...] | None = None,
            relabelled_ids: tuple[str, ...] = (), leaked_ids: tuple[str, ...] = (), near_ids: tuple[str, ...] = (),
            copies: dict[str, str] | None = None) -> TrainingConfirmation:
    """The defining numbers of a run folder, best (lowest-loss) epoch against the last, from torch alone."""
    out = read_run(run)
    y = out.val_labels
    n = len(y)
    losses = [float(item_nll(z, y).mean()) for z in out.val_logits]
    accuracies = [float((z.argmax(1) == y).mean()) for z in out.val_logits]
    best, last = int(np.argmin(losses)), len(losses) - 1
    counts = resample_counts(n)
    ones = np.ones(n)
    d_nll = item_nll(out.val_logits[last], y) - item_nll(out.val_logits[best], y)
    p_best, p_last = out.val_logits[best].argmax(1), out.val_logits[last].argmax(1)
    extra: dict[str, object] = {}
    if out.train_logits is not None:
        extra["train_losses"] = tuple(float(item_nll(z, out.train_labels).mean()) for z in out.train_logits)
    if pair is not None:
        c, c2 = pair
        of_c = y == c
        extra["confusion_growth"] = _bootstrap_change(counts, p_best == c2, p_last == c2, of_c)
        extra["confusion_part"] = _interval(*_ratio(counts, d_nll * of_c * (p_last == c2), ones))
        if out.train_logits is not None:
            yt = out.train_labels
            train_counts = resample_counts(len(yt), seed=1)
            t_best, t_last = out.train_logits[best].argmax(1), out.train_logits[last].argmax(1)
            of_c_train = yt == c
            extra["train_drift_growth"] = _bootstrap_change(train_counts, t_best == c2, t_last == c2, of_c_train)
            extra["train_recall_change"] = _bootstrap_change(train_counts, t_best == c, t_last == c, of_c_train)
            extra["subset_share_ratio"] = float(of_c_train.mean() / of_c.mean())
            if relabelled_ids:
                aum, competitor = area_under_margin(out.train_logits[:last + 1], yt)
                placed = (aum < 0) & (competitor == c)
                relabelled = np.isin(out.train_ids, relabelled_ids)
                extra["relabelled_placed"] = float(placed[relabelled].mean())
                extra["clean_placed"] = float(placed[~relabelled & (yt == c2)].mean())
                val_aum, val_competitor = area_under_margin(out.val_logits[:last + 1], y)
                val_placed = (val_aum < 0) & (val_competitor == c)
                extra["label_excess"] = float(placed[yt == c2].mean() - val_placed[y == c2].mean())
    if trained_share is not None:
        extra["trained_share"] = trained_share
    if leaked_ids:
        index = {item: i for i, item in enumerate(out.train_ids)}
        pairs = [(int(np.flatnonzero(out.val_ids == v)[0]), index[t]) for v, t in copies.items()]
        exact = [v for v, t in pairs if np.array_equal(out.val_inputs[v], out.train_inputs[t])]
        near = [(v, t) for v, t in pairs if out.val_ids[v] in near_ids]
        extra["leaked_exact"] = len(exact)
        extra["leaked_near_max_difference"] = float(max(np.abs(out.val_inputs[v] - out.train_inputs[t]).max()
                                                        for v, t in near)) if near else 0.0
        trajectories_val = np.concatenate(out.val_logits, axis=1).astype(np.float64)
        trajectories_train = np.concatenate(out.train_logits, axis=1).astype(np.float64)
        extra["leaked_output_distance"] = float(max(np.abs(trajectories_val[v] - trajectories_train[t]).max()
                                                    for v, t in pairs))
        others = np.setdiff1d(np.arange(n), [v for v, _ in pairs])[:300]
        nearest = [np.abs(trajectories_train - trajectories_val[v]).max(1).min() for v in others]
        extra["other_output_distance"] = float(np.median(nearest))
    if (run / "train_log.csv").is_file():
        rows = [line.split(",") for line in (run / "train_log.csv").read_text().split()[1:]]
        logged = tuple(float(row[2]) for row in rows)
        model = load_spec(run)["build_model"]()
        train_mode = []
        for epoch, state in zip(out.epochs, out.states):
            model.load_state_dict(state)
            model.train()
            with torch.no_grad():
                torch.manual_seed(1000 + epoch)
                train_mode.append(F.cross_entropy(model(torch.from_numpy(out.val_inputs)), torch.from_numpy(y)).item())
        extra["logged_losses"] = logged
        extra["train_mode_losses"] = tuple(train_mode)
        extra["eval_relative_difference"] = float(max(abs(a - b) / b for a, b in zip(logged, losses)))
    return TrainingConfirmation(
        n_items=n, epochs=out.epochs, losses=tuple(losses), accuracies=tuple(accuracies),
        best_epoch=out.epochs[best], last_epoch=out.epochs[last],
        loss_change=_interval(*_ratio(counts, d_nll, ones)),
        accuracy_change=_interval(*_ratio(counts, (p_last == y) * 1.0 - (p_best == y), ones)),
        learning_rates=out.learning_rates, **extra)


# ----------------------------------------------------------------------------- the scenarios
def _n(size: str, small: int) -> int:
    _check_size(size)
    return small if size == "small" else 3 * small


def _neighbours(rng: np.random.Generator, n_classes: int, dim: int, scale: float, a: int, distance: float):
    """Cluster means with class a's mean `distance` from its nearest other class's mean, b; (means, b)."""
    means = rng.normal(size=(n_classes, dim)) * scale
    d = ((means - means[a]) ** 2).sum(1)
    d[a] = np.inf
    b = int(d.argmin())
    direction = (means[a] - means[b]) / np.linalg.norm(means[a] - means[b])
    means[a] = means[b] + distance * direction
    return means, b


def _scenario(kind: str, run: Path, size: str, seed: int, started: float, confirmation: TrainingConfirmation, *,
              names: tuple[str, ...], with_subset: bool, status: str, primary: str | None, also: tuple[str, ...] = (),
              classes: tuple[int, ...] = (), findings: tuple[str, ...] = (), name: str | None = None,
              **extra) -> TrainingScenario:
    scenario = TrainingScenario(
        name=name or (kind if seed == 0 else f"{kind}_seed{seed}"), kind=kind, size=size, seed=seed, run=run,
        class_names=names, with_subset=with_subset, expected_status=status, expected_primary=primary,
        acceptable_primary=frozenset(() if primary is None else (primary, *also)),
        expected_classes=tuple(names[c] for c in classes), expected_findings=findings, confirmation=confirmation,
        build_seconds=time.perf_counter() - started, **extra)
    return TrainingScenario(**{**vars(scenario), "facts": defining_facts(scenario)})


def build_class_undersampled(root: Path, size: str = "small", seed: int = 0) -> tuple[TrainingScenario, ...]:
    """A class loses its training signal. 5 clusters in 10-D, an item labelled by the cluster it was drawn from
    (labels as drawn: clean, and the classes overlap); class a's cluster lies close to class b's. Epochs 1-6 train
    on every item; from epoch 7 on the data pipeline keeps only 10% of a's items (a fixed sample), the training
    labels stay clean: the model's prior for a falls, so a growing share of a's validation items (those in the
    overlap) is predicted b, ever more confidently. The training subset is a fixed sample of the whole training pool
    (a's items at their original share), so a's own training items drift to b as well.

    Two runs over the same checkpoints: with the subset (expected: class_underrepresented, naming a and b) and
    without it (expected: learned_confusion, naming both explanations and claiming no label noise)."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    a, first_thinned, kept = 0, 6, 0.10
    means, b = _neighbours(rng, 5, 10, 1.5, a, 1.5)
    x, y = _draw(rng, means, _balanced(3000, 5), "cluster")
    x_val, y_val = _draw(rng, means, _balanced(_n(size, 1500), 5), "cluster")
    of_a = np.flatnonzero(y == a)
    thinned = np.setdiff1d(np.arange(len(y)), rng.choice(of_a, int(len(of_a) * (1 - kept)), replace=False))
    subset = np.sort(rng.choice(len(y), 1000, replace=False))
    names = CLASS_NAMES[:5]
    arch = Architecture(10, 5, 64, 1)
    run = root / ("class_undersampled" if seed == 0 else f"class_undersampled_seed{seed}")
    _write_run(run, arch, names, x_val, y_val, (x[subset], y[subset]))
    epochs = 16

    def items(e: int) -> np.ndarray:
        return np.arange(len(y)) if e < first_thinned else thinned

    _train(run, _model(run, seed), x, y, epochs=epochs, batch=64, seed=seed, epoch_items=items,
           optimizer=lambda p: torch.optim.Adam(p, lr=0.003))
    shares = tuple(float((y[items(e)] == a).mean()) for e in range(epochs))
    twin = run.parent / (run.name.replace("class_undersampled", "class_undersampled_no_subset"))
    _twin_without_subset(run, twin, arch, names)
    with_subset = _scenario("class_undersampled", run, size, seed, started,
                            confirm(run, pair=(a, b), trained_share=shares), names=names, with_subset=True,
                            status="rise", primary="class_underrepresented", classes=(a, b),
                            findings=("class_underrepresented",), pair=(a, b))
    without = _scenario("class_undersampled_no_subset", twin, size, seed, started,
                        confirm(twin, pair=(a, b), trained_share=shares), names=names, with_subset=False,
                        status="rise", primary="learned_confusion", classes=(a, b), findings=("learned_confusion",),
                        pair=(a, b), name=twin.name)
    return with_subset, without


def build_training_label_noise_subset(root: Path, size: str = "small", seed: int = 0) -> TrainingScenario:
    """Noisy training labels, with the training subset given. Noise-free labels (nearest of 5 cluster means) except
    that 40% of class a's training items (3,000 in all) are labelled b, its nearest class. A 2-hidden-layer MLP
    (64 wide, Adam at lr 0.001, 30 epochs) memorises them slowly (most are placed in a for much of training), so
    a growing share of a's validation items is predicted b. The training subset is a fixed sample of the training
    items with the labels trained on: the relabelled ones among them are the ids a right verdict names."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    a = 0
    means, b = _neighbours(rng, 5, 20, 0.5, a, 1.2)
    x, y_clean = _draw(rng, means, _balanced(3000, 5), "nearest")
    y = y_clean.copy()
    of_a = np.flatnonzero(y_clean == a)
    relabelled = rng.choice(of_a, int(round(0.4 * len(of_a))), replace=False)
    y[relabelled] = b
    x_val, y_val = _draw(rng, means, _balanced(_n(size, 1500), 5), "nearest")
    subset = np.sort(rng.choice(len(y), 1000, replace=False))
    names = CLASS_NAMES[:5]
    run = root / ("training_label_noise_subset" if seed == 0 else f"training_label_noise_subset_seed{seed}")
    _write_run(run, Architecture(20, 5, 64, 2), names, x_val, y_val, (x[subset], y[subset]))
    _train(run, _model(run, seed), x, y, epochs=30, batch=64, seed=seed,
           optimizer=lambda p: torch.optim.Adam(p, lr=0.001))
    relabelled_ids = tuple(f"t{i:05d}" for i in np.flatnonzero(np.isin(subset, relabelled)))
    return _scenario("training_label_noise_subset", run, size, seed, started,
                     confirm(run, pair=(a, b), relabelled_ids=relabelled_ids), names=names, with_subset=True,
                     status="rise", primary="learned_confusion", classes=(a, b), findings=("learned_confusion",),
                     pair=(a, b), relabelled_ids=relabelled_ids)


def _noisy_clusters(rng: np.random.Generator, size: str, n_train: int, dim: int = 20, scale: float = 0.6):
    means = rng.normal(size=(5, dim)) * scale
    x, y = _draw(rng, means, _balanced(n_train, 5), "cluster")
    x_val, y_val = _draw(rng, means, _balanced(_n(size, 1500), 5), "cluster")
    return x, y, x_val, y_val


def _symmetric_noise(rng: np.random.Generator, size: str, n_train: int, noise: float = 0.2):
    """5 classes, each the union of 3 clusters in 20-D, an item labelled by the class of the nearest cluster mean;
    a share `noise` of the training labels replaced by another class at random (the validation labels are clean)."""
    means = rng.normal(size=(15, 20)) * 0.6
    x, y = _draw(rng, means, _balanced(n_train, 15), "nearest", 5)
    noisy = rng.random(len(y)) < noise
    y[noisy] = (y[noisy] + rng.integers(1, 5, noisy.sum())) % 5
    x_val, y_val = _draw(rng, means, _balanced(_n(size, 1500), 15), "nearest", 5)
    return x, y, x_val, y_val


def _lr_scenario(kind: str, root: Path, size: str, seed: int, started: float, *, epochs: int, optimizer, scheduler,
                 event_kind: str, n_train: int, data=None, hidden: int = 128) -> TrainingScenario:
    rng = np.random.default_rng(seed)
    x, y, x_val, y_val = (data or _noisy_clusters)(rng, size, n_train)
    names = CLASS_NAMES[:5]
    run = root / (kind if seed == 0 else f"{kind}_seed{seed}")
    _write_run(run, Architecture(20, 5, hidden, 1), names, x_val, y_val, None)
    _train(run, _model(run, seed), x, y, epochs=epochs, batch=32, seed=seed, optimizer=optimizer, scheduler=scheduler)
    confirmation = confirm(run)
    events = [e for e in lr_event_facts(confirmation.epochs, confirmation.learning_rates) if e.kind == event_kind]
    before_best = [e for e in events if e.to_epoch <= confirmation.best_epoch]
    event = before_best[-1] if before_best else (events[0] if events else None)
    return _scenario(kind, run, size, seed, started, confirmation, names=names, with_subset=False, status="rise",
                     primary="calibration", also=("genuine_degradation",), lr_event=event)


def build_step_lr_decay(root: Path, size: str = "small", seed: int = 0) -> TrainingScenario:
    """A rise right after a step decay (Guo et al. 2017). 5 classes, each the union of 3 clusters, 2,000 training
    items with 20% of their labels replaced at random; SGD with momentum 0.9 and weight decay 5e-4 at lr 0.1,
    StepLR dividing it by 5 after epoch 10. The large lr keeps the model from fitting the wrong labels; once it
    drops, the loss dips for one epoch, then the model memorises the wrong labels and the loss rises."""
    return _lr_scenario("step_lr_decay", root, size, seed, time.perf_counter(), epochs=19, n_train=2000,
                        data=_symmetric_noise, hidden=256,
                        optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
                        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.2),
                        event_kind="lr_drop")


def build_warm_restart(root: Path, size: str = "small", seed: int = 0) -> TrainingScenario:
    """A rise that starts at a warm restart. Overlapping clusters labelled by the cluster drawn from, 2,000 training
    items; SGD with momentum 0.9 and weight decay 5e-3 under CosineAnnealingWarmRestarts (T_0 = 10 epochs, lr 0.2):
    the loss falls as the lr anneals to almost 0, the restart after epoch 10 puts it back at 0.2, the model is
    thrown out of its minimum and the loss stays above it until the last epoch, 5 epochs into the new cycle."""
    return _lr_scenario("warm_restart", root, size, seed, time.perf_counter(), epochs=15, n_train=2000,
                        optimizer=lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9, weight_decay=5e-3),
                        scheduler=lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=10),
                        event_kind="lr_restart")


def build_leaked_set(root: Path, size: str = "small", seed: int = 0) -> TrainingScenario:
    """Validation items leaked into training. Overlapping clusters (noisy labels), 1,200 training items; 5% of the
    validation items are copied into the training data, half byte for byte, half with noise of std 1e-4 added (a
    re-encoded copy); the training subset is the whole training data. The model memorises the copies."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    x, y, x_val, y_val = _noisy_clusters(rng, size, 1200)
    leaked = np.sort(rng.choice(len(y_val), int(round(0.05 * len(y_val))), replace=False))
    near = leaked[::2]
    copies_x = x_val[leaked].copy()
    copies_x[np.isin(leaked, near)] += (1e-4 * rng.normal(size=(len(near), x.shape[1]))).astype(np.float32)
    x, y = np.concatenate([x, copies_x]), np.concatenate([y, y_val[leaked]])
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    position = np.argsort(order)                          # where each row went
    copy_rows = position[len(y) - len(leaked):]
    names = CLASS_NAMES[:5]
    run = root / ("leaked_set" if seed == 0 else f"leaked_set_seed{seed}")
    _write_run(run, Architecture(20, 5, 128, 1), names, x_val, y_val, (x, y))
    _train(run, _model(run, seed), x, y, epochs=20, batch=64, seed=seed,
           optimizer=lambda p: torch.optim.Adam(p, lr=0.003))
    leaked_ids = tuple(f"v{i:05d}" for i in leaked)
    copies = {f"v{v:05d}": f"t{t:05d}" for v, t in zip(leaked, copy_rows)}
    confirmation = confirm(run, leaked_ids=leaked_ids, near_ids=tuple(f"v{i:05d}" for i in near), copies=copies)
    return _scenario("leaked_set", run, size, seed, started, confirmation, names=names, with_subset=True,
                     status="rise", primary=None,
                     findings=("train_validation_leakage",), leaked_ids=leaked_ids,
                     leaked_copies=tuple(copies.items()),
                     exact_copies=tuple(f"v{i:05d}" for i in np.setdiff1d(leaked, near)))


def build_dropout_train_mode_log(root: Path, size: str = "small", seed: int = 0) -> TrainingScenario:
    """A logged validation loss computed in train mode. A 2-hidden-layer MLP with dropout 0.5 after each layer on
    overlapping clusters; the training loop validates without model.eval(), so its logged val_loss has dropout
    active. No training subset: the log alone makes postmortem score the compared epochs in train mode."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    x, y, x_val, y_val = _noisy_clusters(rng, size, 800)
    names = CLASS_NAMES[:5]
    run = root / ("dropout_train_mode_log" if seed == 0 else f"dropout_train_mode_log_seed{seed}")
    _write_run(run, Architecture(20, 5, 128, 2, dropout=0.5), names, x_val, y_val, None)
    _toml(run, names, **{"train-log": "train_log.csv"})
    _train(run, _model(run, seed), x, y, epochs=20, batch=64, seed=seed,
           optimizer=lambda p: torch.optim.Adam(p, lr=0.003), log_train_mode=(x_val, y_val))
    return _scenario("dropout_train_mode_log", run, size, seed, started, confirm(run), names=names,
                     with_subset=False, status="rise", primary=None, findings=("logged_loss_mismatch",))


BUILDERS: dict[str, Callable[..., TrainingScenario | tuple[TrainingScenario, ...]]] = {
    "class_undersampled": build_class_undersampled,
    "training_label_noise_subset": build_training_label_noise_subset,
    "step_lr_decay": build_step_lr_decay,
    "warm_restart": build_warm_restart,
    "leaked_set": build_leaked_set,
    "dropout_train_mode_log": build_dropout_train_mode_log,
}


def build(kind: str, root: Path, size: str = "small", seed: int = 0) -> tuple[TrainingScenario, ...]:
    """The runs one builder makes (class_undersampled makes two: with and without the training subset)."""
    built = BUILDERS[kind](root, size, seed)
    return built if isinstance(built, tuple) else (built,)


def build_suite(root: Path, size: str = "small", seeds: tuple[int, ...] = (0,)) -> dict[str, TrainingScenario]:
    return {s.name: s for kind in BUILDERS for seed in seeds for s in build(kind, root, size, seed)}


# ----------------------------------------------------------------------------- the defining facts
def defining_facts(s: TrainingScenario) -> dict[str, bool]:
    """Each fact that makes the scenario's expected verdict right, computed from its confirmation."""
    c = s.confirmation
    facts = {"the loss rose after its minimum beyond its interval": c.best_epoch < c.last_epoch
             and c.loss_change.low > 0}
    if s.kind in ("class_undersampled", "class_undersampled_no_subset"):
        facts["a's share of what each epoch trained on fell to a tenth"] = (
            c.trained_share[-1] <= 0.15 * c.trained_share[0])
        facts["a's validation items drift to b beyond their interval"] = c.confusion_growth.low > 0
        facts["those items carry most of the rise"] = c.confusion_part.estimate > c.loss_change.estimate / 2
        if s.with_subset:
            facts["a's training-subset items drift to b too"] = c.train_drift_growth.low > 0
            facts["a keeps its share in the training subset"] = c.subset_share_ratio > 0.8
    elif s.kind == "training_label_noise_subset":
        facts["a's validation items drift to b beyond their interval"] = c.confusion_growth.low > 0
        facts["those items carry most of the rise"] = c.confusion_part.estimate > c.loss_change.estimate / 2
        facts["a quarter of the relabelled subset items are placed in a over training (AUM < 0)"] = \
            c.relabelled_placed > 0.25
        facts["few clean b items are"] = c.clean_placed < 0.02
        facts["b-labelled training items are placed in a 5 points more often than validation ones"] = \
            c.label_excess > 0.05
    elif s.kind in ("step_lr_decay", "warm_restart"):
        e = s.lr_event
        facts["the checkpoints record the LR event"] = e is not None
        if e is not None:
            best = c.epochs.index(c.best_epoch)
            onset = best + 1                        # the first checkpoint above the minimum: the rise begins
            facts["the rise begins within the window after the event"] = (
                0 <= onset - c.epochs.index(e.to_epoch) <= LR_EVENT_WINDOW)
            facts["the loss stays above its minimum to the end"] = min(c.losses[onset:]) > c.losses[best]
    elif s.kind == "leaked_set":
        facts["the exact copies are byte for byte"] = c.leaked_exact == len(s.exact_copies) > 0
        facts["the near copies differ by at most 1e-3"] = 0 < c.leaked_near_max_difference <= 1e-3
        facts["copies score as their originals at every epoch"] = c.leaked_output_distance < \
            0.02 * c.other_output_distance
    elif s.kind == "dropout_train_mode_log":
        facts["the log's val_loss is torch's train-mode loss"] = np.allclose(c.logged_losses, c.train_mode_losses,
                                                                            rtol=1e-12)
        facts["and not the eval-mode loss"] = c.eval_relative_difference > 1e-3
    return facts
