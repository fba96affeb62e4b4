"""A progress bar per checkpoint on a terminal, and --quiet silences it (a pseudo-terminal stands in)."""
from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import sys
import termios
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run_on_terminal(*args: str) -> str:
    pid, fd = pty.fork()
    if pid == 0:   # the child: a 120-column terminal, as a person's shell would give; it never returns
        try:
            fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            os.environ["PYTHONPATH"] = str(ROOT)
            os.execv(sys.executable, [sys.executable, "-m", "postmortem", "report", *args])
        finally:
            os._exit(127)
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, output.decode(errors="replace")[-2000:]
    return output.decode(errors="replace").replace("\r", "\n")


def test_progress_bar_counts_checkpoints_on_a_terminal(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ROOT / "sample_runs" / "digits_mlp", run, ignore=shutil.ignore_patterns("postmortem-report"))
    shown = _run_on_terminal(str(run), "--out", str(tmp_path / "a"), "--no-pdf")
    assert "evaluating:" in shown and "/20 [" in shown and "ckpt/s" in shown
    assert "postmortem: 20 checkpoints; wrote" in shown
    assert "postmortem: drawing figures ..." in shown
    assert "  finding: " in shown                                     # the answer, in the terminal too
    quiet = _run_on_terminal(str(run), "--out", str(tmp_path / "b"), "--no-pdf", "--quiet")
    assert "evaluating" not in quiet and "wrote" not in quiet and "drawing" not in quiet
