"""Issue 17, item 4: every file of a checkpoint folder that is not read is listed with what it is, told from its
first bytes (a plain pickle is never unpickled), and a name like epoch=3-step=150.ckpt in a mixed series numbers
epoch 3, not 150."""
from __future__ import annotations

import html.parser
import os
import pickle

import numpy as np
import pytest
import torch

from _fixtures_inputs import make_run, reference_loss, report, trained_models, validation_tensors
from postmortem.load.discovery import name_number
from postmortem.load.torch_files import PLAIN_PICKLE


class RunsCodeWhenUnpickled:
    """Unpickling this makes the folder `target`: proof that a file was unpickled."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


class _Sections(html.parser.HTMLParser):
    """The text of each <section id=...> of report.html."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self._current: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self._current.append(dict(attrs).get("id", ""))
            self.sections.setdefault(self._current[-1], "")

    def handle_endtag(self, tag):
        if tag == "section" and self._current:
            self._current.pop()

    def handle_data(self, data):
        if self._current:
            self.sections[self._current[-1]] += data


def test_files_not_read_are_listed_with_what_they_are_and_no_pickle_runs(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=4)
    folder = run / "checkpoints"
    marker = tmp_path / "unpickled"
    (folder / "epoch_3.pt").unlink()
    (folder / "epoch_3.pkl").write_bytes(pickle.dumps({"state_dict": RunsCodeWhenUnpickled(str(marker))}))
    (folder / "notes.txt").write_text("epoch 3 saved with pickle.dump by mistake\n")
    (folder / "args.yaml").write_text("lr: 0.5\nepochs: 4\n")
    np.save(folder / "logits.npy", np.zeros((2, 3), np.float32))
    (folder / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(56))
    (folder / "optimizer.pt").write_bytes(b"")          # training state beside the model, by name
    (folder / "empty.pkl").write_bytes(b"")
    (folder / "blob.dat").write_bytes(bytes(range(200, 256)))
    (folder / ".hidden").write_text("dot files are left alone")

    code, err, metrics = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 0, err
    assert not marker.exists()
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 4]
    assert metrics["skipped"] == []
    assert metrics["not_read"] == [
        {"file": "args.yaml", "reason": "a text file, not a checkpoint"},
        {"file": "blob.dat", "reason": "an unknown format (it starts with b'\\xc8\\xc9\\xca\\xcb\\xcc\\xcd\\xce\\xcf')"},
        {"file": "empty.pkl", "reason": "empty (0 bytes)"},
        {"file": "epoch_3.pkl", "reason": PLAIN_PICKLE},
        {"file": "logits.npy", "reason": "numpy arrays, not a checkpoint (saved per-epoch outputs are read with "
                                         "--predictions DIR)"},
        {"file": "model.h5", "reason": "an HDF5 file (Keras, h5py), not a torch checkpoint"},
        {"file": "notes.txt", "reason": "a text file, not a checkpoint"},
        {"file": "optimizer.pt", "reason": "training state beside the model (optimizer, scheduler, RNG or arguments), "
                                           "not model weights"},
    ]
    assert PLAIN_PICKLE.startswith("a plain pickle (pickle.dump, not torch.save): not read")

    page = _Sections()
    page.feed((tmp_path / "report" / "report.html").read_text())
    assert "Files not read" in page.sections["unread"]
    for entry in metrics["not_read"]:
        assert f"{entry['file']}: {entry['reason']}" in page.sections["unread"]
    summary = (tmp_path / "report" / "report.md").read_text()
    assert ("files not read (what each is: report.html): args.yaml, blob.dat, empty.pkl, epoch\\_3.pkl, logits.npy, "
            "model.h5, notes.txt, optimizer.pt.") in summary


