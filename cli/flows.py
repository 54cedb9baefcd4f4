"""Starting a Prefect flow from the command line: the ephemeral mode's settings, then the flow."""

from __future__ import annotations

import importlib
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
    """The flow ``flows.<name>.<name>``, imported in Prefect's offline and patient ephemeral mode."""
    prefect_defaults()  # before Prefect is imported
    flow = getattr(importlib.import_module(f"flows.{name}"), name)
    _quiet_http()
    return flow


def _quiet_http() -> None:
    """Prefect's client logs every API request at INFO through httpx; keep the run's own log readable."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
