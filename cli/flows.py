"""Starting a Prefect flow from the command line: the ephemeral mode's settings, then the flow."""

from __future__ import annotations

import logging
import os


def prefect_defaults() -> None:
    """Settings for Prefect's ephemeral mode, before Prefect is imported; an explicit setting wins.

    Offline: the temporary server would otherwise try to send telemetry and log a failure on
    every run where there is no network. Patient: on a busy machine the temporary server can
    take longer than Prefect's 20 s to start.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def load_flow(name: str):
    """The flow ``flows.<name>.<name>`` (build, reextract, release), imported in Prefect's offline
    and patient ephemeral mode."""
    prefect_defaults()  # before Prefect is imported
    if name == "build":
        from flows.build import build as flow
    elif name == "reextract":
        from flows.reextract import reextract as flow
    elif name == "release":
        from flows.release import release as flow
    else:
        raise ValueError(f"unknown flow {name!r}")
    _quiet_http()
    return flow


def _quiet_http() -> None:
    """Prefect's client logs every API request at INFO through httpx; keep the run's own log readable."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
