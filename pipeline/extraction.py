"""The one per-clip extraction loop: every requested modality of a clip from one decode pass.

:func:`extract_clip` is the unit of work that ``vdv extract`` runs in a loop and the flows map
over clips (one task per clip, on threads, processes or Dask workers):

1. each modality whose current shard exists (same identity) is skipped, unless ``force``;
2. the clip is decoded once (:func:`pipeline.decode.decode_pass`) for the grids of the
   modalities left, and every sample goes to its modality's consumer; a modality that fails on
   this clip (``ClipError``) is dropped from the pass and recorded, the others go on;
3. each finished sequence is written as that modality's shard (atomically).

Which modalities share a pass never changes a shard: each grid is sampled and resized straight
from the decoded frames, and a shard's identity depends on its own extractor only.

Only a bad clip (:class:`~pipeline.errors.ClipError`) becomes a rejection. Anything else that
escapes a consumer is this clip's ``extract_failed``, except the failures of the run itself
(missing or corrupt weights, an import or device error), which :func:`load_extractors` raises
before any clip is touched, so that they fail the run with one message instead of rejecting
every clip a worker gets.

:func:`load_extractors` keeps the extractors of a process in a cache, so a worker loads each
model once and reuses it for every clip it is given.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline import tables
from pipeline.config import section_config
from pipeline.decode import decode_pass
from pipeline.errors import ClipError, Reason, rejection_row
from pipeline.features import FeatureExtractor, PassShared
from pipeline.runtime import configure_threads, worker_name

log = logging.getLogger(__name__)

MODALITIES = tables.MODALITIES

STAGE = "extract:{modality}"
COMPUTED, SKIPPED, REJECTED = "computed", "skipped", "rejected"


@dataclass(frozen=True)
class DecodeConfig:
    """Configuration section ``[decode]``."""

    # seconds a clip may spend inside the decoder (demux, decode, resize) in one extraction
    # pass; model time does not count. A clip over it is rejected decode_timeout.
    time_budget_s: float | None = 600.0

    def __post_init__(self):
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"[decode] time_budget_s must be positive, got {self.time_budget_s}")


@dataclass(frozen=True)
class ExtractConfig:
    """Configuration section ``[extract]``: how the networks run (``pipeline.runtime``)."""

    precision: str = "auto"  # auto | bfloat16 | float32, resolved once per build
    threads: int | None = None  # torch threads per clip in flight; None: the cores shared out

    def __post_init__(self):
        from pipeline.runtime import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ValueError(f"[extract] precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"[extract] threads must be at least 1, got {self.threads}")


@dataclass(frozen=True)
class ExtractionPlan:
    """What a worker needs to build the extractors: plain values, so it travels to any process."""

    modalities: tuple[str, ...]
    sections: str  # JSON of {modality: its config section}
    untrained: bool = False
    device: str | None = None
    precision: str = "float32"  # resolved once for the build (pipeline.runtime.resolve_precision)
    threads: int | None = None  # torch threads of each clip processed at once in a process
    pose_backend: str = "mediapipe"  # [pose] backend resolved once (pipeline.pose.resolve_backend)

    @classmethod
    def make(
        cls,
        modalities: Iterable[str],
        config: Mapping[str, Any],
        *,
        untrained: bool = False,
        device: str | None = None,
        precision: str = "float32",
        threads: int | None = None,
    ) -> ExtractionPlan:
        modalities = tuple(m for m in MODALITIES if m in set(modalities))
        sections, backend = resolved_sections(modalities, config, device)
        return cls(modalities, json.dumps(sections, sort_keys=True), untrained, device, precision, threads, backend)

    def section(self, modality: str) -> dict:
        return json.loads(self.sections)[modality]


def resolved_sections(
    modalities: Iterable[str], config: Mapping[str, Any], device: str | None
) -> tuple[dict[str, dict], str]:
    """Each modality's config section as a build on ``device`` runs it, and the BlazePose backend.

    ``[pose] backend`` is resolved once (``auto``: torch on CUDA, mediapipe on the CPU) and is
    also the backend of scenic's person mask, unless ``[scenic] mask_backend`` names one, so that
    pose and scenic share one BlazePose run. The release resolves the same way to recompute
    identities.
    """
    from pipeline.pose import resolve_backend

    sections = {m: dict(config.get(m, {})) for m in modalities}
    backend = resolve_backend(dict(config.get("pose", {})).get("backend", "auto"), device)
    if "pose" in sections:
        sections["pose"]["backend"] = backend
    if "scenic" in sections:
        sections["scenic"].setdefault("mask_backend", backend)
    return sections, backend


@dataclass
class ItemResult:
    """One clip x modality of a build: computed, skipped (shard current) or rejected."""

    clip_id: str
    modality: str
    status: str
    seconds: float = 0.0  # the modality's own compute time on this clip (its share of the pass)
    worker: str = ""  # host:pid of the process that did it
    reason: str | None = None
    message: str | None = None
    video_id: str | None = None
    path: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def rejection(self) -> dict:
        return rejection_row(
            STAGE.format(modality=self.modality),
            Reason(self.reason),
            self.message or "",
            clip_id=self.clip_id,
            video_id=self.video_id,
            path=self.path,
        )


def worker_died(clip: Mapping[str, Any], modalities: Iterable[str], message: str) -> list[ItemResult]:
    """The ``worker_died`` rejection of ``clip`` in each modality: its workers died on it."""
    return [
        ItemResult(
            clip["clip_id"],
            m,
            REJECTED,
            reason=Reason.WORKER_DIED.value,
            message=message,
            video_id=clip.get("video_id"),
            path=str(clip["path"]),
        )
        for m in modalities
    ]


_CACHE: dict[tuple, dict[str, FeatureExtractor]] = {}
_CACHE_LOCK = threading.Lock()


def build_extractor(
    modality: str, section: Mapping[str, Any], *, untrained: bool, device: str | None, precision: str
) -> FeatureExtractor:
    """The modality module's ``build_extractor`` on its config section."""
    import importlib

    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; known: {list(MODALITIES)}")
    module = importlib.import_module(f"pipeline.{modality}")
    return module.build_extractor(dict(section), untrained=untrained, device=device, precision=precision)


