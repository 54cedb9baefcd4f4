"""The ``reextract`` flow: recompute chosen modalities where inputs or extractor identity changed.

A clip's shard is current while its identity (clip content hash, extractor code version,
weights sha256, parameters, precision) is unchanged, so re-extraction after a code, weights or
configuration change recomputes exactly the clips and modalities affected and skips the rest.
Given ``raw_dir``, the rule stages run first so that new or changed clips (a changed file is a
new content hash, so a new clip id) are picked up. Scheduled from ``prefect.yaml`` (cron) so that
a weights update or a new crawl is folded in without a person. Holds the work directory's lock.
"""

from __future__ import annotations

from prefect import flow

from flows.build import extract_stage, open_run, run_rule_stages
from pipeline.extraction import stage as extraction
from pipeline.modalities import registry


@flow(name="reextract")
def reextract(
    work: str = "work",
    modalities: list[str] | None = None,
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
    threads_per_worker: int | None = None,
    dask_address: str | None = None,
) -> dict:
    """Re-extract ``modalities`` (default: every registered one) for the kept clips of ``work``;
    ``force`` recomputes even current shards.

    ``runner``, ``workers``, ``threads_per_worker`` and ``dask_address`` choose where the
    per-clip tasks run, as for the build flow. ``device`` and ``precision`` win over the placement
    the work directory records (:mod:`pipeline.core.placement`), which fills in what they leave open.
    """
    modalities = list(modalities or registry.names())
    frame = open_run(
        "reextract",
        work,
        config_path,
        modalities,
        runner,
        workers,
        threads_per_worker,
        dask_address,
        device=device,
        precision=precision,
    )
    with frame as state:
        state.inputs.update(work=work, modalities=list(modalities))
        state.inputs["partial_removed"] = extraction.sweep_partial_files(work)
        if raw_dir:
            run_rule_stages(state, raw_dir, pairing, crawl_time, overrides)
        extract_stage(state, modalities, untrained=untrained, force=force)
    return state.report()
