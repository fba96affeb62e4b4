"""Evaluation overhead: postmortem's evaluation of K checkpoints vs a bare torch loop over the same work.

    .venv/bin/python benchmarks/bench_eval_overhead.py [--device cpu|cuda] [--workloads mlp,gru,resnet18,dialogue_gru]
                                                       [--repeats N] [--batch-size 512]

Four workloads: two tiny models (a 20-class MLP, a small GRU tagger; K=20) whose forward pass costs about as much
as postmortem's fixed per-item work, and two of real size (K=10): a ResNet-18 on 3 x 32 x 32 inputs (ImageNet
stem; 10,000 items) and the motivating case's dialogue model (a bidirectional GRU over 1,024-d utterance
features, hidden 256, 7 classes, class weights, padding masks, log-softmax; 500 dialogues of 15-25 utterances).

The bare loop does what a user's own script would: import the model's spec file, torch.load the validation set,
then per checkpoint torch.load(weights_only=True) + load_state_dict + eval() + forward passes with the same batch
size and threads. postmortem's side is evaluate_run() with an empty cache: it imports the same spec and loads the
same data, hashes every file, loads safely, runs the forward passes, reduces the outputs to per-item float64
records, fits a temperature and writes its cache. Both sides run in this process, alternating (A B, B A, ...), so
torch's own import is counted on neither; the ratio is the median of the pairs. Target <= 1.10x.
A profile of one run of postmortem's side says where its time went (hashing and reduction run on other threads,
beside the forward passes, so the parts may add up to more than the whole).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import paired_ratio, record  # noqa: E402

from postmortem.config import ReportConfig  # noqa: E402
from postmortem.evaluate.runner import evaluate_run  # noqa: E402

MLP_SPEC = '''
import torch.nn as nn
def build_model():
    return nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 20))
'''
GRU_SPEC = '''
import torch, torch.nn as nn
class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(1000, 32)
        self.gru = nn.GRU(32, 64, batch_first=True)
        self.head = nn.Linear(64, 12)
    def forward(self, tokens):
        return self.head(self.gru(self.embed(tokens))[0])
def build_model():
    return Tagger()
'''
RESNET18_SPEC = '''
import torch, torch.nn as nn
class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \\
            if stride != 1 or cin != cout else nn.Identity()
    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.down(x))
def build_model():   # ResNet-18 (He et al. 2016) with the ImageNet stem: 7x7/2 convolution and 3x3/2 max-pool
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10))
'''
DIALOGUE_GRU_SPEC = '''
import torch, torch.nn as nn
class DialogueGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(1024, 256, batch_first=True, bidirectional=True)
        self.head = nn.Linear(512, 7)
    def forward(self, utterances):
        return torch.log_softmax(self.head(self.gru(utterances)[0]), dim=-1)
def build_model():
    return DialogueGRU()
'''


def _mlp_data() -> dict:
    return {"inputs": torch.randn(20000, 128), "labels": torch.randint(0, 20, (20000,))}


def _gru_data() -> dict:
    return {"inputs": torch.randint(0, 1000, (1000, 32)), "labels": torch.randint(0, 12, (1000, 32))}


def _image_data() -> dict:
    return {"inputs": torch.randn(10000, 3, 32, 32), "labels": torch.randint(0, 10, (10000,))}


def _dialogue_data() -> dict:
    """500 dialogues padded to 25 utterances, 15-25 of them real (about 10,000 counted items)."""
    lengths = torch.randint(15, 26, (500,))
    mask = (torch.arange(25)[None, :] < lengths[:, None]).long()
    return {"inputs": torch.randn(500, 25, 1024), "labels": torch.randint(0, 7, (500, 25)), "mask": mask}


def _dialogue_weights(data: dict) -> tuple[float, ...]:
    """w_c = N / (K n_c) over the counted items, as the motivating case weights its loss."""
    counts = torch.bincount(data["labels"][data["mask"].bool()], minlength=7).double()
    return tuple((counts.sum() / (7 * counts)).tolist())


@dataclass(frozen=True)
class Workload:
    """One benchmark: the spec file, the validation set, checkpoints, FLOPs per counted item (None: not counted)."""

    spec: str
    data: Callable[[], dict]
    k: int
    repeats: int | None = None          # None: --repeats; real-size models: one A B and one B A pair, no warm-up
    outputs: str = "auto"
    weighted: bool = False
    flops_per_item: Callable[[dict], float] | None = None


def _counted_flops(spec: dict, data: dict) -> float:
    """FLOPs of one forward pass per counted item, by torch's FLOP counter (convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        spec["build_model"]().eval()(data["inputs"][:8])
    return counter.get_total_flops() / 8