def load_extractors(plan: ExtractionPlan) -> dict[str, FeatureExtractor]:
    """The plan's extractors, built once per process and reused (a model is loaded once).

    Built under a lock: the extractors import torch and torchvision lazily, and the first import
    of torchvision from several threads at once fails half-initialised. Raises the run's errors
    (``WeightsError``, ``ImportError``, a device error) for the caller to report.
    """
    key = (plan.modalities, plan.sections, plan.untrained, plan.device, plan.precision)
    with _CACHE_LOCK:
        configure_threads(plan.threads)
        if key not in _CACHE:
            import importlib.util

            if importlib.util.find_spec("torchvision") is not None:
                importlib.import_module("torchvision.models")
            _CACHE[key] = {
                m: build_extractor(
                    m, plan.section(m), untrained=plan.untrained, device=plan.device, precision=plan.precision
                )
                for m in plan.modalities
            }
            _warn_unshared(_CACHE[key])
        return _CACHE[key]


def _warn_unshared(extractors: Mapping[str, FeatureExtractor]) -> None:
    """Say so when pose and scenic run in one build on different grids: each then runs BlazePose
    on every frame, where one shared run would do (``pipeline.pose.PoseTrack``)."""
    pose, scenic = extractors.get("pose"), extractors.get("scenic")
    if pose is not None and scenic is not None and pose.track_key() != scenic.track_key():
        log.warning(
            "pose and scenic's person mask track with different grids or settings (%s against %s), so BlazePose "
            "runs twice per frame; set [scenic] mask_max_side to [pose] max_side (and the same fps, no end_s, "
            "the same detection and tracking confidences) to share one run",
            pose.track_key(),
            scenic.track_key(),
        )


def extract_clip(
    clip: Mapping[str, Any],
    extractors: Mapping[str, FeatureExtractor],
    work: str | Path,
    *,
    force: bool = False,
    decode: DecodeConfig = DecodeConfig(),
) -> list[ItemResult]:
    """Every modality of ``extractors`` for one clip (``clip_id``, ``path``[, ``video_id``]).

    Returns one :class:`ItemResult` per modality. Never raises for a bad clip.
    """
    clip_id, path = clip["clip_id"], str(clip["path"])
    me = worker_name()

    def item(modality: str, status: str, seconds: float = 0.0, err: ClipError | None = None) -> ItemResult:
        return ItemResult(
            clip_id,
            modality,
            status,
            round(seconds, 3),
            me,
            None if err is None else err.reason.value,
            None if err is None else err.message,
            clip.get("video_id"),
            path,
        )

    results: dict[str, ItemResult] = {}
    todo: dict[str, FeatureExtractor] = {}
    for modality, extractor in extractors.items():
        if not force and extractor.is_current(work, clip_id):
            results[modality] = item(modality, SKIPPED)
        else:
            todo[modality] = extractor
    if todo and not Path(path).is_file():
        missing = ClipError(clip_id, Reason.NO_CLIP, f"{path} does not exist")
        results.update({m: item(m, REJECTED, err=missing) for m in todo})
        todo = {}
    if todo:
        results.update(_one_pass(clip_id, path, todo, work, decode, item))
    return [results[m] for m in extractors]