def test_the_run_folder_itself_lists_only_what_postmortem_does_not_read(tmp_path, capsys):
    """Checkpoints right in RUN: the spec, postmortem.toml, the data and the training log are read (not listed)."""
    run, _ = make_run(tmp_path, n_epochs=2)
    for path in (run / "checkpoints").iterdir():
        path.rename(run / path.name)
    (run / "checkpoints").rmdir()
    (run / "postmortem.toml").write_text('data = "val.pt"\n')
    (run / "log.csv").write_text("epoch,val_loss\n1,1.0\n2,0.9\n")
    (run / "README.md").write_text("my run\n")
    code, err, metrics = report(run, "--train-log", str(run / "log.csv"), capsys=capsys)
    assert code == 0, err
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["not_read"] == [{"file": "README.md", "reason": "a text file, not a checkpoint"}]


def test_a_folder_of_checkpoints_only_has_no_not_read_list(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=2)
    code, err, metrics = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 0, err
    assert "not_read" not in metrics


def test_a_plain_pickle_named_explicitly_is_skipped_with_what_it_is_never_unpickled(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=2)
    marker = tmp_path / "unpickled"
    plain = run / "checkpoints" / "epoch_3.pkl"
    plain.write_bytes(pickle.dumps(RunsCodeWhenUnpickled(str(marker)), protocol=4))
    code, err, metrics = report(run, "--data", str(run / "val.pt"), "--checkpoints",
                                str(run / "checkpoints" / "*"), capsys=capsys)
    assert code == 0, err
    assert not marker.exists()
    assert [s["error"] for s in metrics["skipped"]] == [f"{plain}: {PLAIN_PICKLE}"]


def test_legacy_torch_save_in_any_pickle_protocol_is_torch_data(tmp_path, capsys):
    """torch.save without the zip format, pickle protocol 4: found under a .pkl name and read."""
    run, models = make_run(tmp_path, n_epochs=2)
    torch.save(models[1].state_dict(), run / "checkpoints" / "epoch_2.pkl", _use_new_zipfile_serialization=False,
               pickle_protocol=4)
    (run / "checkpoints" / "epoch_2.pt").unlink()
    code, err, metrics = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 0, err
    assert [(e["checkpoint"], e["epoch"]) for e in metrics["epochs"]] == [("epoch_1.pt", 1), ("epoch_2.pkl", 2)]
    x, y = validation_tensors()
    assert metrics["epochs"][1]["loss"] == pytest.approx(reference_loss(models[1], x, y), rel=1e-9)


@pytest.mark.parametrize("name, number", [
    ("epoch=3-step=150.ckpt", 3), ("epoch_10.pt", 10), ("EPOCH-7-val_loss=0.31.ckpt", 7), ("run3_epoch12", 12),
    ("checkpoint-500", 500), ("checkpoint-3.pth.tar", 3), ("step=150.ckpt", 150), ("last.ckpt", None),
])
def test_the_number_a_name_orders_by(name, number):
    assert name_number(name) == number


def test_a_mixed_series_numbers_lightning_names_by_their_epoch(tmp_path, capsys):
    """Lightning's epoch=N-step=M.ckpt (which store an epoch) beside bare state_dicts epoch_N.pt (which do not):
    one key for the series, the name; epochs 1, 2, 3 in that order, not 2, 150, 450."""
    run, _ = make_run(tmp_path, n_epochs=1)
    (run / "checkpoints" / "epoch_1.pt").unlink()
    models = trained_models(3)
    folder = run / "checkpoints"
    for epoch, model in enumerate(models, start=1):
        if epoch == 2:
            torch.save(model.state_dict(), folder / "epoch_2.pt")
        else:
            torch.save({"epoch": epoch, "global_step": 150 * epoch,
                        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
                       folder / f"epoch={epoch}-step={150 * epoch}.ckpt")
    code, err, metrics = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 0, err
    assert [(e["checkpoint"], e["epoch"]) for e in metrics["epochs"]] == [
        ("epoch=1-step=150.ckpt", 1), ("epoch_2.pt", 2), ("epoch=3-step=450.ckpt", 3)]
    x, y = validation_tensors()
    for entry, model in zip(metrics["epochs"], models):
        assert entry["loss"] == pytest.approx(reference_loss(model, x, y), rel=1e-9)
