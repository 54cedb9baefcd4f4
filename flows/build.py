"""The ``build`` flow: raw clips to a packaged, verified release.

ingest -> screen -> score -> the four extractors over the kept clips, in parallel -> (optional)
training -> release. Every stage is incremental: screening reuses rows made by the same
configuration and code, and an extractor skips a clip whose shard has the same identity (clip
content hash, extractor code version, weights sha256, parameters, precision), so a second
build on unchanged input does no extraction work and reports how many items it skipped.

Task runners: a thread pool by default; ``runner="process"`` uses a process pool and
``runner="dask"`` prefect-dask's ``DaskTaskRunner`` on a local cluster of worker processes
(or on the scheduler at ``dask_address``) to scale out over processes or machines.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import flow

from flows import tasks
from pipeline.config import load_config

RUNNERS = ("thread", "process", "dask")


class BuildError(RuntimeError):
    """A build stage failed as a whole (not one clip); the report names it."""


def make_task_runner(runner: str = "thread", *, dask_address: str | None = None, workers: int | None = None):
    """The Prefect task runner named by ``runner`` (see the module docstring)."""
    if runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers or len(tasks.MODALITIES))
    if runner == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=workers or 2)
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # worker processes, one thread each: every task crosses a process boundary
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers or 2,
                "processes": True,
                "threads_per_worker": 1,
                "dashboard_address": None,
            }
        )
    raise ValueError(f"unknown runner {runner!r}; choose one of {RUNNERS}")


def run_extraction(
    work: str,
    clips: list[dict],
    config: Mapping[str, Any],
    modalities: Sequence[str],
    *,
    untrained: bool,
    device: str | None,
    force: bool = False,
) -> tuple[dict, dict]:
    """Submit one extraction task per modality (they run in parallel); (summaries, failures)."""
    futures = {m: tasks.extract.submit(m, work, clips, dict(config), untrained, device, force) for m in modalities}
    summaries, failures = {}, {}
    for modality, future in futures.items():
        try:
            summary = future.result()
        except Exception as err:  # noqa: BLE001 - a failed modality is reported; the others are kept
            failures[modality] = f"{type(err).__name__}: {err}"
            continue
        summaries[modality] = {k: v for k, v in summary.items() if k != "rejections"}
    return summaries, failures


def write_report(work: str, name: str, report: Mapping) -> Path:
    tasks.write_state(work, name, report)
    return Path(work) / tasks.STATE_DIR / f"{name}.json"


@flow(name="build")
def build(
    raw_dir: str,
    work: str = "work",
    config_path: str | None = None,
    pairing: str | None = None,
    overrides: str | None = None,
    crawl_time: str | None = None,
    modalities: list[str] = list(tasks.MODALITIES),  # noqa: B006 - Prefect parameters need a JSON default
    untrained: bool = False,
    device: str | None = None,
    train: bool = False,
    train_dir: str | None = None,
    release_out: str | None = None,
    allow_untrained: bool = False,
    salt: str | None = None,
) -> dict:
    """Build the dataset in ``work`` from ``raw_dir`` (``RAW_DIR/clips`` and ``RAW_DIR/metadata``).

    Parameters
    ----------
    raw_dir: raw layout of ``pipeline.ingest``; work: the run's table directory;
    config_path: TOML with one section per stage; pairing: CSV pairing clip files with records
    (and challenges); overrides: reviewer override CSV for screening; crawl_time: crawl time of
    records that lack one; modalities: extractors to run; untrained: let extractors use seeded
    random weights when theirs are missing (recorded in every row); device: cpu | cuda;
    train: run the training stage (``models.train.train_track`` on the all-challenge track);
    release_out: package a release there (skipped when None); allow_untrained: let untrained
    features into the release (marked loudly); salt: uploader hash salt (else ``$VDV_RELEASE_SALT``).
    """
    started = time.monotonic()
    config = load_config(config_path)
    unknown = sorted(set(modalities) - set(tasks.MODALITIES))
    if unknown:
        raise BuildError(f"unknown modalities {unknown}; known: {list(tasks.MODALITIES)}")
    report: dict[str, Any] = {"raw_dir": raw_dir, "work": work, "pid": os.getpid()}
    report["ingest"] = tasks.ingest(raw_dir, work, config, pairing, crawl_time)
    report["screen"] = tasks.screen(work, config, overrides)
    report["score"] = tasks.score(work, config)
    clips = tasks.kept_clips(work)
    report["extract"], failures = run_extraction(work, clips, config, modalities, untrained=untrained, device=device)
    report["extract_totals"] = {
        k: sum(s[k] for s in report["extract"].values()) for k in ("computed", "skipped", "failed")
    }
    if failures:
        report["failed_modalities"] = failures
        write_report(work, "build_report", report)
        raise BuildError(
            f"extraction failed for {sorted(failures)}: " + "; ".join(f"{m}: {e}" for m, e in failures.items())
        )
    if train:
        if tasks.training_entry_point() is None:
            report["train"] = {"skipped": "models.train has no train_track entry point"}
        else:
            report["train"] = tasks.train(work, train_dir or str(Path(work) / "train"), config)
    if release_out:
        info = {k: report[k] for k in ("ingest", "screen", "score", "extract")}
        report["release"] = tasks.package(
            work, release_out, config, allow_untrained, salt, json.loads(json.dumps(info, default=str))
        )
    report["seconds"] = round(time.monotonic() - started, 1)
    write_report(work, "build_report", report)
    return report
