"""Unpickle a checkpoint without running its code: every global outside a small allowlist becomes an
inert placeholder that only records what the pickle asked for.

A pickle is a program: GLOBAL imports any name, REDUCE/NEWOBJ/INST/OBJ call it, BUILD calls the
result's __setstate__. torch.load(weights_only=True) refuses every global outside its list, so files
holding an argparse.Namespace, an omegaconf DictConfig or a whole nn.Module cannot be read at all.
Here, instead:

- `find_class` never imports. A name on ALLOWED (torch's tensor rebuild functions, dtypes, Size,
  device, OrderedDict, plain builtin data types, numpy's array/scalar/dtype reconstructors, each
  wrapped where its arguments could reach further) is returned; any other name becomes a fresh
  subclass of `InertObject` that remembers its module and name.
- Calling a placeholder (REDUCE, NEWOBJ, INST, OBJ) makes an instance that records the arguments;
  BUILD records the state; SETITEM(S)/APPEND(S)/ADDITEMS record the items. Nothing else happens.
- Every opcode that calls, builds or fills checks its target: only allowed globals and placeholders are
  called, and state is set only on placeholders, numpy arrays/dtypes and OrderedDicts. Extension codes
  (EXT1/2/4, which consult a process-wide registry) are refused.

The pure-Python `pickle._Unpickler` is the base rather than the C `pickle.Unpickler`: only its
dispatch table lets every opcode be checked (the C unpickler, for example, serves EXT codes from a
process-wide cache without asking find_class). The pickle part of a torch checkpoint is small (the
tensor data is read separately), so the slower interpreter costs milliseconds.

`INERT_PICKLE_MODULE` has the shape torch.load expects of `pickle_module=`; torch then supplies its
own persistent_load for the storages of zip and legacy files.
"""
from __future__ import annotations

import _compat_pickle
import functools
import io
import pickle
import types
from collections import OrderedDict
from typing import Any, Callable, ClassVar

import numpy as np

__all__ = ["InertObject", "InertUnpickler", "RefusedOpcode", "INERT_PICKLE_MODULE", "allowed_globals", "inert_loads",
           "holds_placeholders"]

# Plain data types a checkpoint's metadata is made of; calling or naming them runs no user code.
BUILTIN_DATA_TYPES = ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
                      "bytearray", "bool", "slice")
# The codec pickle protocol 2 uses for bytes (`_codecs.encode(text, 'latin1')`); other names would make
# the codec registry import a module, so only these are accepted.
BYTES_CODECS = ("latin1", "latin-1")


class RefusedOpcode(pickle.UnpicklingError):
    """The pickle asks for something a placeholder cannot stand for (calling a non-callable, setting the state
    of a real object, an extension code); nothing was run."""


