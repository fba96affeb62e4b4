"""Hostile pickles for the inert-loading tests: opcode builders, a family of payloads that each create a
marker file if any of their code runs, and the two torch file formats to hide them in.

Every payload is a fragment that pushes one object, so it can stand in for a value inside a real
checkpoint: `in_zip_checkpoint` and `in_legacy_checkpoint` write a genuine torch.save file whose pickle has
a placeholder string swapped for the fragment (the tensors stay real). The classes below are "real
classes" a pickle can name: importing this module and unpickling them runs their side effects.
"""
from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

SLOT = "POSTMORTEM_PAYLOAD_SLOT"
PROTO2 = b"\x80\x02"


# ----------------------------------------------------------------------------- classes with side effects
class WritesOnSetstate:
    def __setstate__(self, state):
        Path(state).write_text("__setstate__ ran")


class WritesOnInit:
    def __init__(self, target):
        Path(target).write_text("__init__ ran")


class WritesOnNew:
    def __new__(cls, target):
        Path(target).write_text("__new__ ran")
        return super().__new__(cls)


# ----------------------------------------------------------------------------- opcode builders
def G(module: str, name: str) -> bytes:
    """GLOBAL module.name."""
    return b"c" + f"{module}\n{name}\n".encode()


def S(text: str) -> bytes:
    """BINUNICODE text."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def B(data: bytes) -> bytes:
    """BINBYTES data."""
    return b"B" + struct.pack("<I", len(data)) + data


def T(*items: bytes) -> bytes:
    """MARK items TUPLE."""
    return b"(" + b"".join(items) + b"t"


def L(*items: bytes) -> bytes:
    """EMPTY_LIST MARK items APPENDS."""
    return b"](" + b"".join(items) + b"e"


def D(**items: bytes) -> bytes:
    """EMPTY_DICT MARK key value ... SETITEMS."""
    return b"}(" + b"".join(S(k) + v for k, v in items.items()) + b"u"


def call(func: bytes, *args: bytes) -> bytes:
    """func(*args) through REDUCE."""
    return func + T(*args) + b"R"


def whole(fragment: bytes) -> bytes:
    """A complete protocol-2 pickle of one fragment."""
    return PROTO2 + fragment + b"."


# ----------------------------------------------------------------------------- the family
@dataclass(frozen=True)
class Payload:
    """A fragment that creates `marker` when its code runs; `extension` names a copyreg extension code the
    standard unpickler needs registered for it (EXT opcodes)."""

    name: str
    build: Callable[[str], bytes]
    extension: tuple[str, str, int] | None = None


THIS = __name__


def _code(marker: str) -> str:
    return f"open({marker!r}, 'w').write('code ran')"


PAYLOADS = [
    Payload("reduce os.system", lambda m: call(G("os", "system"), S(f"touch {m}"))),
    Payload("reduce posix.system", lambda m: call(G("posix", "system"), S(f"touch {m}"))),
    Payload("reduce builtins.eval", lambda m: call(G("builtins", "eval"), S(_code(m)))),
    Payload("reduce __builtin__.eval", lambda m: call(G("__builtin__", "eval"), S(_code(m)))),
    Payload("reduce builtins.exec", lambda m: call(G("builtins", "exec"), S(_code(m)))),
    Payload("reduce subprocess.check_call", lambda m: call(G("subprocess", "check_call"), L(S("touch"), S(m)))),
    Payload("reduce torch.save", lambda m: call(G("torch", "save"), S("x"), S(m))),
    Payload("reduce numpy runstring", lambda m: call(G("numpy.testing._private.utils", "runstring"), S(_code(m)), b"}")),
    Payload("stack_global os.system", lambda m: S("os") + S("system") + b"\x93" + T(S(f"touch {m}")) + b"R"),
    Payload("build -> __setstate__", lambda m: G(THIS, "WritesOnSetstate") + b")\x81" + S(m) + b"b"),
    Payload("newobj -> __new__", lambda m: G(THIS, "WritesOnNew") + T(S(m)) + b"\x81"),
    Payload("inst opcode", lambda m: b"(" + S(f"touch {m}") + b"i" + b"os\nsystem\n"),
    Payload("obj opcode", lambda m: b"(" + G("os", "system") + S(f"touch {m}") + b"o"),
    Payload("obj opcode -> __init__", lambda m: b"(" + G(THIS, "WritesOnInit") + S(m) + b"o"),
    Payload("copyreg._reconstructor", lambda m: call(G("copyreg", "_reconstructor"), G(THIS, "WritesOnInit"),
                                                     G(THIS, "WritesOnInit"), S(m))),
    Payload("copyreg.__newobj__", lambda m: call(G("copyreg", "__newobj__"), G(THIS, "WritesOnNew"), S(m))),
    Payload("functools.partial chain", lambda m: call(G("functools", "partial"), G("os", "system"),
                                                      S(f"touch {m}")) + b")R"),
    Payload("getattr(__import__('os'), 'system')", lambda m: call(
        call(G("builtins", "getattr"), call(G("builtins", "__import__"), S("os")), S("system")), S(f"touch {m}"))),
    Payload("nested pickle.loads", lambda m: call(G("pickle", "loads"), B(whole(call(G("os", "system"),
                                                                                     S(f"touch {m}")))))),
    Payload("nested in containers", lambda m: D(a=L(T(call(G("os", "system"), S(f"touch {m}")))))),
    Payload("torch rebuild_from_type_v2 calling os.system", lambda m: call(
        G("torch._tensor", "_rebuild_from_type_v2"), G("os", "system"), G("torch", "Tensor"), T(S(f"touch {m}")),
        b"}")),
    Payload("ext1 -> os.system", lambda m: b"\x82\xf0" + T(S(f"touch {m}")) + b"R", extension=("os", "system", 0xF0)),
]


# ----------------------------------------------------------------------------- hiding places
def _torch_bytes(state_dict: dict, legacy: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save({"epoch": 1, "state_dict": state_dict, "extra": SLOT}, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def _swap(pickled: bytes, fragment: bytes) -> bytes:
    slot = S(SLOT)
    assert pickled.count(slot) == 1
    return pickled.replace(slot, fragment)


def in_zip_checkpoint(path: Path, state_dict: dict, fragment: bytes) -> Path:
    """A torch.save zip checkpoint {'epoch', 'state_dict', 'extra': <fragment>}: data.pkl edited, tensors kept."""
    source = zipfile.ZipFile(io.BytesIO(_torch_bytes(state_dict, legacy=False)))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, _swap(data, fragment) if info.filename.endswith("/data.pkl") else data)
    return path


def in_legacy_checkpoint(path: Path, state_dict: dict, fragment: bytes) -> Path:
    """The same checkpoint in the legacy (non-zip) torch.save format."""
    path.write_bytes(_swap(_torch_bytes(state_dict, legacy=True), fragment))
    return path


def zip_with_pickle(path: Path, pickled: bytes) -> Path:
    """A torch.save zip archive whose data.pkl is replaced whole by `pickled`."""
    source = zipfile.ZipFile(io.BytesIO(_torch_bytes({}, legacy=False)))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info, pickled if info.filename.endswith("/data.pkl") else source.read(info))
    return path


def legacy_with_pickle(path: Path, pickled: bytes) -> Path:
    """A legacy torch.save file whose object pickle is `pickled` (no storages)."""
    import pickle
    import sys

    head = b"".join(pickle.dumps(part, protocol=2) for part in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": sys.byteorder == "little",
                                       "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    path.write_bytes(head + pickled + pickle.dumps([], protocol=2))
    return path