def _gru_flops(_spec: dict, data: dict) -> float:
    """Bidirectional GRU 1024 -> 256 and a 512 -> 7 head, per step computed, divided over the counted items
    (padded steps are computed too): 2 FLOPs per multiply-add, 3 gates, input and hidden products."""
    per_step = 2 * 2 * 3 * (1024 * 256 + 256 * 256) + 2 * 512 * 7
    return per_step * data["mask"].numel() / float(data["mask"].sum())


WORKLOADS = {
    "mlp": Workload(MLP_SPEC, _mlp_data, 20, flops_per_item=_counted_flops),
    "gru": Workload(GRU_SPEC, _gru_data, 20),
    "resnet18": Workload(RESNET18_SPEC, _image_data, 10, repeats=2, flops_per_item=_counted_flops),
    "dialogue_gru": Workload(DIALOGUE_GRU_SPEC, _dialogue_data, 10, repeats=2, outputs="log_probs", weighted=True,
                             flops_per_item=_gru_flops),
}


def build_run(root: Path, name: str, workload: Workload) -> tuple[Path, dict]:
    """A run folder with the workload's K checkpoints, val.pt and postmortem_spec.py."""
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "postmortem_spec.py").write_text(workload.spec)
    namespace: dict = {}
    exec(workload.spec, namespace)
    torch.manual_seed(0)
    data = workload.data()
    torch.save(data, run / "val.pt")
    model = namespace["build_model"]()
    for epoch in range(1, workload.k + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        torch.save(model.state_dict(), run / "checkpoints" / f"epoch_{epoch}.pt")
    return run, namespace


def bare_loop(run: Path, batch_size: int, device: str) -> None:
    """A user's own evaluation: import the spec, load the data, then load, eval() and forward each checkpoint."""
    loader = importlib.util.spec_from_file_location("bare_spec", run / "postmortem_spec.py")
    spec = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(spec)
    inputs = torch.load(run / "val.pt", weights_only=True)["inputs"].to(device)
    for path in sorted((run / "checkpoints").iterdir()):
        model = spec.build_model()
        model.load_state_dict(torch.load(path, weights_only=True, map_location=device))
        model.to(device).eval()
        with torch.inference_mode():
            for start in range(0, len(inputs), batch_size):
                model(inputs[start:start + batch_size])
        if device == "cuda":
            torch.cuda.synchronize()


@contextlib.contextmanager
def profiled():
    """Seconds spent in each step of postmortem's evaluation (wall time of the calls, on whichever thread)."""
    from postmortem.evaluate import cache, model_runner, records, runner
    from postmortem.load import checkpoint_reader, data, spec

    seconds: dict[str, float] = {}
    targets = [(runner, "file_sha256", "hash checkpoint files"), (checkpoint_reader, "read_checkpoint", "read checkpoints"),
               (model_runner, "prepare_model", "build model + load_state_dict"),
               (model_runner, "run_checkpoint", "forward passes"),
               (records.OutputsAccumulator, "finish", "records + temperature fit"),
               (cache.EvaluationCache, "store", "write cache"), (data, "load_validation_data", "load data"),
               (spec, "resolve_callable", "import spec")]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]

    def timed(function, label):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - started
        return wrapper

    for (owner, name, label), (_, _, function) in zip(targets, originals):
        setattr(owner, name, timed(function, label))
    try:
        yield seconds
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)