class InertObject:
    """Stands for what the pickle would have made by importing `module`.`name` and calling it.

    `args`/`kwargs` are what it was called with, `state` what BUILD passed (an object's __dict__, as a
    rule), `set_items` and `appended` what SETITEM(S) and APPEND(S)/ADDITEMS put into it. It has no other
    behaviour: no __getattr__, __iter__, __call__ or arithmetic, so code that receives one cannot be led
    into running anything.
    """

    module: ClassVar[str] = ""
    name: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertObject":
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        obj.set_items, obj.appended = {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:   # the arguments were recorded by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.set_items[key] = value

    def append(self, value: Any) -> None:
        self.appended.append(value)

    def extend(self, values: Any) -> None:
        self.appended.extend(values)

    def add(self, value: Any) -> None:
        self.appended.append(value)

    @classmethod
    def qualified_name(cls) -> str:
        return f"{cls.module}.{cls.name}"

    def __repr__(self) -> str:
        return f"<inert {self.qualified_name()}>"


def _placeholder_class(module: str, name: str) -> type[InertObject]:
    return type("InertGlobal", (InertObject,), {"module": module, "name": name, "__slots__": ()})


def _describe(value: Any) -> str:
    """A value as a refusal names it: what a placeholder stands for, else its type."""
    if isinstance(value, type) and issubclass(value, InertObject):
        return value.qualified_name()
    if isinstance(value, InertObject):
        return f"the result of {value.qualified_name()}(...)"
    return f"a {type(value).__name__}"


# ----------------------------------------------------------------------------- the allowlist
def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """torch's own rebuild, without the pickle's backward hooks (objects it names must never be called)."""
    import torch

    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, OrderedDict(),
                                           metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """A Parameter from its data; the pickle's hooks and extra attributes (`state`) are left out."""
    import torch

    return torch._utils._rebuild_parameter(data, requires_grad, OrderedDict())


def _reconstruct_array(subtype, shape, dtype):
    """numpy's array reconstructor, for plain ndarrays only (a subtype would be a class to call)."""
    if subtype is not np.ndarray:
        raise RefusedOpcode(f"builds a numpy array of {_describe(subtype)}, not numpy.ndarray")
    return _NUMPY_RECONSTRUCT(subtype, shape, dtype)


def _numpy_scalar(dtype, *data):
    if not isinstance(dtype, np.dtype):
        raise RefusedOpcode(f"builds a numpy scalar of {_describe(dtype)}, not a numpy dtype")
    return _NUMPY_SCALAR(dtype, *data)


def _numpy_dtype(spec, *flags):
    if not isinstance(spec, str):
        raise RefusedOpcode(f"builds a numpy dtype from {_describe(spec)}, not a type code")
    return np.dtype(spec, *flags)


def _rebuild_from_type(func, new_type, args, state):
    """A tensor subclass (or a tensor with attributes) as the plain tensor inside: `func` must be an allowed
    rebuild function; the subclass and the attributes are left out (they would be classes to call)."""
    if id(func) not in _allowed_ids():
        raise RefusedOpcode(f"rebuilds a tensor with {_describe(func)}, which is not a tensor rebuild function")
    return func(*args)


def _codecs_encode(text, encoding="utf-8"):
    if encoding not in BYTES_CODECS or not isinstance(text, str):
        raise RefusedOpcode(f"calls _codecs.encode with {encoding!r}; only latin1 text is read")
    return text.encode("latin1")


def _numpy_reconstructors() -> tuple[Callable, Callable]:
    """The functions numpy itself names when pickling an array and a scalar (numpy._core or numpy.core)."""
    return np.zeros(1).__reduce__()[0], np.float64(0).__reduce__()[0]


_NUMPY_RECONSTRUCT, _NUMPY_SCALAR = _numpy_reconstructors()


@functools.lru_cache(maxsize=1)
def allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> the object find_class returns for it; everything else becomes a placeholder."""
    import builtins

    import torch

    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch", "UntypedStorage"): torch.UntypedStorage,   # untyped storages in zip files' persistent ids
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
        ("_codecs", "encode"): _codecs_encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _numpy_dtype,
    }
    allowed |= {("builtins", name): getattr(builtins, name) for name in BUILTIN_DATA_TYPES}
    allowed |= {("torch", name): value for name, value in vars(torch).items()
                if isinstance(value, torch.dtype) and str(value) == f"torch.{name}"}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed |= {(module, "_reconstruct"): _reconstruct_array, (module, "scalar"): _numpy_scalar}
    return allowed


@functools.lru_cache(maxsize=1)
def _allowed_ids() -> frozenset[int]:
    return frozenset(id(value) for value in allowed_globals().values())


def _is_placeholder_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, InertObject)


# ----------------------------------------------------------------------------- the unpickler
class InertUnpickler(pickle._Unpickler):
    """pickle's own interpreter with find_class and every calling/building opcode replaced (module doc)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._placeholders: dict[tuple[str, str], type[InertObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        """The allowed object of that name, else a placeholder class for it; never imports."""
        if (module, name) in _compat_pickle.NAME_MAPPING:      # Python 2 names: ('__builtin__', 'set') ...
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        allowed = allowed_globals().get((module, name))
        if allowed is not None:
            return allowed
        return self._placeholders.setdefault((module, name), _placeholder_class(module, name))

    def get_extension(self, code: int) -> None:
        raise RefusedOpcode(f"uses extension code {code} (EXT opcodes name globals through a process-wide "
                            "registry; they are not read)")

    def _call(self, func: Any, args: tuple, kwargs: dict | None = None) -> Any:
        if not (_is_placeholder_class(func) or id(func) in _allowed_ids()):
            raise RefusedOpcode(f"calls {_describe(func)}; only allowed globals and names it imports are called")
        if not isinstance(args, tuple):
            raise RefusedOpcode(f"calls with arguments in {_describe(args)}, not a tuple")
        return func(*args, **(kwargs or {}))

    def _new(self, cls: Any, args: tuple, kwargs: dict | None = None) -> Any:
        if not (_is_placeholder_class(cls) or (isinstance(cls, type) and id(cls) in _allowed_ids())):
            raise RefusedOpcode(f"creates an object of {_describe(cls)}; only allowed types and names it imports "
                                "are created")
        return cls.__new__(cls, *args, **(kwargs or {}))

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args)
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        if not isinstance(kwargs, dict):
            raise RefusedOpcode(f"passes keyword arguments in {_describe(kwargs)}, not a dict")
        self.stack[-1] = self._new(self.stack[-1], args, kwargs)
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass: Any, args: list) -> None:   # INST and OBJ
        self.append(self._call(klass, tuple(args)))

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, InertObject):
            inst.__setstate__(state)
        elif type(inst) is np.ndarray or isinstance(inst, np.dtype):
            inst.__setstate__(state)
        elif type(inst) is OrderedDict and isinstance(state, dict):   # a state_dict's _metadata
            inst.__dict__.update({k: v for k, v in state.items() if type(k) is str})
        else:
            raise RefusedOpcode(f"sets the state of {_describe(inst)} (only placeholders, numpy arrays and "
                                "OrderedDicts take state)")
    dispatch[pickle.BUILD[0]] = load_build

    def _target(self, allowed: tuple[type, ...], opcode: str) -> Any:
        target = self.stack[-1]
        if type(target) not in allowed and not isinstance(target, InertObject):
            raise RefusedOpcode(f"puts items ({opcode}) into {_describe(target)}")
        return target

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._target((dict, OrderedDict), "SETITEM")[key] = value
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._target((dict, OrderedDict), "SETITEMS")
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_append(self) -> None:
        value = self.stack.pop()
        self._target((list,), "APPEND").append(value)
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._target((list,), "APPENDS").extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self._target((set,), "ADDITEMS")
        for item in items:
            target.add(item)
    dispatch[pickle.ADDITEMS[0]] = load_additems


def _load(file: Any, **kwargs: Any) -> Any:
    return InertUnpickler(file, **kwargs).load()


# What torch.load needs of a pickle module: Unpickler (subclassed by torch to add its storages) and load.
INERT_PICKLE_MODULE = types.SimpleNamespace(__name__="postmortem.load.inert_pickle", Unpickler=InertUnpickler,
                                            load=_load)


def holds_placeholders(value: Any, depth: int = 8) -> bool:
    """Whether an unpickled object holds a placeholder anywhere in its containers (cycles and deep nesting
    end the search)."""
    seen: set[int] = set()

    def walk(item: Any, level: int) -> bool:
        if isinstance(item, InertObject) or _is_placeholder_class(item):
            return True
        if level >= depth or id(item) in seen or not isinstance(item, (dict, list, tuple, set, frozenset)):
            return False
        seen.add(id(item))
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        return any(walk(child, level + 1) for child in children)
    return walk(value, 0)


def inert_loads(data: bytes) -> Any:
    """Unpickle bytes inertly (no persistent ids: those only come from torch's file formats)."""
    return _load(io.BytesIO(data))
