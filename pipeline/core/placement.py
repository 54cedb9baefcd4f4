"""Where and how a build runs its networks, resolved once: the :class:`Placement`.

Five choices decide where every network of a build runs and in what precision:

- ``device``: ``--device``, else CUDA when torch finds a GPU, else the CPU
  (:func:`pipeline.core.runtime.resolve_device`, which checks a named device);
- ``precision``: the appearance networks' (``--precision``, else ``[extract] precision``, else
  ``auto``: bfloat16 where the device computes it natively; :func:`pipeline.core.runtime.resolve_precision`);
- ``pose_backend``: ``[pose] backend``; ``auto`` is the torch BlazePose on CUDA and mediapipe's on
  the CPU (where it is faster, ``bench/bench_pose.py``). The people counter of the pixel rules,
  pose and scenic's person mask all run it;
- ``vibe_backend``: ``[scenic] vibe_backend``; ``auto`` is the torch ViBe on CUDA, numpy elsewhere;
- ``blazepose_precision``: the torch BlazePose's own precision: float16 for a 16-bit build on
  CUDA (PCK@0.05 against mediapipe 0.98, bfloat16 0.95), float32 on the CPU, where bfloat16 is
  barely faster for these depthwise networks and falls below the agreement target; mediapipe's
  BlazePose always runs in float32 on the CPU.

:func:`resolve_placement` makes these choices (by the rules of :func:`placed`). A build calls it once,
hands the value to the pixel rules (the people counter, :func:`pipeline.screening.visual.counter_settings`)
and to extraction (:class:`pipeline.extraction.stage.ExtractionPlan`), and records it in the work
directory (``<work>/placement/placement.current.parquet``, table ``placement``,
:data:`pipeline.core.tables.PLACEMENT`). ``vdv release``, ``vdv reextract`` and ``vdv extract`` read
the record back (:func:`read_placement`): an explicit ``--device`` or ``--precision`` wins, then a
precision the configuration names (``[extract] precision`` other than ``auto``), then the
recorded value. The backends follow from the device and the configuration by the rules above, so
the same device gives the same backends. Every shard records what it was made with (device,
precision, and the backends in its parameters), and the pixel rules' results record the people
counter's backend, device and precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

POSE_BACKENDS = ("auto", "torch", "mediapipe")
VIBE_BACKENDS = ("auto", "torch", "numpy")
TABLE_DIR = "placement"


@dataclass(frozen=True)
class Placement:
    """One build's resolved placement (module docstring); plain strings, so it travels to any worker."""

    device: str = "cpu"  # cpu | cuda | cuda:N | ...
    precision: str = "float32"  # the appearance networks': bfloat16 | float32
    pose_backend: str = "mediapipe"  # torch | mediapipe: pose, the people counter, scenic's mask
    vibe_backend: str = "numpy"  # torch | numpy
    blazepose_precision: str = "float32"  # the torch BlazePose's: float16 | float32

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def backend_for(setting: str, device: str, choices: tuple[str, ...] = POSE_BACKENDS) -> str:
    """A backend setting (one of ``choices``: ``auto``, ``torch`` and the CPU one) on the resolved
    ``device``: the one ``auto`` rule, torch on CUDA, else the CPU backend (the last of ``choices``)."""
    if setting not in choices:
        raise ValueError(f"backend must be one of {list(choices)}, got {setting!r}")
    if setting != "auto":
        return setting
    return "torch" if device.startswith("cuda") else choices[-1]


def blazepose_precision_for(precision: str, device: str) -> str:
    """The torch BlazePose's precision in a build of resolved ``precision`` on ``device``."""
    return "float16" if precision != "float32" and device.startswith("cuda") else "float32"


def _setting(config: Mapping[str, Any], section: str, key: str, default: str = "auto") -> str:
    return str(dict(config.get(section, {}) or {}).get(key, default))


def placed(
    device: str | None, precision: str | None, *, pose_backend: str = "auto", vibe_backend: str = "auto"
) -> Placement:
    """The placement of ``device`` (None: CUDA when present, else the CPU) and ``precision``
    (:func:`pipeline.core.runtime.resolve_precision`) with these backend settings, by the rules above."""
    from pipeline.core.runtime import resolve_device, resolve_precision

    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    return Placement(
        device=device,
        precision=precision,
        pose_backend=backend_for(pose_backend, device, POSE_BACKENDS),
        vibe_backend=backend_for(vibe_backend, device, VIBE_BACKENDS),
        blazepose_precision=blazepose_precision_for(precision, device),
    )