def _one_pass(clip_id, path, todo, work, decode: DecodeConfig, item) -> dict[str, ItemResult]:
    grids = []  # distinct grids; modalities with equal grids share their samples
    grid_of: dict[str, int] = {}
    for modality, extractor in todo.items():
        params = extractor.decode_params()
        if params not in grids:
            grids.append(params)
        grid_of[modality] = grids.index(params)
    shared = PassShared()  # pose and scenic share one BlazePose track on their common grid
    consumers = {m: ex.consumer(clip_id, shared) for m, ex in todo.items()}
    seconds = dict.fromkeys(todo, 0.0)
    results: dict[str, ItemResult] = {}

    def drop(modality: str, err: ClipError) -> None:
        results[modality] = item(modality, REJECTED, seconds[modality], err)
        consumers.pop(modality).close()

    try:
        with decode_pass(path, grids, clip_id, budget_s=decode.time_budget_s) as one:
            try:
                for grid, sample in one:
                    for modality in [m for m in consumers if grid_of[m] == grid]:
                        t0 = time.monotonic()
                        try:
                            consumers[modality].push(sample)
                        except ClipError as err:
                            drop(modality, err)
                        except Exception as err:  # noqa: BLE001 - this clip's failure; the run goes on
                            log.exception("%s failed on %s", modality, path)
                            drop(modality, ClipError(clip_id, Reason.EXTRACT_FAILED, f"{type(err).__name__}: {err}"))
                        finally:
                            seconds[modality] += time.monotonic() - t0
                    if not consumers:
                        break
            except ClipError as err:  # the decoder's: every modality still in the pass shares it
                for modality in list(consumers):
                    drop(modality, err)
            info = one.info
        for modality, consumer in list(consumers.items()):
            t0 = time.monotonic()
            try:
                seq = consumer.finish(info)
                todo[modality].write(work, clip_id, seq)
                if seq.preview is not None:
                    _write_preview(work, modality, clip_id, seq.preview)
            except ClipError as err:
                drop(modality, err)
                continue
            except Exception as err:  # noqa: BLE001 - this clip's failure; the run goes on
                log.exception("%s failed on %s", modality, path)
                drop(modality, ClipError(clip_id, Reason.EXTRACT_FAILED, f"{type(err).__name__}: {err}"))
                continue
            seconds[modality] += time.monotonic() - t0
            results[modality] = item(modality, COMPUTED, seconds[modality])
            consumers.pop(modality).close()
    finally:
        for consumer in consumers.values():
            consumer.close()
    return results


def _write_preview(work: str | Path, modality: str, clip_id: str, preview) -> None:
    """A modality's picture for the build report (scenic: one background image per clip).

    It comes from the pass that computed the features, so the report decodes nothing. For people
    only: a failure is logged, never a rejection.
    """
    import cv2

    from pipeline.report import backgrounds_dir

    if modality != "scenic":
        return
    t, image = preview
    directory = backgrounds_dir(work)
    target = directory / f"{clip_id[:16]}.{int(round(t * 1000)):07d}ms.png"
    try:
        ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError("PNG encoding failed")
        tables.atomic_write(target, lambda tmp: tmp.write_bytes(data.tobytes()))
        for stale in directory.glob(f"{clip_id[:16]}.*.png"):
            if stale != target:
                stale.unlink(missing_ok=True)
    except OSError as err:
        log.warning("no report picture for %s %s: %s", modality, clip_id[:12], err)


def rejections_path(work: str | Path, modality: str) -> Path:
    """``<work>/rejections/rejections.extract-<modality>.parquet`` (stage ``extract:<modality>``)."""
    return tables.shard_path(work, "rejections", f"extract-{modality}")


def record_rejections(work: str | Path, items: Sequence[ItemResult]) -> dict[str, Path]:
    """Merge these items' rejections into each modality's rejection table.

    A clip attempted now drops its older rows (it succeeded, is current, or failed again and
    gets a fresh row), so the table always says why each clip is missing *now*.
    """
    written = {}
    by_modality: dict[str, list[ItemResult]] = {}
    for it in items:
        by_modality.setdefault(it.modality, []).append(it)
    for modality, group in by_modality.items():
        path = rejections_path(work, modality)
        attempted = {it.clip_id for it in group}
        old = tables.read_file(path, tables.REJECTIONS).to_pylist() if path.exists() else []
        rows = [r for r in old if r["clip_id"] not in attempted] + [
            it.rejection() for it in group if it.status == REJECTED
        ]
        if rows or path.exists():
            written[modality] = tables.write_table(rows, tables.REJECTIONS, path)
    return written


def totals(items: Iterable[ItemResult]) -> dict[str, dict]:
    """Per modality: computed, skipped, failed counts and the seconds spent computing."""
    out: dict[str, dict] = {}
    for it in items:
        t = out.setdefault(it.modality, {"computed": 0, "skipped": 0, "failed": 0, "seconds": 0.0})
        t["failed" if it.status == REJECTED else it.status] += 1
        t["seconds"] = round(t["seconds"] + it.seconds, 2)
    return out


def sweep_partial_files(work: str | Path) -> int:
    """Remove hidden temporary files under ``features/`` left by a killed run.

    ``tables.atomic_write`` writes ``.<name>.<random>.tmp`` and renames it into place; a process
    killed in between leaves the temporary file, which readers already ignore. Run it only while
    holding the work directory's lock (:mod:`pipeline.lock`): then no other writer is in flight.
    """
    root = Path(work) / "features"
    removed = 0
    for path in root.glob("*/.*.tmp") if root.is_dir() else ():
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def decode_config(config: Mapping[str, Any]) -> DecodeConfig:
    return section_config(DecodeConfig, dict(config.get("decode", {})), "decode")


def extract_config(config: Mapping[str, Any]) -> ExtractConfig:
    return section_config(ExtractConfig, dict(config.get("extract", {})), "extract")
