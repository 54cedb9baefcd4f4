"""Thin Prefect tasks over the ``pipeline`` stages, mapped over clips where the work is per clip.

Each task calls one ``pipeline`` function and returns a small, picklable summary (a dict) so that
it can run in a thread, a process or on a Dask worker. The per-clip tasks (:func:`screen_clip`,
:func:`extract_clip`) are the units a cluster spreads out: a Dask cluster of N workers keeps N
workers busy, and a worker process loads each model once (``pipeline.extraction.stage.load_extractors``
caches them per process) and reuses it for every clip it is given.

Retries are set only where a failure can be transient I/O (reading the raw directory, writing
the release), and only for ``OSError``: a data or configuration error fails the same way on a
retry and is reported at once. One clip's failure is recorded as a rejection and the other clips
go on; a failure of the run itself (missing weights, an import or device error) fails the task.

Everything a task needs comes in as arguments (paths as strings, the configuration as a plain
mapping, an :class:`~pipeline.extraction.stage.ExtractionPlan`), never as live objects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from pipeline import stages
from pipeline.core import tables
from pipeline.core.placement import Placement
from pipeline.extraction import stage as extraction
from pipeline.extraction.stage import ExtractionPlan

STATE_DIR = "flow_state"  # <work>/flow_state/: what the flows remember between runs (JSON)


def _log() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run (``.fn`` in tests) log to the module logger
        return logging.getLogger(__name__)


def transient_io(task, task_run, state) -> bool:
    """Retry condition: only an ``OSError`` (an NFS hiccup) is worth a retry; a full disk is
    not (it stops the run, with one line naming the directory)."""
    from pipeline.core.errors import disk_full

    try:
        state.result()
    except OSError as err:
        return disk_full(err) is None
    except Exception:  # noqa: BLE001 - any other failure is final
        return False
    return False


# -- rule stages ----------------------------------------------------------------------------------


def clip_files(raw_dir: str, config: Mapping[str, Any]) -> list[str]:
    """The clip files that ingest probes (``pipeline.ingest.stage.clip_files``)."""
    from pipeline.core.config import stage_config
    from pipeline.ingest import stage

    return [str(p) for p in stage.clip_files(raw_dir, stage_config(stage.IngestConfig, dict(config), "ingest"))]


@task(name="probe-clip", tags=["probe"])
def probe_clip(path: str, config: Mapping[str, Any]) -> dict:
    """One clip file's content id and probe (``pipeline.ingest.stage.probe_file``), on any worker."""
    from pipeline.core.config import stage_config
    from pipeline.ingest import stage

    return stage.probe_file(path, stage_config(stage.IngestConfig, dict(config), "ingest"))


