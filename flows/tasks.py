"""Thin Prefect tasks over the ``pipeline`` stages.

Each task calls one stage function and returns a small, picklable summary (a dict) so that it
can run in a thread, a process or on a Dask worker. Retries are set only where a failure can be
transient (reading the raw directory, writing the release); a stage that fails on bad data fails
the same way on a retry. One clip's failure inside a stage is recorded as a rejection and the
other clips go on (house style: one failing item does not sink the batch).

Everything a task needs comes in as arguments (paths as strings, the configuration as a plain
mapping), never as live objects, so that the Dask runner can ship tasks to other processes.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from pipeline import tables
from pipeline.errors import ClipError, Reason
from pipeline.provenance import canonical_json, code_version, sha256_file

MODALITIES = ("pose", "holistic", "facial", "scenic")
EXTRACT_STAGE = "extract:{modality}"
STATE_DIR = "flow_state"  # <work>/flow_state/: what the flows remember between runs (JSON)


def _log() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run (``.fn`` in tests) log to the module logger
        return logging.getLogger(__name__)


def kept_clips(work: str | Path) -> list[dict]:
    """(clip_id, path) of the clips that passed screening and got a score, ordered by clip id."""
    scored = set(tables.read_table(work, tables.SCORES).column("clip_id").to_pylist())
    clips = tables.read_table(work, tables.CLIPS).select(["clip_id", "path"]).to_pylist()
    return sorted((c for c in clips if c["clip_id"] in scored), key=lambda c: c["clip_id"])


# -- rule stages ----------------------------------------------------------------------------------


@task(name="ingest", retries=2, retry_delay_seconds=2)  # reads the raw directory: I/O can be transient
def ingest(
    raw_dir: str, work: str, config: Mapping[str, Any], pairing: str | None = None, crawl_time: str | None = None
) -> dict:
    """``pipeline.ingest.prepare_clips`` on ``raw_dir``, writing ``clips`` and its rejections."""
    from pipeline import ingest as stage
    from pipeline.config import stage_config

    cfg = stage_config(stage.IngestConfig, dict(config), "ingest")
    pairs = stage.read_pairing(pairing) if pairing else None
    result = stage.prepare_clips(raw_dir, config=cfg, pairing=pairs, crawl_time=crawl_time, output_dir=work)
    summary = {"clips": len(result.clips), "rejected": len(result.rejections), "reasons": result.reasons()}
    summary["metadata_problems"] = result.metadata_problems()  # files or records that did not parse
    _log().info(
        "ingest: %d clip(s) accepted, %d rejected %s", summary["clips"], summary["rejected"], summary["reasons"]
    )
    return summary


def _screen_fingerprint(config: Mapping[str, Any], overrides: str | None) -> str:
    """What decides a clip's screening row besides the clip: configuration, overrides, code."""
    payload = {
        "screen": dict(config.get("screen", {})),
        "visual": dict(config.get("visual", {})),
        "overrides": sha256_file(overrides) if overrides else None,
        "code": code_version(
            "pipeline.screen",
            "pipeline.visual",
            "pipeline.rules",
            "pipeline.people",
            "pipeline.motion",
            "pipeline.pose",
        ),
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


@task(name="screen")
def screen(work: str, config: Mapping[str, Any], overrides: str | None = None) -> dict:
    """``pipeline.screen.screen_clips`` over the clips table, re-screening only what changed.

    The pixel rules decode every clip, so a clip whose screening row was made by the same
    configuration, overrides and screening code is not screened again (incremental builds).
    """
    from pipeline import screen as stage
    from pipeline.config import stage_config

    cfg = stage_config(stage.ScreenConfig, dict(config), "screen")
    clips = tables.read_table(work, tables.CLIPS).to_pylist()
    fingerprint = _screen_fingerprint(config, overrides)
    state = read_state(work, "screen")
    previous_rows, previous_rejections = {}, {}
    if state.get("fingerprint") == fingerprint:
        previous_rows = {r["clip_id"]: r for r in tables.read_table(work, tables.SCREENING).to_pylist()}
        shard = tables.shard_path(work, "rejections", stage.STAGE)
        if shard.exists():
            previous_rejections = {r["clip_id"]: r for r in tables.read_file(shard, tables.REJECTIONS).to_pylist()}
    todo = [c for c in clips if c["clip_id"] not in previous_rows]
    visual = stage.visual_screener(config) if cfg.visual and todo else None
    result = stage.screen_clips(
        todo, cfg, overrides=stage.read_overrides(overrides) if overrides else None, visual=visual
    )
    if cfg.visual and not todo:
        # nothing new to screen: the pixel rules did run, on the run that made the reused rows
        result.notes = [n for n in result.notes if "pixel rules" not in n]
    reused = [previous_rows[c["clip_id"]] for c in clips if c["clip_id"] in previous_rows]
    result.rows = sorted(reused + result.rows, key=lambda r: r["clip_id"])
    result.rejections = [
        previous_rejections[r["clip_id"]] for r in reused if not r["kept"] and r["clip_id"] in previous_rejections
    ] + result.rejections
    stage.write_screening(result, work)
    write_state(work, "screen", {"fingerprint": fingerprint})
    summary = {
        "screened": len(todo),
        "skipped": len(reused),
        "kept": len(result.kept),
        "rejected": len(result.rows) - len(result.kept),
        # every failing rule counts, so a clip rejected for two reasons appears under both
        "reasons": dict(
            Counter(reason for r in result.rows if not r["kept"] for reason in r["reasons"] or ["override_reject"])
        ),
        "notes": list(result.notes),
    }
    _log().info(
        "screen: %d kept, %d rejected (%d screened, %d unchanged)",
        summary["kept"],
        summary["rejected"],
        len(todo),
        len(reused),
    )
    for note in result.notes:
        _log().warning("screen: %s", note)
    return summary


@task(name="score")
def score(work: str, config: Mapping[str, Any]) -> dict:
    """``pipeline.virality.score_clips`` over the kept clips (scale fitted on them, SPEC section 3)."""
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


_BUILD_LOCK = threading.Lock()


def build_extractor(modality: str, config: Mapping[str, Any], *, untrained: bool = False, device: str | None = None):
    """The modality module's ``build_extractor`` (docs/ARCHITECTURE.md) on its config section.

    Built under a lock: the extractors import torch and torchvision lazily, and the first import
    of torchvision from several threads at once fails half-initialised (thread-pool runner).
    """
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; known: {list(MODALITIES)}")
    with _BUILD_LOCK:
        if importlib.util.find_spec("torchvision") is not None:
            importlib.import_module("torchvision.models")
        module = importlib.import_module(f"pipeline.{modality}")
        return module.build_extractor(dict(config.get(modality, {})), untrained=untrained, device=device)


def extract_clips(
    extractor, work: str | Path, clips: Sequence[Mapping[str, str]], *, force: bool = False, log=None
) -> dict:
    """Run one extractor over ``clips``; a failing clip becomes a rejection row, the rest go on.

    Returns the counts (computed, skipped, failed), the rejection rows and the seconds spent.
    """
    log = log or logging.getLogger(__name__)
    modality = extractor.modality
    stage = EXTRACT_STAGE.format(modality=modality)
    computed = skipped = 0
    rejections = []
    started = time.monotonic()
    for i, clip in enumerate(clips, start=1):
        t0 = time.monotonic()
        try:
            _, did = extractor.extract_to(work, clip["path"], clip["clip_id"], force=force)
        except ClipError as err:
            rejections.append(_rejection(stage, clip, err.reason, err.message))
            log.warning(
                "%s [%d/%d] %s: rejected (%s) %s",
                modality,
                i,
                len(clips),
                clip["clip_id"][:12],
                err.reason.value,
                err.message,
            )
            continue
        except Exception as err:  # noqa: BLE001 - one clip's failure is recorded, the others go on
            rejections.append(_rejection(stage, clip, Reason.EXTRACT_FAILED, f"{type(err).__name__}: {err}"))
            log.warning(
                "%s [%d/%d] %s: failed %s: %s", modality, i, len(clips), clip["clip_id"][:12], type(err).__name__, err
            )
            continue
        computed += did
        skipped += not did
        log.info(
            "%s [%d/%d] %s: %s (%.1f s)",
            modality,
            i,
            len(clips),
            clip["clip_id"][:12],
            "computed" if did else "current, skipped",
            time.monotonic() - t0,
        )
    return {
        "modality": modality,
        "computed": computed,
        "skipped": skipped,
        "failed": len(rejections),
        "rejections": rejections,
        "seconds": round(time.monotonic() - started, 2),
        "identity": {
            "extractor": extractor.name,
            "version": extractor.version,
            "weights_sha256": extractor.weights_sha256,
            "params": extractor.params(),
        },
    }


def _rejection(stage: str, clip: Mapping[str, str], reason: Reason, message: str) -> dict:
    return {
        "stage": stage,
        "clip_id": clip["clip_id"],
        "video_id": clip.get("video_id"),
        "path": clip["path"],
        "reason": reason.value,
        "message": message,
    }


def sweep_partial_files(work: str | Path, modality: str) -> int:
    """Remove hidden temporary files of ``features/<modality>/`` left by a killed run.

    ``tables.atomic_write`` writes ``.<name>.<random>.tmp`` and renames it into place; a process
    killed in between leaves the temporary file, which readers already ignore. Within a build one
    task owns a modality's directory, so any such file at its start is a leftover.
    """
    directory = Path(work) / "features" / modality
    removed = 0
    for path in directory.glob(".*.tmp") if directory.is_dir() else ():
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def extraction_rejections_path(work: str | Path, modality: str) -> Path:
    """``<work>/rejections/rejections.extract-<modality>.parquet`` (stage ``extract:<modality>``)."""
    return tables.shard_path(work, "rejections", f"extract-{modality}")


# Extraction tasks carry the "gpu" tag: `prefect concurrency-limit create gpu 1` (on a server)
# keeps one of them at a time on a GPU machine. No retries: a failure here is the data or the
# weights, which a retry does not change.
@task(name="extract", tags=["gpu", "extract"])
def extract(
    modality: str,
    work: str,
    clips: Sequence[Mapping[str, str]],
    config: Mapping[str, Any],
    untrained: bool = False,
    device: str | None = None,
    force: bool = False,
) -> dict:
    """Extract one modality for ``clips`` (skipping current shards) and record its rejections."""
    log = _log()
    swept = sweep_partial_files(work, modality)
    if swept:
        log.warning("%s: removed %d partial file(s) left by an interrupted run", modality, swept)
    extractor = build_extractor(modality, config, untrained=untrained, device=device)
    summary = extract_clips(extractor, work, clips, force=force, log=log)
    summary["partial_removed"] = swept
    summary["pid"] = os.getpid()  # which process ran it (a Dask worker, a pool process, the flow)
    tables.write_table(summary["rejections"], tables.REJECTIONS, extraction_rejections_path(work, modality))
    log.info(
        "%s: %d computed, %d skipped (current), %d failed in %.1f s",
        modality,
        summary["computed"],
        summary["skipped"],
        summary["failed"],
        summary["seconds"],
    )
    return summary


# -- training and release -------------------------------------------------------------------------


def training_entry_point():
    """``models.train.train_track`` when the training stage provides it, else None."""
    try:
        module = importlib.import_module("models.train")
    except ImportError:
        return None
    return getattr(module, "train_track", None)


@task(name="train")
def train(source: str, out_dir: str, config: Mapping[str, Any], track: str = "all") -> dict:
    """The training stage on a release or work directory (``models.train.train_track``)."""
    from models.data import open_source
    from models.train import TrainConfig
    from pipeline.config import stage_config

    entry = training_entry_point()
    if entry is None:
        raise RuntimeError("models.train exposes no train_track entry point")
    cfg = stage_config(TrainConfig, dict(config), "train")
    result = entry(open_source(source), track, out_dir, cfg)
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


@task(name="release", retries=1, retry_delay_seconds=2)  # writes many files: a full disk or NFS hiccup can pass
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
    summary = stage.package_release(
        work, out, config=cfg, allow_untrained=allow_untrained, salt=salt, build_info=build_info, run_config=config
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