def reduction_seconds(run: Path, namespace: dict, batch_size: int, repeats: int) -> float:
    """The records and temperature fit alone (reduce_outputs, numpy on the host) over the K checkpoints' outputs:
    the part of postmortem's time that a loss/accuracy loop does not have."""
    import numpy as np

    from postmortem.evaluate.records import reduce_outputs

    data = torch.load(run / "val.pt", weights_only=True)
    epochs = []
    for path in sorted((run / "checkpoints").iterdir()):
        model = namespace["build_model"]()
        model.load_state_dict(torch.load(path, weights_only=True))
        with torch.inference_mode():
            outputs = torch.cat([model.eval()(data["inputs"][i:i + batch_size])
                                 for i in range(0, len(data["inputs"]), batch_size)])
        epochs.append(outputs.reshape(-1, outputs.shape[-1]).numpy())
    labels = data["labels"].reshape(-1).numpy()
    weights = np.ones(len(labels))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for outputs in epochs:
            reduce_outputs(outputs, labels, weights)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ranks_speedup(run: Path, root: Path, repeats: int) -> None:
    """The whole report (no PDF) as one process vs torchrun with 2 gloo ranks, fresh cache each time."""
    import os
    import socket
    import subprocess

    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def timed(prefix: list[str]) -> float:
        out = root / "ranks-out"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        subprocess.run([*prefix, "-m", "postmortem", "report", str(run), "--data", str(run / "val.pt"), "--out",
                        str(out), "--no-pdf", "--quiet"], check=True, env=env)
        return time.perf_counter() - started

    def free_port() -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return str(probe.getsockname()[1])

    one = statistics.median(timed([sys.executable]) for _ in range(repeats))
    two = statistics.median(timed([str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                                   "--master-port", free_port()]) for _ in range(repeats))
    print(f"gru  whole report, 1 process {one:.2f} s vs torchrun 2 gloo ranks {two:.2f} s: speed-up {one / two:.2f}x "
          "(2 cores; each rank gets one)")
    record("torchrun_2_ranks_gru_cpu", {"one_process_s": round(one, 3), "two_ranks_s": round(two, 3),
                                        "speedup": round(one / two, 3)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3, help="paired repeats of the tiny models (real-size: 2)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--no-torchrun", action="store_true", help="skip the 2-rank torchrun comparison")
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    root = Path(tempfile.mkdtemp(prefix="pm-bench-eval-"))
    try:
        for name in args.workloads.split(","):
            workload = WORKLOADS[name]
            run, namespace = build_run(root, name, workload)
            data = torch.load(run / "val.pt", weights_only=True)
            config = ReportConfig(run=run, data=str(run / "val.pt"), out=root / f"out-{name}", quiet=True,
                                  device=args.device, batch_size=args.batch_size, outputs=workload.outputs,
                                  class_weights=_dialogue_weights(data) if workload.weighted else None)
            breakdowns: list[dict] = []

            def ours() -> None:
                shutil.rmtree(config.out_dir, ignore_errors=True)   # an empty cache: every checkpoint is evaluated
                with profiled() as seconds:
                    evaluate_run(config)
                breakdowns.append(seconds)

            repeats = workload.repeats or args.repeats
            paired = paired_ratio(ours, lambda: bare_loop(run, args.batch_size, args.device), repeats,
                                  warmup=workload.repeats is None)
            t_ours, t_bare, ratio = paired.ours_s, paired.baseline_s, paired.ratio
            flops = workload.flops_per_item(namespace, data) if workload.flops_per_item else None
            flops_text = f", {flops / 1e6:.1f} MFLOPs per item" if flops else ""
            print(f"{name:12s} K={workload.k} on {device_name}{flops_text}: postmortem {t_ours:.2f} s, bare torch "
                  f"{t_bare:.2f} s, ratio {ratio:.2f}x (target <= 1.10x; {repeats} paired run(s)); CPU seconds "
                  f"{paired.ours_cpu_s:.2f} vs {paired.baseline_cpu_s:.2f}, ratio {paired.cpu_ratio:.2f}x")
            profile = {label: round(statistics.median(b.get(label, 0.0) for b in breakdowns), 3)
                       for label in breakdowns[0]}
            print("             where postmortem's time went: " + ", ".join(f"{k} {v:.2f} s" for k, v in profile.items()))
            entry = {"postmortem_s": round(t_ours, 3), "baseline_s": round(t_bare, 3), "ratio": round(ratio, 3),
                     "postmortem_cpu_s": round(paired.ours_cpu_s, 3), "baseline_cpu_s": round(paired.baseline_cpu_s, 3),
                     "cpu_ratio": round(paired.cpu_ratio, 3), "device": device_name, "k": workload.k,
                     "paired_runs": repeats, "profile_s": profile}
            if flops:
                entry["mflops_per_item"] = round(flops / 1e6, 2)
            if args.device == "cpu":
                reducing = reduction_seconds(run, namespace, args.batch_size, max(repeats, 3))
                entry["records_and_temperature_s"] = round(reducing, 3)
                print(f"             the per-item records and temperature fit alone take {reducing:.2f} s "
                      f"({reducing / t_bare:.2f}x the bare loop) on one thread")
            if name == "gru" and args.device == "cpu" and not args.no_torchrun:
                ranks_speedup(run, root, args.repeats)
            record(f"eval_overhead_{name}_{args.device}", entry)
            shutil.rmtree(run, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
