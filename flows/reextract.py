"""The ``reextract`` flow: recompute chosen modalities where inputs or extractor identity changed.

A clip's shard is current while its identity (clip content hash, extractor code version,
weights sha256, parameters, precision; SPEC section 4) is unchanged, so re-extraction after a
code, weights or configuration change recomputes exactly the clips and modalities affected and
skips the rest. Given ``raw_dir``, the rule stages run first so that new or changed clips (a
changed file is a new content hash, so a new clip id) are picked up. Scheduled from
``prefect.yaml`` (cron) so that a weights update or a new crawl is folded in without a person.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from flows import tasks
from flows.build import BuildError, run_extraction, write_report
from pipeline.config import load_config


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
    force: bool = False,
) -> dict:
    """Re-extract ``modalities`` for the kept clips of ``work``; ``force`` recomputes even current shards."""
    started = time.monotonic()
    config = load_config(config_path)
    unknown = sorted(set(modalities) - set(tasks.MODALITIES))
    if unknown:
        raise BuildError(f"unknown modalities {unknown}; known: {list(tasks.MODALITIES)}")
    report: dict[str, Any] = {"work": work, "modalities": list(modalities)}
    if raw_dir:
        report["ingest"] = tasks.ingest(raw_dir, work, config, pairing, crawl_time)
        report["screen"] = tasks.screen(work, config, overrides)
        report["score"] = tasks.score(work, config)
    clips = tasks.kept_clips(work)
    report["extract"], failures = run_extraction(
        work, clips, config, modalities, untrained=untrained, device=device, force=force
    )
    report["extract_totals"] = {
        k: sum(s[k] for s in report["extract"].values()) for k in ("computed", "skipped", "failed")
    }
    report["seconds"] = round(time.monotonic() - started, 1)
    if failures:
        report["failed_modalities"] = failures
    write_report(work, "reextract_report", report)
    if failures:
        raise BuildError(
            f"re-extraction failed for {sorted(failures)}: " + "; ".join(f"{m}: {e}" for m, e in failures.items())
        )
    return report
