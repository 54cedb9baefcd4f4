"""Thin Prefect tasks over the ``pipeline`` stages, mapped over clips where the work is per clip.

Each task calls one ``pipeline`` function and returns a small, picklable summary (a dict) so that
it can run in a thread, a process or on a Dask worker. The per-clip tasks (:func:`screen_clip`,
:func:`extract_clip`) are the units a cluster spreads out: a Dask cluster of N workers keeps N
workers busy, and a worker process loads each model once (``pipeline.extraction.load_extractors``
caches them per process) and reuses it for every clip it is given.

Retries are set only where a failure can be transient I/O (reading the raw directory, writing
the release), and only for ``OSError``: a data or configuration error fails the same way on a
retry and is reported at once. One clip's failure is recorded as a rejection and the other clips
go on; a failure of the run itself (missing weights, an import or device error) fails the task.

Everything a task needs comes in as arguments (paths as strings, the configuration as a plain
mapping, an :class:`~pipeline.extraction.ExtractionPlan`), never as live objects.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from pipeline import extraction, tables
from pipeline.attempts import MAX_DEATHS, AttemptLedger
from pipeline.extraction import ExtractionPlan
from pipeline.runtime import worker_name

STATE_DIR = "flow_state"  # <work>/flow_state/: what the flows remember between runs (JSON)


def _log() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run (``.fn`` in tests) log to the module logger
        return logging.getLogger(__name__)


def transient_io(task, task_run, state) -> bool:
    """Retry condition: only an ``OSError`` (a full disk, an NFS hiccup) is worth a retry."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final
        return False
    return False


def kept_clips(work: str | Path) -> list[dict]:
    """Rows of the ``clips`` table that passed screening and got a score, ordered by clip id."""
    scored = set(tables.read_table(work, tables.SCORES).column("clip_id").to_pylist())
    clips = tables.read_table(work, tables.CLIPS).to_pylist()
    return sorted((c for c in clips if c["clip_id"] in scored), key=lambda c: c["clip_id"])


# -- rule stages ----------------------------------------------------------------------------------


def clip_files(raw_dir: str, config: Mapping[str, Any]) -> list[str]:
    """The clip files that ingest probes (``pipeline.ingest.clip_files``)."""
    from pipeline import ingest as stage
    from pipeline.config import stage_config

    return [str(p) for p in stage.clip_files(raw_dir, stage_config(stage.IngestConfig, dict(config), "ingest"))]


@task(name="probe-clip", tags=["probe"])
def probe_clip(path: str, config: Mapping[str, Any]) -> dict:
    """One clip file's content id and probe (``pipeline.ingest.probe_file``), on any worker."""
    from pipeline import ingest as stage
    from pipeline.config import stage_config

    return stage.probe_file(path, stage_config(stage.IngestConfig, dict(config), "ingest"))


