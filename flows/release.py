"""The ``release`` flow: package a work directory as a versioned release and verify it."""

from __future__ import annotations

from prefect import flow

from flows import artifacts, tasks
from pipeline.core.lock import WorkLock
from pipeline.core.placement import recorded_place
from pipeline.core.workdir import prepare
from pipeline.release import check_releasable
from pipeline.sections import load_config


@flow(name="release")
def release(
    work: str = "work",
    out: str = "release",
    config_path: str | None = None,
    allow_untrained: bool = False,
    salt: str | None = None,
) -> dict:
    """Package ``work`` into ``<out>/<name>-<version>/`` (``[release]`` section) and verify it.

    ``allow_untrained`` lets features from untrained weights in (the card and manifest say so);
    ``salt`` salts the uploader hashes (else ``$VDV_RELEASE_SALT``, else a random, forgotten salt).
    """
    artifacts.bridge_loggers()
    config = load_config(config_path)
    check_releasable(work, "work")  # nothing to release: one error, before the lock
    prepare(work, label="work")  # the lock needs a writable work directory
    with WorkLock(work, "release"):  # no build may change the shards while they are packaged
        build_info = tasks.read_state(work, "build_report")
        info = {
            k: build_info[k] for k in ("ingest", "screen", "score", "extract", "precision", "device") if k in build_info
        }
        precision, device = recorded_place(work, build_info)
        summary = tasks.package(work, out, config, allow_untrained, salt, info, precision, device)
    try:
        artifacts.publish_artifacts(summary, "release")
    except Exception as err:  # noqa: BLE001 - the artifacts are for people; the release is made
        import logging

        logging.getLogger("flows").warning("Prefect artifacts not published: %s", err)
    return summary
