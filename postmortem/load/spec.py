"""Import the user's callables (FILE.py:FUNC or package.module:FUNC) without writing into their run."""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, InputError, UserCodeError

__all__ = ["UserCallable", "resolve_callable", "call_user_code", "spec_reference", "spec_callable", "source_sha256",
           "NeedsImport", "defines", "DEFAULT_SPEC_FILE"]

DEFAULT_SPEC_FILE = "postmortem_spec.py"


@dataclass(frozen=True)
class UserCallable:
    """A function from the user's code, with where it came from and a hash of that source."""

    function: Callable[..., Any]
    reference: str
    source_sha256: str

    def __call__(self, *args: Any) -> Any:
        return call_user_code(self.reference, self.function, *args)


def _import_file(path: Path) -> Any:
    """Import a .py file by path; bytecode is not cached, so nothing is written beside it.

    The module is named after the file's path and content, so an edited file is imported afresh
    (its content hash is also in the cache key: the cache never serves the old code's records).
    """
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    name = (f"postmortem_user_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}_"
            f"{hashlib.sha256(content).hexdigest()[:12]}")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:   # so that the spec can import its neighbours (the run's own model code)
        sys.path.insert(0, folder)
    try:
        with _no_bytecode():
            spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if added:
            sys.path.remove(folder)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UserCodeError(f"{path}: importing it raised {_describe(exc)}{_user_traceback(exc)}") from exc
    return module


@contextlib.contextmanager
def _no_bytecode():
    """Python writes no __pycache__ beside the user's files (nothing under RUN is ever written)."""
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = previous


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


_OWN_FILES = str(Path(__file__).resolve().parent.parent) + os.sep
_LIBRARY_DIRS = tuple({str(Path(p).resolve()) + os.sep for p in
                       (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])})


def _user_traceback(exc: BaseException, keep: int = 8) -> str:
    """The tail of a traceback raised in user code, marked as theirs: the frames in their own files
    (not postmortem's, the standard library's or installed packages'), else all but postmortem's."""
    def where(frame) -> str:
        return str(Path(frame.filename).resolve()) if not frame.filename.startswith("<") else frame.filename
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not where(f).startswith(_OWN_FILES) and "importlib._bootstrap" not in f.filename]
    own = [f for f in frames if not where(f).startswith(_LIBRARY_DIRS)]
    frames = own or frames
    lines = "".join(traceback.format_list(frames)).rstrip().splitlines()
    lines += traceback.format_exception_only(type(exc), exc)[-1].rstrip().splitlines()
    tail = "\n".join(f"  | {line}" for line in lines[-keep:])
    return f"\n  traceback from your code (last lines):\n{tail}"


def resolve_callable(reference: str, what: str) -> UserCallable:
    """Turn 'FILE.py:FUNC' or 'package.module:FUNC' into a callable; errors name the reference."""
    target, sep, func_name = reference.rpartition(":")
    if not sep or not target or not func_name:
        raise ConfigError(f"{what} {reference!r}: expected FILE.py:FUNC or package.module:FUNC")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"{path}: {what} file not found")
        module = _import_file(path)
        source = path.read_bytes()
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"{what} {reference!r}: cannot import module {target!r} ({exc})") from exc
        module_file = getattr(module, "__file__", None)
        source = Path(module_file).read_bytes() if module_file else target.encode()
    function = getattr(module, func_name, None)
    if not callable(function):
        raise ConfigError(f"{target}: has no function {func_name!r} (needed for {what})")
    return UserCallable(function, reference, _sha256(source))


def call_user_code(reference: str, function: Callable[..., Any], *args: Any) -> Any:
    """Call user code; an exception becomes one UserCodeError carrying their traceback tail."""
    try:
        with _no_bytecode():
            return function(*args)
    except (Exception, SystemExit) as exc:
        raise UserCodeError(f"{reference}: raised {_describe(exc)}{_user_traceback(exc)}") from exc


def spec_reference(reference: str | None, spec_file: Path, default_name: str) -> str | None:
    """--model/--forward/--train-data as given, else FILE:NAME of RUN/postmortem_spec.py when it defines NAME, else
    None."""
    if reference:
        return reference
    if spec_file.is_file() and defines(spec_file, default_name):
        return f"{spec_file}:{default_name}"
    return None


def spec_callable(reference: str | None, spec_file: Path, default_name: str, what: str) -> UserCallable | None:
    """--model/--forward, else the function of that name in RUN/postmortem_spec.py when it defines one."""
    resolved = spec_reference(reference, spec_file, default_name)
    return resolve_callable(resolved, what) if resolved else None


class NeedsImport(Exception):
    """A package.module:FUNC reference: which file holds its source is known only by importing it."""


def source_sha256(reference: str | None, spec_file: Path, default_name: str) -> str | None:
    """The source_sha256 that spec_callable(reference, spec_file, default_name, ...) carries, from the file's bytes
    without importing it (no user code runs, and no torch): None where spec_callable gives None. Raises
    NeedsImport for a package.module:FUNC reference, OSError where the file cannot be read."""
    resolved = spec_reference(reference, spec_file, default_name)
    if resolved is None:
        return None
    target = resolved.rpartition(":")[0]
    if not target.endswith(".py"):
        raise NeedsImport(resolved)
    return _sha256(Path(target).read_bytes())


def _sha256(source: bytes) -> str:
    """The identity of a user's source in cache keys (resolve_callable and source_sha256 must agree on it)."""
    return hashlib.sha256(source).hexdigest()


def defines(spec_file: Path, name: str) -> bool:
    """Whether a spec file defines a top-level function `name` (read as text: importing runs user code)."""
    import ast

    try:
        tree = ast.parse(spec_file.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise InputError(f"{spec_file}: not valid Python ({exc})") from exc
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and \
                any((alias.asname or alias.name.split(".")[0]) == name for alias in node.names):
            return True
    return False
