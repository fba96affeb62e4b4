"""Import the user's callables (FILE.py:FUNC or package.module:FUNC) without writing into their run."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, UserCodeError

__all__ = ["UserCallable", "resolve_callable", "call_user_code", "DEFAULT_SPEC_FILE"]

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
    """Import a .py file by path; bytecode is not cached, so nothing is written beside it."""
    name = f"postmortem_user_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise UserCodeError(f"{path}: importing it raised {type(exc).__name__}: {exc}{_user_traceback(exc)}") from exc
    finally:
        sys.dont_write_bytecode = previous
    return module


def _user_traceback(exc: BaseException, keep: int = 6) -> str:
    """The last lines of a traceback raised in user code, marked as theirs."""
    lines = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip().splitlines()
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
    return UserCallable(function, reference, hashlib.sha256(source).hexdigest())


def call_user_code(reference: str, function: Callable[..., Any], *args: Any) -> Any:
    """Call user code; an exception becomes one UserCodeError carrying their traceback tail."""
    try:
        return function(*args)
    except Exception as exc:
        raise UserCodeError(f"{reference}: raised {type(exc).__name__}: {exc}{_user_traceback(exc)}") from exc