def resolve_placement(
    config: Mapping[str, Any] | None = None,
    device: str | None = None,
    precision: str | None = None,
    *,
    backends: Mapping[str, str],
    recorded: Placement | None = None,
) -> Placement:
    """The placement of a run: ``device`` and ``precision`` as asked (None: not asked), else
    ``[extract] precision`` when it is not ``auto``, else the ``recorded`` placement of the work
    directory, else resolved for this machine; the backends on that device from their settings
    (``backends``: Placement field -> setting, as the modality records declare where they are
    configured, :func:`pipeline.modalities.registry.backend_settings`).

    A device this machine lacks is a :class:`pipeline.core.runtime.DeviceError`; a precision it
    cannot run or an unknown backend a ``ValueError`` (the callers' ConfigError).
    """
    from pipeline.core.runtime import DeviceError, check_device

    config = dict(config or {})
    configured = _setting(config, "extract", "precision")
    if precision is None and configured != "auto":
        precision = configured
    if recorded is not None and device is None:
        # the work directory's device, unless a flag names one; checked here, naming where it came from
        try:
            device = check_device(recorded.device)
        except DeviceError as err:
            raise DeviceError(
                f"the work directory's recorded placement runs on {recorded.device}, which this machine "
                f"cannot ({err}); pass --device to choose one"
            ) from None
        if precision is None:
            precision = recorded.precision
    return placed(device, precision, **backends)


def placement_path(work: str | Path) -> Path:
    from pipeline.core import tables

    return tables.shard_path(work, TABLE_DIR, "current")


def write_placement(work: str | Path, placement: Placement, run: str) -> Path:
    """Record ``placement`` as the one the ``run`` (build, reextract, extract) of ``work`` used."""
    from pipeline.core import tables

    row = {**placement.as_dict(), "run": run, "recorded": datetime.now(UTC).replace(microsecond=0)}
    return tables.write_table([row], tables.PLACEMENT, placement_path(work))


def read_placement(work: str | Path) -> Placement | None:
    """The placement recorded in ``work`` (None when no run recorded one)."""
    from pipeline.core import tables

    path = placement_path(work)
    if not path.exists():
        return None
    row = tables.read_file(path, tables.PLACEMENT).to_pylist()[0]
    return Placement(**{f.name: row[f.name] for f in dataclasses.fields(Placement)})


def run_placement(
    work: str | Path,
    config: Mapping[str, Any] | None,
    device: str | None,
    precision: str | None,
    *,
    backends: Mapping[str, str],
) -> Placement:
    """The placement a run on an existing ``work`` directory uses: :func:`resolve_placement` with
    the work directory's record filling in what the flags and the configuration leave open."""
    return resolve_placement(config, device, precision, backends=backends, recorded=read_placement(work))


def checked_placement(
    work: str | Path,
    config: Mapping[str, Any] | None,
    device: str | None,
    precision: str | None,
    *,
    backends: Mapping[str, str],
    recorded: bool = True,
) -> Placement:
    """A command's placement: :func:`run_placement` (``recorded``: the work directory's record fills
    in what the flags leave open) or :func:`resolve_placement` (a build decides afresh). A precision
    the device refuses or an unknown backend is a ConfigError (one line, exit 2); a device this
    machine lacks stays the InputError it is."""
    from pipeline.core.config import ConfigError
    from pipeline.core.errors import InputError

    try:
        if recorded:
            return run_placement(work, config, device, precision, backends=backends)
        return resolve_placement(config, device, precision, backends=backends)
    except (ConfigError, InputError):
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from err


def recorded_place(work: str | Path, report: Mapping[str, Any] | None = None) -> tuple[str | None, str | None]:
    """``(precision, device)`` the features of ``work`` were made with, as the release compares
    identities: the recorded placement, else the last build report's (``report``), else unknown."""
    recorded = read_placement(work)
    if recorded is not None:
        return recorded.precision, recorded.device
    report = report or {}
    return report.get("precision"), report.get("device")
