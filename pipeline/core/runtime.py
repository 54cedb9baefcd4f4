"""Where and how the networks run: device, numeric precision and thread counts, chosen once.

Precision (``[extract] precision`` or ``--precision``):

- ``"float32"``: every network in float32;
- ``"bfloat16"``: the appearance networks (TSN ResNet-50, the VGGFace2 embedder, the Places365
  ResNet-18) run under bfloat16 autocast, on the CPU or on CUDA; fails where the device has no
  bfloat16 support;
- ``"auto"`` (default): bfloat16 where the device supports it natively (CUDA with bf16, or a CPU
  with AVX512-BF16 or AMX), float32 elsewhere.

A build resolves the setting once (:func:`resolve_precision`) and hands the resolved value to
every extractor; it is part of each shard's identity and recorded in provenance, and whatever
compares identities later (the release) uses the build's resolved value. On an AMX CPU,
ResNet-50 at 224 px runs at about 52 frames/s in bf16 + channels_last against 14.5 in fp32
NCHW (2 threads). MTCNN runs in float32; BlazePose picks its own (:func:`pipeline.core.placement.blazepose_precision_for`).

Threads: torch's intra-op pool is process-wide. When a process runs several clips at once (a
thread-pool runner, or a Dask worker with several threads), :func:`configure_threads` gives
each its share of the cores so that parallel work does not oversubscribe them.
"""

from __future__ import annotations

import logging
import os
from functools import cache

from pipeline.core.errors import InputError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bfloat16", "float32")


class DeviceError(InputError):
    """A device this machine cannot run on (``cuda`` without a GPU, a name torch does not know);
    the message names the option or parameter that asked for it."""


def check_device(device: str, label: str = "device") -> str:
    """``device``, once this machine is known to have it; else a :class:`DeviceError` naming ``label``.

    Asked once where a run starts, so that ``--device cuda`` on a machine without a GPU stops
    before any clip is touched rather than in the first network's forward pass on a worker.
    CUDA is asked without creating a context on the GPU: the process that checks (the parent of
    a process pool or of Dask workers) may never run a network itself.
    """
    import torch

    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"{label} {device}: not a device torch knows (cpu, cuda, cuda:N, mps, ...)") from None
    if kind.type == "cpu":
        return device
    if kind.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
            raise DeviceError(
                f"{label} {device}: torch finds no CUDA GPU on this machine (torch {torch.__version__}, "
                f"built with {build}); leave {label} out to run on the CPU"
            )
        if kind.index is not None and kind.index >= count:
            raise DeviceError(f"{label} {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        return device
    try:  # any other kind (mps, xpu, ...): one element on it answers for it
        torch.empty(1, device=kind)
    except (RuntimeError, AssertionError, ValueError) as err:
        raise DeviceError(f"{label} {device}: not available on this machine ({_first_line(err)})") from None
    return device


def _first_line(err: Exception, limit: int = 160) -> str:
    """The first sentence of ``err``'s message (torch's run to many lines), at most ``limit`` characters."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_device(device: str | None) -> str:
    """``device`` as given (checked: :func:`check_device`), else ``"cuda"`` when a GPU is present,
    else ``"cpu"``."""
    if device:
        return check_device(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    cpu = getattr(torch._C, "_cpu", None)
    for name in probes:
        fn = getattr(cpu, name, None)
        if fn is not None and fn():
            return True
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def device_has_bf16(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device == "cpu":
        return cpu_has_bf16()
    return False


def resolve_precision(precision: str | None, device: str) -> str:
    """``"bfloat16"`` or ``"float32"`` for ``device`` (see the module docstring)."""
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bfloat16" if device_has_bf16(device) else "float32"
    if precision == "bfloat16" and not device_has_bf16(device):
        raise ValueError(f"precision bfloat16 was asked for, but device {device!r} has no native bfloat16 support")
    return precision


def place(device: str | None, precision: str | None) -> tuple[str, str]:
    """Where and how a network runs: ``(device, precision)``, the device as given (else CUDA when
    present, else the CPU) and ``precision`` resolved for it (:func:`resolve_precision`)."""
    device = resolve_device(device)
    return device, resolve_precision(precision, device)


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_task(concurrent: int) -> int:
    """Torch threads for each of ``concurrent`` clips processed at once in one process."""
    return max(1, cores() // max(1, concurrent))


def configure_threads(threads: int | None) -> None:
    """Set torch's intra-op threads (process-wide) and OpenCV's; None leaves the defaults."""
    if not threads:
        return
    import cv2
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def autocast(device: str, precision: str):
    """The autocast context of ``precision`` on ``device`` (a no-op context for float32)."""
    import contextlib

    import torch

    if precision != "bfloat16":
        return contextlib.nullcontext()
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def worker_name() -> str:
    """``host:pid`` of this process, as the build report names the worker of each item."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