@task(name="ingest", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def ingest(
    raw_dir: str,
    work: str,
    config: Mapping[str, Any],
    pairing: str | None = None,
    crawl_time: str | None = None,
    probed: Mapping[str, Mapping[str, Any]] | None = None,
    overrides: str | None = None,
) -> dict:
    """The ingest stage (:func:`pipeline.stages.run_ingest`) on ``raw_dir``, writing ``clips`` and
    its rejections; ``probed``: the files already probed by ``probe_clip`` tasks, by path;
    ``overrides``: the reviewer override CSV (a keep admits a clip judged a duplicate)."""
    result = stages.run_ingest(
        raw_dir, work, config, pairing=pairing, crawl_time=crawl_time, probed=probed, override_file=overrides
    )
    summary = stages.ingest_summary(result)
    _log().info(
        "ingest: %d clip(s) accepted, %d rejected %s", summary["clips"], summary["rejected"], summary["reasons"]
    )
    return summary


@task(name="pixel-rules", tags=["screen"])
def screen_clip(
    work: str, clip: Mapping[str, Any], config: Mapping[str, Any], placement: Placement | None = None
) -> dict:
    """The pixel rules of one clip, stored in its ``pixel_rules`` shard (reused while current),
    the people counter on the run's ``placement``."""
    from pipeline.screening.stage import PixelRules

    pixels = PixelRules(config, work, thumbnails=True, placement=placement)
    results, computed = pixels.run(clip)
    return {
        "clip_id": clip["clip_id"],
        "computed": computed,
        "changed": pixels.changed,  # the file is no longer the ingested content: neither computed nor reused
        "passed": all(r.passed for r in results),
        "decoded_frames": pixels.decoded_frames,
    }


@task(name="pixel-rules-and-extract", tags=["screen", "extract"])
def screen_extract_clip(work: str, clip: Mapping[str, Any], config: Mapping[str, Any], plan: ExtractionPlan) -> dict:
    """The pixel rules of one clip and, when they pass, its features, from one decode pass
    (:func:`pipeline.extraction.onepass.screen_and_extract`)."""
    from pipeline.extraction.onepass import screen_and_extract

    return screen_and_extract(work, clip, config, plan)


@task(name="screen")
def screen(
    work: str, config: Mapping[str, Any], overrides: str | None = None, placement: Placement | None = None
) -> dict:
    """The screen stage (:func:`pipeline.stages.run_screen`): the cheap rules again, the pixel
    rules from their per-clip shards (computed here only for a clip whose task did not store them)."""
    result = stages.run_screen(work, config, overrides=overrides, placement=placement)
    summary = stages.screen_summary(result)
    _log().info("screen: %d kept, %d rejected", summary["kept"], summary["rejected"])
    for note in result.notes:
        _log().warning("screen: %s", note)
    return summary


@task(name="score")
def score(work: str, config: Mapping[str, Any]) -> dict:
    """The score stage (:func:`pipeline.stages.run_score`) over the kept clips (scale fitted on them)."""
    result = stages.run_score(work, config)
    for warning in result.warnings:
        _log().warning("score: %s", warning)
    summary = stages.score_summary(result)
    _log().info("score: %d clip(s) scored in %d challenge(s)", summary["scored"], len(summary["challenges"]))
    return summary


# -- feature extraction ---------------------------------------------------------------------------


def check_worker(plan: ExtractionPlan) -> str:
    """Build (and cache) the plan's extractors in this process: the weights load and verify, the
    libraries import, the device answers. Raises the run's error; returns this worker's name."""
    extraction.load_extractors(plan)
    return extraction.worker_name()


# No retries: a clip's failure is the data, which a retry does not change. A worker that dies
# is a different matter: the flow's runner gives the clip one more worker (see flows/build.py).
@task(name="extract-clip", tags=["extract"])
def extract_clip(job: Mapping[str, Any]) -> list[dict]:
    """Every modality of one clip, from one decode pass, under the run's attempt ledger; one item
    dict per modality. ``job``: the keyword arguments of :func:`pipeline.extraction.stage.attempt_clip`
    (work, clip, plan, decode, attempts, force), as :func:`pipeline.extraction.stage.run_extraction`
    hands them out."""
    return [it.as_dict() for it in extraction.attempt_clip(**job)]


# -- training and release -------------------------------------------------------------------------


@task(name="train")
def train(source: str, out_dir: str, config: Mapping[str, Any], track: str = "all") -> dict:
    """The training stage on a release or work directory (``models.train.train_track``)."""
    from models.data import open_source
    from models.train import TrainConfig, train_track
    from pipeline.core.config import stage_config

    cfg = stage_config(TrainConfig, dict(config), "train")
    # the model is built from the run's [psgcn] / [rtcn] / [multimodal] sections, as `vdv train` does
    result = train_track(open_source(source), track, out_dir, cfg, sections=dict(config))
    history = list(getattr(result, "history", []) or [])
    summary = {
        "out_dir": out_dir,
        "track": track,
        "checkpoint": str(getattr(result, "checkpoint", None) or ""),
        "epochs": len(history),
        "last": history[-1] if history else None,
    }
    _log().info("train: %d epoch(s), checkpoint %s", summary["epochs"], summary["checkpoint"])
    return json.loads(json.dumps(summary, default=str))


# writes many files: a full disk or an NFS hiccup can pass; nothing else is retried
@task(name="release", retries=1, retry_delay_seconds=2, retry_condition_fn=transient_io)
def package(
    work: str,
    out: str,
    config: Mapping[str, Any],
    allow_untrained: bool = False,
    salt: str | None = None,
    build_info: Mapping | None = None,
    precision: str | None = None,
    device: str | None = None,
) -> dict:
    """The release stage (:func:`pipeline.release.release_stage`); fails if verification fails.

    ``precision`` and ``device``: what the build resolved, so that identities are compared with
    what it computed."""
    from pipeline.release import release_stage

    run = release_stage(
        work,
        out,
        config,
        allow_untrained=allow_untrained,
        salt=salt,
        build_info=build_info,
        precision=precision,
        device=device,
    )
    if not run.checked.ok:
        raise RuntimeError(f"release {run.summary.path} failed verification: {run.checked.problems[:5]}")
    _log().info("release: %s (%s), verified", run.summary.path, run.summary.counts)
    if run.summary.untrained_modalities:
        _log().warning(
            "release: features of %s come from UNTRAINED weights (allowed explicitly)", run.summary.untrained_modalities
        )
    return run.as_dict()


# -- flow state -----------------------------------------------------------------------------------


def read_state(work: str | Path, name: str) -> dict:
    path = Path(work) / STATE_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_state(work: str | Path, name: str, state: Mapping) -> None:
    path = Path(work) / STATE_DIR / f"{name}.json"
    text = json.dumps(dict(state), indent=2, sort_keys=True, default=str)
    tables.atomic_write(path, lambda tmp: tmp.write_text(text))
