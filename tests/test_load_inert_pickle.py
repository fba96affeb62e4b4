"""Inert loading: a checkpoint's pickle never imports or calls anything outside the allowlist.

Every payload of the hostile family is first shown to be live (the standard unpickler runs it and its
marker file appears); then, hidden in a real torch.save checkpoint (zip and legacy formats), postmortem
either reads the checkpoint with the payload as an inert placeholder or stops with one line naming the
file, and the marker never appears. A property test over generated opcode streams records every import
and every find_class answer while the inert unpickler runs.
"""
from __future__ import annotations

import builtins
import copyreg
import importlib.abc
import pickle
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import _pickle_payloads as hostile
from _fixtures_inputs import Net, make_run, reference_loss, report, validation_tensors
from postmortem.errors import CheckpointError, UnsafeCheckpointError
from postmortem.load.checkpoint_reader import read_checkpoint
from postmortem.load.discovery import CheckpointFile
from postmortem.load.inert_pickle import (InertObject, InertUnpickler, RefusedOpcode, allowed_globals, holds_placeholders,
                                          inert_loads)
from postmortem.load.torch_files import load_torch_file

WRAPPERS = {"zip": hostile.in_zip_checkpoint, "legacy": hostile.in_legacy_checkpoint}


def _marker(tmp_path: Path, payload: hostile.Payload) -> Path:
    return tmp_path / f"ran-{abs(hash(payload.name))}"


@pytest.mark.parametrize("payload", hostile.PAYLOADS, ids=lambda p: p.name)
def test_each_payload_is_live_for_the_standard_unpickler(tmp_path, payload):
    """The control: without postmortem, each payload does run code."""
    marker = _marker(tmp_path, payload)
    if payload.extension:
        copyreg.add_extension(*payload.extension)
    try:
        try:
            pickle.loads(hostile.whole(payload.build(str(marker))))
        except Exception:   # some raise after their code ran (torch's rebuild gets os.system's return value)
            pass
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:   # a shell command writes it
            time.sleep(0.01)
    finally:
        if payload.extension:
            copyreg.remove_extension(*payload.extension)
    assert marker.exists(), payload.name


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("payload", hostile.PAYLOADS, ids=lambda p: p.name)
def test_payloads_in_a_checkpoint_stay_inert(tmp_path, payload, wrapper):
    """Read inertly (the payload a placeholder, the weights exact) or refused in one line; the marker never appears."""
    marker = _marker(tmp_path, payload)
    model = Net()
    path = WRAPPERS[wrapper](tmp_path / "epoch_1.pt", model.state_dict(), payload.build(str(marker)))
    if payload.extension:
        copyreg.add_extension(*payload.extension)     # registered, as it would be in a process that uses it
    try:
        try:
            loaded = read_checkpoint(CheckpointFile(path, path))
        except UnsafeCheckpointError as exc:
            message = str(exc)
            assert message.startswith(f"{path}: not readable without running code: its pickle ")
            assert "\n" not in message and "--trust-checkpoints" in message
        else:
            assert loaded.metadata == {"epoch": 1}
            assert set(loaded.state_dict) == set(model.state_dict())
            assert all(torch.equal(loaded.state_dict[k], v) for k, v in model.state_dict().items())
    finally:
        if payload.extension:
            copyreg.remove_extension(*payload.extension)
    time.sleep(0.05)   # give a shell command, had one been started, time to write
    assert not marker.exists(), payload.name


def test_the_placeholder_records_what_the_pickle_asked_for(tmp_path):
    marker = tmp_path / "ran"
    fragment = hostile.call(hostile.G("os", "system"), hostile.S(f"touch {marker}"))
    path = hostile.in_zip_checkpoint(tmp_path / "x.pt", Net().state_dict(), fragment)
    extra = load_torch_file(path)["extra"]
    assert isinstance(extra, InertObject)
    assert (extra.module, extra.name, extra.args) == ("os", "system", (f"touch {marker}",))
    assert not marker.exists()


def test_a_checkpoint_of_payloads_only_is_skipped_in_one_line_and_the_report_is_still_written(tmp_path, capsys):
    marker = tmp_path / "ran"
    run, models = make_run(tmp_path, n_epochs=2)
    hostile.zip_with_pickle(run / "checkpoints" / "epoch_3.pt",
                            hostile.whole(hostile.call(hostile.G("os", "system"), hostile.S(f"touch {marker}"))))
    code, err, metrics = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 0, err
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    x, y = validation_tensors()
    assert [e["loss"] for e in metrics["epochs"]] == pytest.approx([reference_loss(m, x, y) for m in models], rel=1e-9)
    [skipped] = metrics["skipped"]
    assert skipped["error"] == f"{run / 'checkpoints' / 'epoch_3.pt'}: holds a pickled os.system, not a state_dict or a dict holding one"
    assert not marker.exists()


