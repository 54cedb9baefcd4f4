"""A restricted unpickler for published checkpoints: tensors and arrays come back, code never runs.

Published checkpoints are pickles (SPEC section 4, "Weights"). Some of them carry objects that
``torch.load(weights_only=True)`` refuses, such as the mmengine ``MessageHub`` state of an
mmaction2 1.x checkpoint or a Python 2 pickle of numpy arrays. A plain ``pickle.load`` would
import and call whatever the file names, so a hostile file could run code. This unpickler
resolves a global only when it is on an allow-list:

* the functions torch and numpy use to rebuild tensors and arrays (the same ones
  ``torch.load(weights_only=True)`` allows, plus numpy's array reconstruction);
* inert containers (``OrderedDict``, ``set``, ...);
* any class of a *metadata* package (mmengine, mmcv, mmaction, ...), which is replaced by an
  inert stub that records its constructor arguments and state but has no behaviour: such objects
  only ever describe a training run and are dropped after loading.

Everything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises
:class:`RefusedGlobal` at the moment the opcode that names it is read, before anything could be
called. This module has the ``Unpickler``/``load`` interface of :mod:`pickle`, so it can be passed
to ``torch.load(..., pickle_module=pipeline.core.unpickle, weights_only=False)``: torch keeps its own
storage handling and asks this module for every other global.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle
from typing import Any

# Globals that rebuild tensors, arrays and plain containers. Nothing here can reach the OS.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("builtins", "slice"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch", "Size"),
        ("torch", "device"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        # numpy pickles an array's raw bytes under protocol 2 as _codecs.encode(text, "latin1")
        ("_codecs", "encode"),
    }
)

# Packages whose objects are training metadata (loggers, configs, history buffers): stubbed.
STUB_PACKAGES: tuple[str, ...] = ("mmengine", "mmcv", "mmaction", "mmpretrain", "mmcls", "mmdet")


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing of it was executed."""


class Stub:
    """An inert stand-in for a metadata object. It keeps what the pickle gave it and does nothing."""

    stub_of: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        obj = object.__new__(cls)
        object.__setattr__(obj, "stub_args", args)
        object.__setattr__(obj, "stub_state", None)
        object.__setattr__(obj, "stub_items", [])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "stub_state", state)

    # pickle fills list- and dict-like objects through these (APPENDS / SETITEMS opcodes)
    def append(self, item: Any) -> None:
        self.stub_items.append(item)

    def extend(self, items: Any) -> None:
        self.stub_items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.stub_items.append((key, value))

    def __repr__(self) -> str:
        return f"<stub of {self.stub_of}>"


_STUBS: dict[str, type[Stub]] = {}


def _stub_class(module: str, name: str) -> type[Stub]:
    qualified = f"{module}.{name}"
    if qualified not in _STUBS:
        _STUBS[qualified] = type(name, (Stub,), {"stub_of": qualified, "__module__": __name__})
    return _STUBS[qualified]


def _resolve(module: str, name: str) -> Any:
    # Python 2 pickles name builtins as __builtin__ etc.; map them as pickle itself would, then check
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    if (module, name) in ALLOWED_GLOBALS:
        return getattr(importlib.import_module(module), name)
    if module == "torch" and _is_torch_dtype(name):
        import torch

        return getattr(torch, name)
    if module.split(".")[0] in STUB_PACKAGES:
        return _stub_class(module, name)
    raise RefusedGlobal(f"refused to load global {module}.{name}: not a tensor, array or metadata type")


def _is_torch_dtype(name: str) -> bool:
    import torch

    return isinstance(getattr(torch, name, None), torch.dtype)


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves globals through the allow-list (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        return _resolve(module, name)


def load(file, **kwargs: Any) -> Any:
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    return Unpickler(io.BytesIO(data), **kwargs).load()
