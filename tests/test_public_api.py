"""The public API is pinned: a change to it is a deliberate, visible change to this list."""
import postmortem
import postmortem.errors


def test_exported_names():
    assert postmortem.__all__ == [
        "__version__", "ReportConfig", "build_config", "read_config_file", "write_report", "ReportResult",
        "report", "Report", "save_predictions", "PostmortemError", "InputError", "ConfigError", "CheckpointError", "UnsafeCheckpointError", "DataError",
        "NonFiniteOutputsError", "UserCodeError", "CacheError",
    ]
    for name in postmortem.__all__:
        assert hasattr(postmortem, name), name


def test_every_error_is_a_postmortem_error_and_input_errors_exit_2():
    from postmortem.cli import EXIT_INPUT, main

    for name in postmortem.errors.__all__:
        assert issubclass(getattr(postmortem.errors, name), postmortem.PostmortemError)
    assert main(["report", "/nonexistent/run"]) == EXIT_INPUT == 2


def test_write_report_from_python(tmp_path):
    import shutil
    from pathlib import Path

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).resolve().parent.parent / "sample_runs" / "digits_mlp", run,
                    ignore=shutil.ignore_patterns("postmortem-report"))
    config = postmortem.build_config(run, postmortem.read_config_file(run), {"no_pdf": True, "quiet": True})
    result = postmortem.write_report(config)
    assert {p.name for p in result.files} == {"metrics.json", "report.html", "report.md"}
    assert result.n_epochs == 20 and result.n_skipped == 0
    assert set(result.stage_seconds) >= {"evaluate", "analyze", "diagnose", "figures", "html", "write"}