def test_weights_only_loading_stays_the_first_try(tmp_path, monkeypatch):
    """A plain state_dict never reaches the inert unpickler; one holding an argparse.Namespace does."""
    import argparse

    calls = []
    original = InertUnpickler.find_class
    monkeypatch.setattr(InertUnpickler, "find_class", lambda self, m, n: calls.append((m, n)) or original(self, m, n))
    plain, with_args = tmp_path / "plain.pt", tmp_path / "args.pt"
    torch.save({"epoch": 1, "state_dict": Net().state_dict()}, plain)
    torch.save({"epoch": 1, "state_dict": Net().state_dict(), "args": argparse.Namespace(lr=0.1)}, with_args)
    read_checkpoint(CheckpointFile(plain, plain))
    assert calls == []
    read_checkpoint(CheckpointFile(with_args, with_args))
    assert ("argparse", "Namespace") in calls


# ----------------------------------------------------------------------------- property: generated opcode streams
TRAP_PREFIX = "pm_trap_"
DANGEROUS = [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
             ("__builtin__", "eval"), ("subprocess", "check_call"), ("builtins", "__import__"),
             ("builtins", "getattr"), ("importlib", "import_module"), ("functools", "partial"),
             ("copyreg", "_reconstructor"), ("pickle", "loads"), ("torch", "load"), ("torch._C", "_jit_pass_inline"),
             ("numpy.testing._private.utils", "runstring"), ("_pickle_payloads", "WritesOnSetstate"),
             ("_pickle_payloads", "WritesOnNew"), ("_pickle_payloads", "WritesOnInit")]
ALLOWED_NAMES = sorted(allowed_globals())[:12] + [("collections", "OrderedDict"), ("numpy", "dtype"),
                                                   ("_codecs", "encode"), ("torch._tensor", "_rebuild_from_type_v2")]


def _global_names():
    trap = st.builds(lambda a, b: (f"{TRAP_PREFIX}{a}", f"f{b}"), st.integers(0, 99), st.integers(0, 9))
    dotted = st.builds(lambda a: (f"{TRAP_PREFIX}pkg.sub{a}", "thing"), st.integers(0, 9))
    return st.one_of(st.sampled_from(DANGEROUS), st.sampled_from(ALLOWED_NAMES), trap, dotted)


def _strings(marker: str):
    return st.sampled_from([f"touch {marker}", f"open({marker!r}, 'w').write('x')", "os", "system", TRAP_PREFIX + "m",
                            "latin1", TRAP_PREFIX + "codec", marker, "f8", "a"])


def _opcodes(marker: str):
    """One unit of a pickle program: a push, a call-like opcode, or stack/memo manipulation."""
    text = _strings(marker)
    g = _global_names()
    return st.one_of(
        g.map(lambda mn: hostile.G(*mn)),
        g.map(lambda mn: hostile.S(mn[0]) + hostile.S(mn[1]) + b"\x93"),            # STACK_GLOBAL
        g.map(lambda mn: b"i" + f"{mn[0]}\n{mn[1]}\n".encode()),                     # INST (after a MARK)
        text.map(hostile.S),
        st.integers(0, 255).map(lambda n: b"K" + bytes([n])),                        # BININT1
        st.integers(1, 255).map(lambda n: b"\x82" + bytes([n])),                     # EXT1
        st.integers(0, 3).map(lambda n: b"q" + bytes([n])),                          # BINPUT
        st.integers(0, 3).map(lambda n: b"h" + bytes([n])),                          # BINGET
        st.sampled_from([b"(", b"t", b")", b"\x85", b"\x86", b"\x87", b"R", b"b", b"\x81", b"\x92", b"o", b"}", b"]",
                         b"s", b"u", b"a", b"e", b"\x8f", b"\x90", b"\x91", b"N", b"\x88", b"0", b"2", b"l", b"d",
                         b"\x94", b"1"]),
    )