@task(name="ingest", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def ingest(
    raw_dir: str,
    work: str,
    config: Mapping[str, Any],
    pairing: str | None = None,
    crawl_time: str | None = None,
    probed: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict:
    """``pipeline.ingest.prepare_clips`` on ``raw_dir``, writing ``clips`` and its rejections;
    ``probed``: the files already probed by ``probe_clip`` tasks, by path."""
    from pipeline import ingest as stage
    from pipeline.config import stage_config

    cfg = stage_config(stage.IngestConfig, dict(config), "ingest")
    pairs = stage.read_pairing(pairing) if pairing else None
    result = stage.prepare_clips(
        raw_dir, config=cfg, pairing=pairs, crawl_time=crawl_time, output_dir=work, probed=probed
    )
    summary = {"clips": len(result.clips), "rejected": len(result.rejections), "reasons": result.reasons()}
    summary["metadata_problems"] = result.metadata_problems()  # files or records that did not parse
    _log().info(
        "ingest: %d clip(s) accepted, %d rejected %s", summary["clips"], summary["rejected"], summary["reasons"]
    )
    return summary


def pixel_rule_clips(work: str, config: Mapping[str, Any]) -> list[dict]:
    """Clips whose pixel rules must run: they pass every cheap rule and the rules are on."""
    from pipeline import screen as stage
    from pipeline.config import stage_config

    cfg = stage_config(stage.ScreenConfig, dict(config), "screen")
    if not cfg.visual:
        return []
    clips = tables.read_table(work, tables.CLIPS).to_pylist()
    return [c for c in clips if stage.needs_pixels(c, cfg)]


@task(name="pixel-rules", tags=["screen"])
def screen_clip(work: str, clip: Mapping[str, Any], config: Mapping[str, Any]) -> dict:
    """The pixel rules of one clip, stored in its ``pixel_rules`` shard (reused while current)."""
    from pipeline.screen import PixelRules

    results, computed = PixelRules(config, work, thumbnails=True).run(clip)
    return {"clip_id": clip["clip_id"], "computed": computed, "passed": all(r.passed for r in results)}


@task(name="screen")
def screen(work: str, config: Mapping[str, Any], overrides: str | None = None) -> dict:
    """``pipeline.screen.screen_clips`` over the clips table: the cheap rules again, the pixel
    rules from their per-clip shards (computed here only for a clip whose task did not store them)."""
    from pipeline import screen as stage
    from pipeline.config import stage_config

    cfg = stage_config(stage.ScreenConfig, dict(config), "screen")
    clips = tables.read_table(work, tables.CLIPS).to_pylist()
    pixels = stage.PixelRules(config, work, thumbnails=True) if cfg.visual else None
    result = stage.screen_clips(
        clips, cfg, overrides=stage.read_overrides(overrides) if overrides else None, visual=pixels, output_dir=work
    )
    summary = {
        "screened": len(result.rows),
        "kept": len(result.kept),
        "rejected": len(result.rows) - len(result.kept),
        # every failing rule counts, so a clip rejected for two reasons appears under both
        "reasons": dict(
            Counter(reason for r in result.rows if not r["kept"] for reason in r["reasons"] or ["override_reject"])
        ),
        "notes": list(result.notes),
    }
    _log().info("screen: %d kept, %d rejected", summary["kept"], summary["rejected"])
    for note in result.notes:
        _log().warning("screen: %s", note)
    return summary


@task(name="score")
def score(work: str, config: Mapping[str, Any]) -> dict:
    """``pipeline.virality.score_clips`` over the kept clips (scale fitted on them)."""
    from pipeline import virality as stage
    from pipeline.config import stage_config

    cfg = stage_config(stage.ScoreConfig, dict(config), "score")
    clips = tables.read_table(work, tables.CLIPS).to_pylist()
    kept = [r["clip_id"] for r in tables.read_table(work, tables.SCREENING).to_pylist() if r["kept"]]
    result = stage.score_clips(clips, cfg, kept=kept, output_dir=work)
    for warning in result.warnings:
        _log().warning("score: %s", warning)
    summary = {
        "scored": len(result.rows),
        "rejected": len(result.rejections),
        "challenges": {
            c: {"raw_min": s.raw_min, "raw_max": s.raw_max, "n_clips": s.n_clips} for c, s in result.scale.items()
        },
    }
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
def extract_clip(
    work: str,
    clip: Mapping[str, Any],
    plan: ExtractionPlan,
    decode: Mapping[str, Any],
    attempts: str,
    force: bool = False,
) -> list[dict]:
    """Every modality of ``plan`` for one clip, from one decode pass; one item dict per modality.

    ``attempts``: the run's :class:`~pipeline.attempts.AttemptLedger` directory. The clip is
    marked there while it is worked on, and a clip whose marks show that
    :data:`~pipeline.attempts.MAX_DEATHS` workers died on it is rejected without running again.
    """
    log = _log()
    ledger = AttemptLedger(attempts)
    dead = ledger.dead(clip["clip_id"])
    if len(dead) >= MAX_DEATHS:
        message = f"{len(dead)} worker processes died while extracting it ({', '.join(dead)})"
        log.warning("%s: rejected (worker_died) %s", clip["clip_id"][:12], message)
        return [it.as_dict() for it in extraction.worker_died(clip, plan.modalities, message)]
    extractors = extraction.load_extractors(plan)
    cfg = extraction.decode_config({"decode": dict(decode)})
    with ledger.attempt(clip["clip_id"], worker_name()):
        items = extraction.extract_clip(clip, extractors, work, force=force, decode=cfg)
    for it in items:
        if it.status == extraction.REJECTED:
            log.warning("%s %s: rejected (%s) %s", it.modality, it.clip_id[:12], it.reason, it.message)
    return [it.as_dict() for it in items]


# -- training and release -------------------------------------------------------------------------


@task(name="train")
def train(source: str, out_dir: str, config: Mapping[str, Any], track: str = "all") -> dict:
    """The training stage on a release or work directory (``models.train.train_track``)."""
    from models.data import open_source
    from models.train import TrainConfig, train_track
    from pipeline.config import stage_config

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
) -> dict:
    """``pipeline.release.package_release`` then ``verify_release``; fails if verification fails."""
    from pipeline import release as stage
    from pipeline.config import stage_config

    cfg = stage_config(stage.ReleaseConfig, dict(config), "release")
    info = dict(build_info or {})
    summary = stage.package_release(
        work,
        out,
        config=cfg,
        allow_untrained=allow_untrained,
        salt=salt,
        build_info=build_info,
        run_config=config,
        # identities are compared with what the build computed: its resolved precision and device
        precision=info.get("precision"),
        device=info.get("device"),
    )
    checked = stage.verify_release(summary.path)
    if not checked.ok:
        raise RuntimeError(f"release {summary.path} failed verification: {checked.problems[:5]}")
    _log().info("release: %s (%s), verified", summary.path, summary.counts)
    if summary.untrained_modalities:
        _log().warning(
            "release: features of %s come from UNTRAINED weights (allowed explicitly)", summary.untrained_modalities
        )
    return {
        "path": str(summary.path),
        "counts": summary.counts,
        "untrained_modalities": summary.untrained_modalities,
        "missing": summary.missing,
        "verified": True,
    }


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
