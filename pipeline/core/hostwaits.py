"""Counting host waits: every place where the host would stop until a GPU has caught up.

A *host wait* is a device-to-host copy or an operation whose output's shape depends on the data:
``.item()``, ``bool``/``int``/``float`` of a tensor (``aten._local_scalar_dense``), ``nonzero``
(``torch.where`` with one argument, ``argwhere``), ``masked_select``, ``unique``, indexing or
assigning with a boolean mask, ``repeat_interleave`` by a tensor, and reading a tensor on the host
(``.cpu()``, ``.to("cpu")``, ``.numpy()``, ``.tolist()``). On CUDA each is a stall of the stream;
on the CPU they cost nothing, so this module counts them by kind wherever the code runs, which is
how ``bench/bench_host.py`` and ``tests/test_hostwaits.py`` hold the torch path to its budget
(a device run counts its own with ``torch.cuda.set_sync_debug_mode("warn")``).

:class:`HostWaits` counts in two ways: a :class:`~torch.utils._python_dispatch.TorchDispatchMode`
sees every ATen operation of the threads it is entered in (every thread started after
:meth:`HostWaits.install`, and the installing one), and ``torch.Tensor``'s host readers are
wrapped in Python (they never reach ATen on the CPU). A tensor read by ``.cpu()`` and then
``.numpy()`` is one wait. :meth:`HostWaits.component` names the part of the pipeline a thread is
in, so waits are reported per component. Self-contained (torch only): a bench loads it by path
into a process running another checkout of the project.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_DATA_DEPENDENT = {
    "nonzero",
    "nonzero_numpy",
    "argwhere",
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "unique_dim_consecutive",
}
_INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index_put"}
_READERS = ("cpu", "numpy", "tolist")
_HOST = "_vdv_host_read"  # marks a tensor already read by .cpu(): its .numpy() is not another wait


def _is_bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def classify(func, args) -> str | None:
    """The kind of host wait an ATen call is, or None."""
    name = func._schema.name.split("::")[-1]
    if name == "_local_scalar_dense":
        return "scalar read"
    if name in _DATA_DEPENDENT:
        return "data-dependent shape"
    if name == "repeat_interleave" and args and isinstance(args[0], torch.Tensor) and len(args) > 1:
        return "data-dependent shape"
    if name in _INDEXING and len(args) > 1 and _is_bool_index(args[1]):
        return "boolean mask"
    return None


def _download(func, args, kwargs) -> bool:
    """A copy from a device to the host (``.cpu()``, ``.to("cpu")``, ``copy_`` into a CPU tensor)."""
    name = func._schema.name.split("::")[-1]
    if name == "_to_copy" and args and isinstance(args[0], torch.Tensor) and args[0].device.type != "cpu":
        device = kwargs.get("device")
        return device is not None and torch.device(device).type == "cpu"
    if name == "copy_" and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    return False


class _Mode(TorchDispatchMode):
    def __init__(self, owner: HostWaits):
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = classify(func, args) or ("download" if _download(func, args, kwargs) else None)
        self.owner._op()
        if kind is not None:
            self.owner.add(kind)
        return func(*args, **kwargs)


class HostWaits:
    """Counts host waits per (component, kind), and ATen operations per component."""

    def __init__(self):
        self.counts: Counter[tuple[str, str]] = Counter()
        self.ops: Counter[str] = Counter()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._undo: list = []

    # -- where a thread is ---------------------------------------------------------------------

    def current(self) -> str:
        stack = getattr(self._local, "stack", None)
        return stack[-1] if stack else "other"

    @contextlib.contextmanager
    def component(self, name: str):
        """Attribute this thread's waits to ``name`` while inside."""
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append(name)
        try:
            yield
        finally:
            stack.pop()

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.counts[(self.current(), kind)] += n

    def _op(self) -> None:
        with self._lock:
            self.ops[self.current()] += 1

    def per_component(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (component, _), n in self.counts.items():
            out[component] += n
        return dict(out)

    # -- counting ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def counting(self):
        """Count in this thread only (the dispatch mode entered here), Tensor readers included."""
        self.install(threads=False)
        try:
            yield self
        finally:
            self.uninstall()

    def install(self, *, threads: bool = True) -> None:
        """Start counting: in this thread and, with ``threads``, every thread started from now on."""
        self._wrap_readers()
        mode = _Mode(self)
        mode.__enter__()
        self._undo.append(lambda: mode.__exit__(None, None, None))
        if threads:
            real_run = threading.Thread.run
            owner = self

            def run(thread_self):
                with _Mode(owner):
                    real_run(thread_self)

            threading.Thread.run = run
            self._undo.append(lambda: setattr(threading.Thread, "run", real_run))

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _wrap_readers(self) -> None:
        """``.cpu()``, ``.numpy()`` and ``.tolist()`` of a CPU tensor never reach ATen: on the CPU
        they are counted here as the download they are on a device (a device tensor's copy is
        counted by the dispatch mode); ``.numpy()`` of what ``.cpu()`` returned is not counted again."""
        owner = self
        for name in _READERS:
            real = getattr(torch.Tensor, name)

            def wrapper(tensor, *args, _real=real, _name=name, **kwargs):
                on_cpu = tensor.device.type == "cpu"
                out = _real(tensor, *args, **kwargs)
                if on_cpu and not (_name != "cpu" and getattr(tensor, _HOST, False)):
                    owner.add("download")
                if _name == "cpu":
                    if out is tensor:  # on the CPU .cpu() is the tensor itself: mark an alias of it
                        out = tensor.view_as(tensor)
                    with contextlib.suppress(AttributeError, RuntimeError):
                        setattr(out, _HOST, True)
                return out

            setattr(torch.Tensor, name, wrapper)
            self._undo.append(lambda _name=name, _real=real: setattr(torch.Tensor, _name, _real))