@pytest.fixture
def import_recorder(monkeypatch):
    """Records every __import__/import_module call and every trap module the import system is asked for."""
    imported: list[str] = []
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def recording_import(name, *args, **kwargs):
        imported.append(name)
        return real_import(name, *args, **kwargs)

    def recording_import_module(name, *args, **kwargs):
        imported.append(name)
        return real_import_module(name, *args, **kwargs)

    class TrapFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.startswith(TRAP_PREFIX):
                imported.append(fullname)
            return None

    monkeypatch.setattr(builtins, "__import__", recording_import)
    monkeypatch.setattr(importlib, "import_module", recording_import_module)
    monkeypatch.setattr(sys, "meta_path", [TrapFinder(), *sys.meta_path])
    return imported


@pytest.fixture
def find_class_recorder(monkeypatch):
    answers: list = []
    original = InertUnpickler.find_class
    monkeypatch.setattr(InertUnpickler, "find_class",
                        lambda self, module, name: answers.append(original(self, module, name)) or answers[-1])
    return answers


# What the allowlisted functions themselves import (already loaded: torch and numpy are postmortem's own).
OWN_IMPORTS = {"torch", "numpy"}


def _assert_nothing_escaped(imported, answers, modules_before, marker, loader_imports=frozenset()):
    """No import beyond what the loader's own code does, no trap module looked for, every find_class answer
    allowed or a placeholder, no module added, no marker."""
    allowed_ids = {id(v) for v in allowed_globals().values()}
    assert set(imported) <= OWN_IMPORTS | set(loader_imports), set(imported) - OWN_IMPORTS - set(loader_imports)
    assert not [name for name in imported if name.startswith(TRAP_PREFIX)]
    assert all(id(a) in allowed_ids or (isinstance(a, type) and issubclass(a, InertObject)) for a in answers)
    assert set(sys.modules) == modules_before
    assert not marker.exists()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), protocol=st.sampled_from([2, 4]))
def test_generated_opcode_streams_import_and_call_nothing_outside_the_allowlist(
        tmp_path, import_recorder, find_class_recorder, data, protocol):
    marker = tmp_path / "ran"
    program = data.draw(st.lists(_opcodes(str(marker)), min_size=1, max_size=30))
    stream = b"\x80" + bytes([protocol]) + b"".join(program) + b"."
    import_recorder.clear()
    find_class_recorder.clear()
    before = set(sys.modules)
    try:
        value = inert_loads(stream)
        event("read" + (" with placeholders" if holds_placeholders(value) else ""))
    except RefusedOpcode:
        event("refused")
    except Exception:   # many generated streams are malformed: any error is fine, running code is not
        event("malformed")
    _assert_nothing_escaped(import_recorder, find_class_recorder, before, marker)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), wrapper=st.sampled_from(["zip", "legacy"]))
def test_generated_streams_inside_torch_files_read_or_fail_in_one_line(
        tmp_path, import_recorder, find_class_recorder, data, wrapper):
    """The same, through torch.load's zip and legacy readers: a CheckpointError line naming the file, or a value."""
    marker = tmp_path / "ran"
    program = data.draw(st.lists(_opcodes(str(marker)), min_size=1, max_size=20))
    pickled = b"\x80\x02" + b"".join(program) + b"."
    path = tmp_path / "ckpt.pt"
    (hostile.zip_with_pickle if wrapper == "zip" else hostile.legacy_with_pickle)(path, pickled)
    benign = (hostile.zip_with_pickle if wrapper == "zip" else hostile.legacy_with_pickle)(
        tmp_path / "benign.pt", hostile.whole(hostile.call(hostile.G("argparse", "Namespace"))))
    import_recorder.clear()
    load_torch_file(benign)         # what torch.load and postmortem's reader import on their own, every time
    loader_imports = set(import_recorder)
    import_recorder.clear()
    find_class_recorder.clear()
    before = set(sys.modules)
    try:
        load_torch_file(path)
    except CheckpointError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
    _assert_nothing_escaped(import_recorder, find_class_recorder, before, marker, loader_imports)


def test_the_recorders_see_an_import(import_recorder, find_class_recorder):
    """The property's instruments work: the standard unpickler's import of a trap module is recorded."""
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(b"\x80\x02" + hostile.G(TRAP_PREFIX + "x", "y") + b".")
    assert TRAP_PREFIX + "x" in import_recorder
    inert_loads(b"\x80\x02" + hostile.G("os", "system") + b".")
    assert len(find_class_recorder) == 1 and find_class_recorder[0].qualified_name() == "os.system"

