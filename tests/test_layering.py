"""One direction of flow: heavy libraries stay in their stage (checked on the source, and at run time)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np

PACKAGE = Path(__file__).resolve().parent.parent / "postmortem"
# library -> the only places allowed to import it
ALLOWED = {
    "torch": ("load/", "evaluate/"),
    "matplotlib": (),            # nowhere: figures are drawn as SVG (render/svg.py); its import alone cost 0.3 s
    "jinja2": ("render/html.py",),
    "weasyprint": ("render/pdf.py",),
    # The training libraries: model building from a checkpoint's config, and the callbacks, imported on first use.
    "transformers": ("load/auto_model.py", "callbacks/huggingface.py"),
    "pytorch_lightning": ("callbacks/lightning.py",),
    "lightning": ("callbacks/lightning.py",),
}
STAGES = ("load", "evaluate", "analyze", "diagnose", "render")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            prefix = "." * node.level + (node.module or "")
            names.add(prefix)
    return names


def test_heavy_libraries_are_imported_only_in_their_stage():
    for path in PACKAGE.rglob("*.py"):
        where = path.relative_to(PACKAGE).as_posix()
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ALLOWED:
                assert where.startswith(ALLOWED[top]), f"{where} imports {name}"


def test_stages_only_import_earlier_stages():
    order = {stage: i for i, stage in enumerate(STAGES)}
    for stage in STAGES:
        for path in (PACKAGE / stage).glob("*.py"):
            for name in _imports(path):
                if name.startswith(".."):
                    target = name.lstrip(".").split(".")[0]
                    if target in order:
                        assert order[target] <= order[stage], f"{stage}/{path.name} imports {name}"


def test_predictions_mode_imports_neither_torch_nor_pandas_nor_matplotlib(tmp_path):
    preds = tmp_path / "preds"
    preds.mkdir()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50)
    for epoch in (1, 2, 3):
        np.savez(preds / f"epoch_{epoch}.npz", outputs=rng.normal(size=(50, 3)) * epoch, labels=labels)
    code = ("import sys; from postmortem.cli import main; "
            f"rc = main(['report', {str(tmp_path)!r}, '--predictions', {str(preds)!r}, '--no-pdf', '--quiet']); "
            "print(rc, 'torch' in sys.modules, 'pandas' in sys.modules, 'matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"})
    assert result.stdout.split() == ["0", "False", "False", "False"], result.stderr[-2000:]


# What each loading module does (issue 11 split them by job); evaluate/ only evaluates.
LOAD_MODULES = {"discovery", "torch_files", "inert_pickle", "checkpoint_contents", "checkpoint_reader",
                "state_dict_fit", "auto_model", "predictions", "data", "spec", "train_log", "training_setup"}


def test_loading_lives_in_load_and_evaluate_only_evaluates():
    assert {p.stem for p in (PACKAGE / "load").glob("*.py")} - {"__init__"} == LOAD_MODULES
    for path in (PACKAGE / "evaluate").glob("*.py"):
        source = path.read_text()
        for loading_call in ("torch.load(", "safe_open(", "pickle.", "glob.glob(", "read_train_log(", "ast.parse("):
            assert loading_call not in source, f"evaluate/{path.name} calls {loading_call}"
