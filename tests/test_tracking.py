"""Issue 17, item 3: `--log-to mlflow|wandb` attaches the report to a tracker's run and tags it with the verdict.

Both trackers are the real packages of the test extra, kept offline: MLflow writes a local file store under
tmp_path (MLFLOW_TRACKING_URI, never ~/mlruns) and is read back with its own MlflowClient; W&B runs with
WANDB_MODE=offline and every folder of it under tmp_path, and is read back from the offline run's folder (its files/
and the records of its .wandb log). The reports reuse one output folder, so only the first evaluates the checkpoints.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest

import postmortem
from postmortem.cli import EXIT_INPUT, main
from postmortem.tracking import TAG_PRIMARY_CAUSE, TAG_STATUS

SAMPLE = Path(__file__).resolve().parent.parent / "sample_runs" / "digits_mlp"
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
HAS_WANDB = importlib.util.find_spec("wandb") is not None


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("tracking") / "digits_mlp"
    shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("postmortem-report"))
    return run


def _report(run: Path, *options: str, capsys) -> tuple[int, str, dict]:
    code = main(["report", str(run), *options])
    err = capsys.readouterr().err
    out = run / "postmortem-report"
    metrics = json.loads((out / "metrics.json").read_text()) if code == 0 else {}
    return code, err, metrics


# ----------------------------------------------------------------------------- MLflow
@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A file store under tmp_path, through the environment as a user would set it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")     # MLflow 3 keeps the file store behind this switch
    import mlflow

    assert mlflow.get_tracking_uri() == (tmp_path / "mlruns").as_uri()
    return mlflow.MlflowClient()


def _artifact_bytes(client, run_id: str, tmp_path: Path) -> dict[str, bytes]:
    listed = [f.path for f in client.list_artifacts(run_id, "postmortem")]
    local = Path(client.download_artifacts(run_id, "postmortem", str(tmp_path / f"download-{run_id}")))
    return {path: (local / Path(path).name).read_bytes() for path in listed}


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow-skinny is in the test extra; not installed here")
def test_mlflow_new_run_gets_the_files_and_the_verdict_tags(sample_run, mlflow_store, tmp_path, capsys):
    code, err, metrics = _report(sample_run, "--log-to", "mlflow", capsys=capsys)
    assert code == 0, err
    (run,) = mlflow_store.search_runs(["0"])                          # the default experiment, one new run
    assert run.info.run_name == "digits_mlp" and run.info.status == "FINISHED"
    out = sample_run / "postmortem-report"
    assert _artifact_bytes(mlflow_store, run.info.run_id, tmp_path) == {
        f"postmortem/{name}": (out / name).read_bytes() for name in ("metrics.json", "report.html", "report.pdf")}
    tags = run.data.tags
    assert tags[TAG_PRIMARY_CAUSE] == metrics["verdict"]["primary_cause"] == "calibration"
    assert tags[TAG_STATUS] == metrics["verdict"]["status"]
    assert f"to mlflow run {run.info.run_id}" in err and f"{TAG_PRIMARY_CAUSE}=calibration" in err


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow-skinny is in the test extra; not installed here")
def test_mlflow_notebook_logs_to_the_active_run_and_leaves_it_running(sample_run, mlflow_store, tmp_path):
    import mlflow

    with mlflow.start_run(run_name="training") as active:
        result = postmortem.report(sample_run, log_to="mlflow", quiet=True)
        assert mlflow.active_run().info.run_id == active.info.run_id
    assert result.files[0].parent == sample_run / "postmortem-report"
    assert [r.info.run_id for r in mlflow_store.search_runs(["0"])] == [active.info.run_id]
    assert sorted(_artifact_bytes(mlflow_store, active.info.run_id, tmp_path)) == \
        ["postmortem/metrics.json", "postmortem/report.html"]          # no PDF in a notebook unless asked
    assert mlflow_store.get_run(active.info.run_id).data.tags[TAG_PRIMARY_CAUSE] == result.verdict["primary_cause"]


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow-skinny is in the test extra; not installed here")
def test_mlflow_log_run_finds_a_run_by_id_or_by_name_else_makes_it(sample_run, mlflow_store, tmp_path, capsys):
    import mlflow

    with mlflow.start_run(run_name="epoch-sweep") as first:
        pass
    with mlflow.start_run(run_name="epoch-sweep") as newest:
        pass
    for log_run, expected in (("epoch-sweep", newest.info.run_id), (first.info.run_id, first.info.run_id)):
        code, err, _ = _report(sample_run, "--no-pdf", "--log-to", "mlflow", "--log-run", log_run, capsys=capsys)
        assert code == 0, err
        assert sorted(_artifact_bytes(mlflow_store, expected, tmp_path)) == \
            ["postmortem/metrics.json", "postmortem/report.html"]
    code, err, _ = _report(sample_run, "--no-pdf", "--log-to", "mlflow", "--log-run", "a new name", capsys=capsys)
    assert code == 0, err
    made = mlflow_store.search_runs(["0"], filter_string="attributes.run_name = 'a new name'")
    assert len(made) == 1 and len(mlflow_store.search_runs(["0"])) == 3
    assert made[0].data.tags[TAG_PRIMARY_CAUSE] == "calibration"


# ----------------------------------------------------------------------------- W&B
@pytest.fixture
def wandb_offline(tmp_path, monkeypatch) -> Path:
    """W&B offline, every folder it writes (runs, settings, caches) under tmp_path: no login, no network."""
    root = tmp_path / "wandb-home"
    for variable in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        folder = root / variable.lower()
        folder.mkdir(parents=True)
        monkeypatch.setenv(variable, str(folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "postmortem-tests")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return root / "wandb_dir" / "wandb"


def _wandb_records(path: Path):
    """The protobuf Records of a .wandb file: a 7-byte header (':W&B', magic, version), then a LevelDB log of
    32 KiB blocks whose records (4-byte checksum, 2-byte length, 1-byte type: full, first, middle, last) carry them."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:                  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        length, kind = struct.unpack_from("<HB", data, position + 4)
        if length == 0 and kind == 0:
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):                                # full, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is in the test extra; not installed here")
def test_wandb_offline_run_gets_the_files_and_the_verdict(sample_run, wandb_offline, capsys):
    code, err, metrics = _report(sample_run, "--no-pdf", "--log-to", "wandb", capsys=capsys)
    assert code == 0, err
    (folder,) = wandb_offline.glob("offline-run-*")
    out = sample_run / "postmortem-report"
    files = folder / "files" / "postmortem"
    assert {p.name: p.read_bytes() for p in files.iterdir()} == \
        {name: (out / name).read_bytes() for name in ("metrics.json", "report.html")}
    records = list(_wandb_records(next(folder.glob("run-*.wandb"))))
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs and runs[-1].display_name == "digits_mlp" and runs[-1].project == "postmortem-tests"
    assert f"postmortem:{metrics['verdict']['primary_cause']}" in runs[-1].tags
    summary = {item.key: json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "summary"
               for item in r.summary.update}
    assert summary[TAG_PRIMARY_CAUSE] == metrics["verdict"]["primary_cause"] == "calibration"
    assert summary[TAG_STATUS] == metrics["verdict"]["status"]
    saved = {f.path for r in records if r.WhichOneof("record_type") == "files" for f in r.files.files}
    assert {"postmortem/metrics.json", "postmortem/report.html"} <= saved
    assert f"to wandb run {runs[-1].run_id}" in err


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("tracker, package", [("mlflow", "mlflow-skinny"), ("wandb", "wandb")])
def test_a_missing_tracker_is_one_line_before_anything_is_evaluated(sample_run, tmp_path, monkeypatch, capsys,
                                                                   tracker, package):
    monkeypatch.setitem(sys.modules, tracker, None)     # the import system's own "not installed"
    out = tmp_path / "never-written"
    code = main(["report", str(sample_run), "--out", str(out), "--log-to", tracker])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT
    assert err.count("\n") == 1 and err.startswith(f"postmortem: error: option 'log-to': {tracker} is not installed here")
    assert err.rstrip().endswith(f"pip install {package} (or postmortem[tracking])")
    assert not out.exists()


@pytest.mark.parametrize("options, message", [
    (["--log-run", "abc"], "option 'log-run': names the tracker's run; give the tracker too, --log-to mlflow|wandb"),
])
def test_log_options_are_checked(sample_run, capsys, options, message):
    assert main(["report", str(sample_run), *options]) == EXIT_INPUT
    assert capsys.readouterr().err == f"postmortem: error: {message}\n"


def test_an_unknown_tracker_in_postmortem_toml_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("postmortem-report"))
    with (run / "postmortem.toml").open("a") as toml:
        toml.write('log-to = "comet"\n')
    assert main(["report", str(run)]) == EXIT_INPUT
    assert capsys.readouterr().err == \
        "postmortem: error: option 'log-to': expected one of mlflow, wandb, got 'comet'\n"

