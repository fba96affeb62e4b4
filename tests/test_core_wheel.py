"""Issue 2, packaging: the wheel carries the templates (as postmortem/templates) and, installed into a
fresh virtual environment, renders a report from a directory outside the repository.

The fresh venv gets its third-party dependencies (torch, weasyprint, ...) through a .pth file that
points at this interpreter's site-packages (no multi-GB download); postmortem itself is installed from
the wheel with `pip install --no-deps --no-index`, and the test proves that the import comes from there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from _core_runs import PROJECT, assert_metrics_match, assert_report_html, build_mlp_run

SUBPROCESS_REL = 1e-7


def _run(cmd, cwd, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_wheel_installs_and_renders_outside_the_repo(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, PROJECT], cwd=tmp_path, timeout=400)
    wheels = list(dist.glob("postmortem-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as archive:
        names = set(archive.namelist())
        template_names = {n for n in names if n.startswith("postmortem/templates/")}
        assert "postmortem/templates/report.html.j2" in names and "postmortem/templates/report.css" in names, \
            sorted(template_names)
        for name in ("postmortem/__init__.py", "postmortem/__main__.py", "postmortem/cli.py"):
            assert name in names
        assert not [n for n in names if "/tests/" in n or n.startswith("tests/")]
        assert any(n.endswith("entry_points.txt") and b"postmortem.cli:main" in archive.read(n) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    (site / "_core_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir", wheels[0]], cwd=tmp_path)

    where = _run([python, "-c", "import postmortem, pathlib; print(pathlib.Path(postmortem.__file__).resolve())"],
                 cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(venv.resolve()), f"postmortem imported from {where}, not the fresh venv"
    assert not Path(where).is_relative_to(PROJECT)
    assert (Path(where).parent / "templates" / "report.html.j2").is_file()

    built = build_mlp_run(tmp_path, "installed_run", epochs=3, steps=2)
    out = tmp_path / "report"
    script = venv / "bin" / "postmortem"
    assert script.is_file(), "the console script `postmortem` was not installed"
    _run([script, "report", built.path, "--out", out, "--no-pdf", *built.options], cwd=tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert_metrics_match(metrics, built, rel=SUBPROCESS_REL)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert_report_html(html, metrics, built)
    css = (Path(where).parent / "templates" / "report.css").read_text(encoding="utf-8")
    first_rule = next(line for line in css.splitlines() if "{" in line and '"' not in line)
    assert first_rule.strip() in html, "the packaged CSS is not inlined into the report"
