"""The ``reextract`` flow: recompute chosen modalities where inputs or extractor identity changed.

A clip's shard is current while its identity (clip content hash, extractor code version,
weights sha256, parameters, precision) is unchanged, so re-extraction after a code, weights or
configuration change recomputes exactly the clips and modalities affected and skips the rest.
Given ``raw_dir``, the rule stages run first so that new or changed clips (a changed file is a
new content hash, so a new clip id) are picked up. Scheduled from ``prefect.yaml`` (cron) so that
a weights update or a new crawl is folded in without a person. Holds the work directory's lock.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from flows import artifacts, tasks
from flows.build import BuildError, _check_modalities, extract_stage, finish_run, open_clip_runner, run_rule_stages
from pipeline import extraction
from pipeline.config import load_config
from pipeline.lock import WorkLock


@flow(name="reextract")
def reextract(
    work: str = "work",
    modalities: list[str] = list(tasks.MODALITIES),  # noqa: B006 - Prefect parameters need a JSON default
    config_path: str | None = None,
    raw_dir: str | None = None,
    pairing: str | None = None,
    overrides: str | None = None,
    crawl_time: str | None = None,
    untrained: bool = False,
    device: str | None = None,
    precision: str | None = None,
    force: bool = False,
    runner: str = "thread",
    workers: int | None = None,
    threads_per_worker: int = 1,
    dask_address: str | None = None,
) -> dict:
    """Re-extract ``modalities`` for the kept clips of ``work``; ``force`` recomputes even current shards.

    ``runner``, ``workers``, ``threads_per_worker`` and ``dask_address`` choose where the
    per-clip tasks run, as for the build flow.
    """
    started = time.monotonic()
    artifacts.bridge_loggers()
    config = load_config(config_path)
    _check_modalities(modalities)
    clip_runner = open_clip_runner(runner, workers, threads_per_worker, dask_address)
    with WorkLock(work, "reextract"), clip_runner:
        report: dict[str, Any] = {"work": work, "modalities": list(modalities)}
        report["partial_removed"] = extraction.sweep_partial_files(work)
        if raw_dir:
            report.update(run_rule_stages(clip_runner, raw_dir, work, config, pairing, crawl_time, overrides))
        try:
            extract_stage(
                clip_runner,
                report,
                work,
                config,
                modalities,
                untrained=untrained,
                device=device,
                precision=precision,
                force=force,
            )
        except BuildError:
            finish_run(work, "reextract_report", "reextract", report)
            raise
        report["seconds"] = round(time.monotonic() - started, 1)
        finish_run(work, "reextract_report", "reextract", report)
    return report
