"""The one per-clip extraction loop, and the extraction stage's one driver.

:func:`run_extraction` is the stage: ``vdv extract``, the flows and the sports benchmark call it
with the clips and an :class:`ExtractionPlan` (:func:`plan_extraction`: modalities, their config
sections, device and precision resolved once). It orders the clips longest first, hands each to
:func:`attempt_clip` (in this process, or mapped by the caller over its workers: ``run_clips``),
records the rejections and returns an :class:`ExtractionRun`. :func:`attempt_clip` is one clip
under the attempt ledger (:mod:`pipeline.core.attempts`): a clip two workers died on is rejected,
otherwise :func:`extract_clip` runs it.

:func:`extract_clip` is the unit of work (one task per clip, on threads, processes or Dask
workers):

1. each modality whose current shard exists (same identity, and the sha256 recorded when it was
   written) is skipped, unless ``force``; the clip file is confirmed to be the ingested content
   (:func:`pipeline.core.checksums.confirm_clip`) before it is decoded;
2. the clip is decoded once (:func:`pipeline.core.decode.decode_pass`) for the grids of the
   modalities left, and every sample goes to its modality's consumer; a modality that fails on
   this clip (``ClipError``) is dropped from the pass and recorded, the others go on;
3. each finished sequence is written as that modality's shard (atomically).

Which modalities share a pass never changes a shard: each grid is sampled and resized straight
from the decoded frames, and a shard's identity depends on its own extractor only.

Only a bad clip (:class:`~pipeline.core.errors.ClipError`) becomes a rejection. Anything else that
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.core import checksums, tables
from pipeline.core.attempts import MAX_DEATHS, AttemptLedger
from pipeline.core.batching import close_servers
from pipeline.core.config import ConfigError, section_config
from pipeline.core.decode import DecodeParams, PassShared, Sample, decode_pass
from pipeline.core.errors import ClipError, Reason, disk_full, rejection_row
from pipeline.core.placement import Placement
from pipeline.core.runtime import configure_threads, worker_name
from pipeline.modalities import registry as modalities
from pipeline.modalities.features import FeatureExtractor

log = logging.getLogger(__name__)

STAGE = "extract:{modality}"
COMPUTED, SKIPPED, REJECTED = "computed", "skipped", "rejected"
DISCARDED = "discarded"  # computed in a pass whose rider (the pixel rules) rejected the clip: not written


@dataclass
class Rider:
    """A grid that rides along a clip's extraction pass (the node build's pixel rules,
    :mod:`pipeline.extraction.onepass`): ``push`` gets each sample of ``params``' grid; after the pass,
    ``finish(error)`` (the decoder's error, or None) says whether the features are written."""

    params: DecodeParams
    push: Callable[[Sample], None]
    finish: Callable[[ClipError | None], bool]


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
    """Configuration section ``[extract]``: how the networks run (``pipeline.core.runtime``)."""

    precision: str = "auto"  # auto | bfloat16 | float32, resolved once per build
    threads: int | None = None  # torch threads per clip in flight; None: the cores shared out
    # screen and extract a clip in one decode pass (pipeline.extraction.onepass): auto (on CUDA) | true | false
    one_pass: str | bool = "auto"

    def __post_init__(self):
        from pipeline.core.runtime import PRECISIONS

        if self.one_pass not in ("auto", True, False):
            raise ValueError(f"[extract] one_pass must be auto, true or false, got {self.one_pass!r}")

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
    precision: str = "float32"  # resolved once for the build (pipeline.core.placement)
    threads: int | None = None  # torch threads of each clip processed at once in a process
    pose_backend: str = "mediapipe"  # [pose] backend resolved once (pipeline.core.placement)
    vibe_backend: str = "numpy"  # [scenic] vibe_backend resolved once
    blazepose_precision: str = "float32"  # the torch BlazePose's precision

    @classmethod
    def make(
        cls,
        wanted: Iterable[str],
        config: Mapping[str, Any],
        *,
        untrained: bool = False,
        device: str | None = None,
        precision: str = "float32",
        threads: int | None = None,
        placement: Placement | None = None,
    ) -> ExtractionPlan:
        """The plan of ``placement`` (else of ``device`` and ``precision``, resolved here)."""
        from pipeline.core.placement import resolve_placement

        chosen = modalities.ordered(wanted)
        placement = placement or resolve_placement(
            config, device, precision, backends=modalities.backend_settings(config)
        )
        sections = modalities.resolved_sections(chosen, config, placement=placement)
        return cls(
            chosen,
            json.dumps(sections, sort_keys=True),
            untrained,
            placement.device,
            placement.precision,
            threads,
            placement.pose_backend,
            placement.vibe_backend,
            placement.blazepose_precision,
        )

    @property
    def placement(self) -> Placement:
        """The build's placement this plan was made for."""
        return Placement(
            self.device or "cpu", self.precision, self.pose_backend, self.vibe_backend, self.blazepose_precision
        )

    def section(self, modality: str) -> dict:
        return json.loads(self.sections)[modality]


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
    decoded_frames: int = 0  # frames out of the codec in this clip's pass (the same on each of its items)

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
            _import_torchvision()
            _CACHE[key] = {
                m: modalities.build(
                    m, plan.section(m), untrained=plan.untrained, device=plan.device, precision=plan.precision
                )
                for m in plan.modalities
            }
            _warn_unshared(_CACHE[key])
        return _CACHE[key]


def _import_torchvision() -> None:
    """torchvision's models, imported once from one thread (see :func:`load_extractors`)."""
    try:
        import torchvision.models  # noqa: F401
    except ImportError:
        pass  # only the network modalities need it; they say so when they are built


def _warn_unshared(extractors: Mapping[str, FeatureExtractor]) -> None:
    """Say so when extractors of one build could share a per-clip run (``shared_run``) but their
    keys differ: each then computes it on its own (pose and scenic's mask: BlazePose twice a frame)."""
    runs: dict[str, dict] = {}
    for modality, extractor in extractors.items():
        run = extractor.shared_run()
        if run is not None:
            if run.kind not in modalities.get(modality).shares:
                raise RuntimeError(f"the {modality} extractor shares a {run.kind} run its record does not declare")
            runs.setdefault(run.kind, {})[modality] = run
    for kind, users in runs.items():
        keys = {run.key for run in users.values()}
        if len(keys) > 1:
            log.warning(
                "%s runs %s per frame: %s run it with different grids or settings (%s); %s",
                kind,
                "twice" if len(keys) == 2 else f"{len(keys)} times",
                " and ".join(users),
                "; ".join(f"{m}: {run.key}" for m, run in users.items()),
                "; ".join(dict.fromkeys(run.hint for run in users.values())),
            )


def extract_clip(
    clip: Mapping[str, Any],
    extractors: Mapping[str, FeatureExtractor],
    work: str | Path,
    *,
    force: bool = False,
    decode: DecodeConfig = DecodeConfig(),
    confirm: bool = True,
    rider: Rider | None = None,
) -> list[ItemResult]:
    """Every modality of ``extractors`` for one clip (``clip_id``, ``path``[, ``video_id``]).

    Returns one :class:`ItemResult` per modality. Never raises for a bad clip. A shard is reused
    only when it is the file its writer recorded (:mod:`pipeline.core.checksums`); before decoding,
    the clip file must still hash to ``clip_id`` (``clip_changed`` otherwise), unless ``confirm``
    is False (clips whose ids are not their files' sums: the sports benchmark's samples).
    ``rider``: a grid served by the same pass (:class:`Rider`), when there is a pass; its
    ``finish`` returning False leaves every computed modality ``discarded`` (nothing written).
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
        if not force and _reusable(extractor, work, clip_id):
            results[modality] = item(modality, SKIPPED)
        else:
            todo[modality] = extractor
    if todo and not Path(path).is_file():
        missing = ClipError(clip_id, Reason.NO_CLIP, f"{path} does not exist")
        results.update({m: item(m, REJECTED, err=missing) for m in todo})
        todo = {}
    if todo and confirm:
        try:  # its pixels are about to be used: the file must still be the ingested content
            checksums.confirm_clip(work, clip_id, path)
        except ClipError as err:
            results.update({m: item(m, REJECTED, err=err) for m in todo})
            todo = {}
    if todo:
        passed, frames = _one_pass(clip_id, path, todo, work, decode, item, rider)
        for found in passed.values():
            found.decoded_frames = frames
        results.update(passed)
    return [results[m] for m in extractors]


def _reusable(extractor: FeatureExtractor, work: str | Path, clip_id: str) -> bool:
    """Whether the clip's current shard exists and is the file its writer recorded; a damaged
    or unrecorded one is named in the log and computed again."""
    check = extractor.check_shard(work, clip_id)
    if check.status in ("unrecorded", "differs"):
        log.warning("%s %s: shard not reused, computed again: %s", extractor.modality, clip_id[:12], check.why())
    return check.ok


def _one_pass(clip_id, path, todo, work, decode: DecodeConfig, item, rider=None) -> tuple[dict[str, ItemResult], int]:
    """The pass of one clip: its items, and the frames the codec put out for it."""
    grids = []  # distinct grids; modalities with equal grids share their samples
    grid_of: dict[str, int] = {}
    for modality, extractor in todo.items():
        params = extractor.decode_params()
        if params not in grids:
            grids.append(params)
        grid_of[modality] = grids.index(params)
    if rider is not None and rider.params not in grids:
        grids.append(rider.params)
    rider_grid = None if rider is None else grids.index(rider.params)
    error: ClipError | None = None
    frames = 0
    shared = PassShared()  # extractors with equal shared_run keys share it (pose and scenic: one BlazePose track)
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
                    if grid == rider_grid:
                        rider.push(sample)
                    for modality in [m for m in consumers if grid_of[m] == grid]:
                        t0 = time.monotonic()
                        try:
                            consumers[modality].push(sample)
                        except ClipError as err:
                            drop(modality, err)
                        except Exception as err:  # noqa: BLE001 - this clip's failure; the run goes on
                            _not_a_full_disk(err)
                            log.exception("%s failed on %s", modality, path)
                            drop(modality, ClipError(clip_id, Reason.EXTRACT_FAILED, f"{type(err).__name__}: {err}"))
                        finally:
                            seconds[modality] += time.monotonic() - t0
                    if not consumers and rider is None:
                        break
            except ClipError as err:  # the decoder's: every modality still in the pass shares it
                error = err
                for modality in list(consumers):
                    drop(modality, err)
            info = one.info
        frames = one.frames_decoded
        if rider is not None and not rider.finish(error):
            for modality in list(consumers):
                results[modality] = item(modality, DISCARDED, seconds[modality])
                consumers.pop(modality).close()
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
                _not_a_full_disk(err)
                log.exception("%s failed on %s", modality, path)
                drop(modality, ClipError(clip_id, Reason.EXTRACT_FAILED, f"{type(err).__name__}: {err}"))
                continue
            seconds[modality] += time.monotonic() - t0
            results[modality] = item(modality, COMPUTED, seconds[modality])
            consumers.pop(modality).close()
    finally:
        for consumer in consumers.values():
            consumer.close()
    return results, frames


def _not_a_full_disk(err: BaseException) -> None:
    """Raise :class:`~pipeline.core.errors.DiskFull` when ``err`` is a full device: the machine's
    fault, never the clip's, so it stops the run instead of becoming an ``extract_failed``."""
    if (full := disk_full(err)) is not None:
        raise full from err


def _write_preview(work: str | Path, modality: str, clip_id: str, preview) -> None:
    """A modality's picture for the build report, in its record's ``preview`` folder (scenic: one
    background image per clip, ``<work>/report/backgrounds/``); none without one.

    It comes from the pass that computed the features, so the report decodes nothing. For people
    only: a failure is logged, never a rejection.
    """
    import cv2

    kind = modalities.get(modality).preview
    if kind is None:
        return
    t, image = preview
    target = tables.preview_path(work, kind.folder, clip_id, int(round(t * 1000)))
    try:
        ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError("PNG encoding failed")
        tables.atomic_write(target, lambda tmp: tmp.write_bytes(data.tobytes()))
        old = tables.preview_dir(work, kind.folder).glob(f"{clip_id[:16]}.*.png")  # flat, before the fan-out
        for stale in [*target.parent.glob(f"{clip_id[:16]}.*.png"), *old]:
            if stale != target:
                stale.unlink(missing_ok=True)
    except OSError as err:
        _not_a_full_disk(err)
        log.warning("no report picture for %s %s: %s", modality, clip_id[:12], err)


def plan_extraction(
    wanted: Iterable[str],
    config: Mapping[str, Any],
    *,
    untrained: bool = False,
    device: str | None = None,
    precision: str | None = None,
    in_flight: int | None = None,
    placement: Placement | None = None,
) -> ExtractionPlan:
    """The plan of an extraction stage: the run's ``placement`` (else resolved here once from
    ``device``, ``precision`` and the configuration, :func:`pipeline.core.placement.resolve_placement`),
    torch threads per clip (``[extract] threads``, else the cores shared among ``in_flight``
    clips). A device or precision the machine refuses is a ConfigError."""
    from pipeline.core.placement import resolve_placement
    from pipeline.core.runtime import threads_per_task

    section = extract_config(config)
    decode_config(config)  # a bad [decode] section fails here, not in every clip
    try:
        placement = placement or resolve_placement(
            config, device, precision, backends=modalities.backend_settings(config)
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    threads = section.threads or (threads_per_task(in_flight) if in_flight else None)
    return ExtractionPlan.make(wanted, config, untrained=untrained, threads=threads, placement=placement)


def attempt_clip(
    work: str,
    clip: Mapping[str, Any],
    plan: ExtractionPlan,
    decode: Mapping[str, Any],
    attempts: str,
    force: bool = False,
    confirm: bool = True,
) -> list[ItemResult]:
    """Every modality of ``plan`` for one clip, under the run's attempt ledger (``attempts``).

    The clip is marked there while it is worked on; a clip whose marks show that
    :data:`~pipeline.core.attempts.MAX_DEATHS` workers died on it is rejected ``worker_died`` without
    running again. The extractors are this process's (:func:`load_extractors`).
    """
    ledger = AttemptLedger(attempts)
    dead = ledger.dead(clip["clip_id"])
    if len(dead) >= MAX_DEATHS:
        message = f"{len(dead)} worker processes died while extracting it ({', '.join(dead)})"
        log.warning("%s: rejected (worker_died) %s", clip["clip_id"][:12], message)
        return worker_died(clip, plan.modalities, message)
    extractors = load_extractors(plan)
    with ledger.attempt(clip["clip_id"], worker_name()):
        items = extract_clip(
            clip, extractors, work, force=force, decode=decode_config({"decode": dict(decode)}), confirm=confirm
        )
    for it in items:
        if it.status == REJECTED:
            log.warning("%s %s: rejected (%s) %s", it.modality, it.clip_id[:12], it.reason, it.message)
    return items


@dataclass
class ExtractionRun:
    """What an extraction stage did: its plan and one item per clip x modality, in clip order."""

    plan: ExtractionPlan
    items: list[ItemResult]

    def totals(self) -> dict[str, dict]:
        """Per modality of the plan: computed, skipped, failed and seconds (:func:`totals`)."""
        found = totals(self.items)
        return {m: found.get(m, dict(computed=0, skipped=0, failed=0, seconds=0.0)) for m in self.plan.modalities}

    def summary(self) -> dict:
        """The JSON-able record of the stage (a build's report): resolved precision, device and
        BlazePose backend, every item, the totals."""
        return {
            "precision": self.plan.precision,
            "device": self.plan.device,
            "pose_backend": self.plan.pose_backend,
            "items": [it.as_dict() for it in self.items],
            "extract": self.totals(),
        }


def _in_this_process(jobs: list[dict], show_progress: bool | None = None):
    """Each job's clip and items, one clip after the other, with a progress bar on a terminal
    (``show_progress`` False: none)."""
    from pipeline.core.progress import progress

    names = " ".join(jobs[0]["plan"].modalities) if jobs else ""
    with progress(len(jobs), f"extract {names}", unit="clip", enabled=show_progress) as bar:
        for job in jobs:
            yield job["clip"], attempt_clip(**job)
            bar.update()


def run_extraction(
    work: str | Path,
    clips: Sequence[Mapping[str, Any]],
    plan: ExtractionPlan,
    *,
    decode: Mapping[str, Any] | None = None,
    force: bool = False,
    run_clips=None,
    show_progress: bool | None = None,
    confirm: bool = True,
) -> ExtractionRun:
    """The extraction stage: every modality of ``plan`` for ``clips`` (``clip_id``, ``path``[,
    ``video_id``, ``duration_s``]), the rejections recorded (:func:`record_rejections`).

    Clips go longest first (the last to start are short, so no worker is left with a long one
    while the others idle: the longest-processing-time-first rule). ``run_clips(jobs)`` runs them:
    each job is the keyword arguments of :func:`attempt_clip`, and it yields ``(clip, items)``
    per clip; the default runs them in this process, one after the other (``show_progress``
    False: without a progress bar). ``decode``: the ``[decode]`` section. ``confirm`` False: the
    clips' ids are not their files' sha256 (:func:`extract_clip`). The batch servers its clips
    used in this process are closed at the end (:func:`pipeline.core.batching.close_servers`).
    """
    ledger = AttemptLedger.fresh(work)  # which clips a dead worker was on (pipeline.core.attempts)
    base = {"work": str(work), "plan": plan, "decode": dict(decode or {}), "force": force, "attempts": str(ledger.root)}
    if not confirm:
        base["confirm"] = False
    jobs = [
        {**base, "clip": dict(clip)}
        for clip in sorted(clips, key=lambda c: (-(c.get("duration_s") or 0.0), c["clip_id"]))
    ]
    try:
        ran = run_clips(jobs) if run_clips is not None else _in_this_process(jobs, show_progress)
        items = [it for _, found in ran for it in found]
    finally:
        ledger.clear()
        close_servers()  # the clips of this run are done with this process's batch servers
    order = {c["clip_id"]: i for i, c in enumerate(clips)}
    items.sort(key=lambda it: (order[it.clip_id], plan.modalities.index(it.modality)))
    record_rejections(work, items)
    return ExtractionRun(plan, items)


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
    """Remove hidden temporary files under ``features/`` left by a killed run, and fold the
    checksum ledger's per-process segments into its table (:func:`pipeline.core.checksums.fold`).

    ``tables.atomic_write`` writes ``.<name>.<random>.tmp`` and renames it into place; a process
    killed in between leaves the temporary file, which readers already ignore. Run it only while
    holding the work directory's lock (:mod:`pipeline.core.lock`): then no other writer is in flight.
    """
    checksums.fold(work)
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
