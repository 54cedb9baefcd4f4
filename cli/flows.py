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
    _plain_expected_failures()
    return flow


def _quiet_http() -> None:
    """Prefect's client logs every API request at INFO through httpx; keep the run's own log readable."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


class _NoTraceback(logging.Filter):
    """Drops the traceback from Prefect's log record of a failure the run explains in one line
    (bad input, missing weights, a release or build that cannot go on); the message stays. Any
    other exception keeps its traceback, and -vv keeps them all."""

    def __init__(self, expected: tuple[type[BaseException], ...]):
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, self.expected) and not logging.getLogger().isEnabledFor(logging.DEBUG):
            record.exc_info, record.exc_text = None, None
        return True


def _plain_expected_failures() -> None:
    from flows.build import BuildError
    from pipeline.errors import DiskFull, InputError, WeightsError
    from pipeline.release import ReleaseError

    expected = (BuildError, DiskFull, InputError, ReleaseError, WeightsError)
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTraceback) for f in logger.filters):
            logger.addFilter(_NoTraceback(expected))
