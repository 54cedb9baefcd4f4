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

from flows import tasks
from flows.build import BuildError, _check_modalities, extract_stage, run_rule_stages, write_report
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
) -> dict:
    """Re-extract ``modalities`` for the kept clips of ``work``; ``force`` recomputes even current shards."""
    started = time.monotonic()
    config = load_config(config_path)
    _check_modalities(modalities)
    with WorkLock(work, "reextract"):
        report: dict[str, Any] = {"work": work, "modalities": list(modalities)}
        report["partial_removed"] = extraction.sweep_partial_files(work)
        if raw_dir:
            report.update(run_rule_stages(raw_dir, work, config, pairing, crawl_time, overrides))
        try:
            extract_stage(
                report, work, config, modalities, untrained=untrained, device=device, precision=precision, force=force
            )
        except BuildError:
            write_report(work, "reextract_report", report)
            raise
        report["seconds"] = round(time.monotonic() - started, 1)
        write_report(work, "reextract_report", report)
    return report
