"""Evaluation overhead: postmortem's evaluation of K checkpoints vs a bare torch loop over the same work.

    .venv/bin/python benchmarks/bench_eval_overhead.py [--device cpu|cuda] [--k 20] [--repeats 3]

The bare loop is torch.load(weights_only=True) + load_state_dict + eval() + forward passes over the same
batches, batch size and threads. postmortem's side is evaluate_run() with an empty cache: hashing, safe
loading, forward passes, the float64 reduction to per-item records and temperature fitting. Target <= 1.10x.
On a CPU it also prints how long the records and temperature fit alone take over the same outputs.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

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


def build_run(root: Path, kind: str, k: int) -> tuple[Path, list[dict], callable]:
    """A run folder with K checkpoints and a .pt validation set; returns it, the batches and build_model."""
    run = root / kind
    (run / "checkpoints").mkdir(parents=True)
    spec = MLP_SPEC if kind == "mlp" else GRU_SPEC
    (run / "postmortem_spec.py").write_text(spec)
    namespace: dict = {}
    exec(spec, namespace)
    torch.manual_seed(0)
    if kind == "mlp":
        data = {"inputs": torch.randn(20000, 128), "labels": torch.randint(0, 20, (20000,))}
    else:
        data = {"inputs": torch.randint(0, 1000, (1000, 32)), "labels": torch.randint(0, 12, (1000, 32))}
    torch.save(data, run / "val.pt")
    model = namespace["build_model"]()
    for epoch in range(1, k + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        torch.save(model.state_dict(), run / "checkpoints" / f"epoch_{epoch}.pt")
    return run, data, namespace["build_model"]


def bare_loop(run: Path, data: dict, build_model, batch_size: int, device: str) -> None:
    inputs = data["inputs"].to(device)
    for path in sorted((run / "checkpoints").iterdir()):
        model = build_model()
        model.load_state_dict(torch.load(path, weights_only=True, map_location=device))
        model.to(device).eval()
        with torch.inference_mode():
            for start in range(0, len(inputs), batch_size):
                model(inputs[start:start + batch_size])
        if device == "cuda":
            torch.cuda.synchronize()


def reduction_seconds(run: Path, data: dict, build_model, batch_size: int, repeats: int) -> float:
    """The records and temperature fit alone (reduce_outputs, numpy on the host) over the K checkpoints' outputs:
    the part of postmortem's time that a loss/accuracy loop does not have."""
    import statistics
    import time

    import numpy as np

    from postmortem.evaluate.records import reduce_outputs

    epochs = []
    for path in sorted((run / "checkpoints").iterdir()):
        model = build_model()
        model.load_state_dict(torch.load(path, weights_only=True))
        with torch.inference_mode():
            outputs = torch.cat([model.eval()(data["inputs"][i:i + batch_size]) for i in range(0, len(data["inputs"]), batch_size)])
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
    import statistics
    import subprocess
    import time

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
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    root = Path(tempfile.mkdtemp(prefix="pm-bench-eval-"))
    try:
        for kind in ("mlp", "gru"):
            run, data, build_model = build_run(root, kind, args.k)
            out = root / f"out-{kind}"

            def ours() -> None:
                shutil.rmtree(out, ignore_errors=True)   # an empty cache: every checkpoint is evaluated
                evaluate_run(ReportConfig(run=run, data=str(run / "val.pt"), out=out, quiet=True,
                                          device=args.device, batch_size=args.batch_size))

            t_ours, t_bare, ratio = paired_ratio(ours, lambda: bare_loop(run, data, build_model, args.batch_size,
                                                                        args.device), args.repeats)
            print(f"{kind:4s} K={args.k} on {device_name}: postmortem {t_ours:.2f} s, bare torch {t_bare:.2f} s, "
                  f"ratio {ratio:.2f}x (target <= 1.10x)")
            entry = {"postmortem_s": round(t_ours, 3), "baseline_s": round(t_bare, 3), "ratio": round(ratio, 3),
                     "device": device_name, "k": args.k}
            if args.device == "cpu":
                reducing = reduction_seconds(run, data, build_model, args.batch_size, args.repeats)
                entry["records_and_temperature_s"] = round(reducing, 3)
                print(f"     of which the per-item records and temperature fit alone take {reducing:.2f} s "
                      f"({reducing / t_bare:.2f}x the bare loop) on one thread")
            if kind == "gru" and args.device == "cpu":
                ranks_speedup(run, root, args.repeats)
            record(f"eval_overhead_{kind}_{args.device}", entry)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
