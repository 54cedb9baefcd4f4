"""The release stage's one driver: package a work directory, then verify what was written.

``vdv release`` (with or without a flow run) and the flows' release task call
:func:`release_stage`; the command line prints the result, the task fails on a release that does
not verify.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import stage_config
from pipeline.release.config import ReleaseConfig
from pipeline.release.package import ReleaseSummary, package_release
from pipeline.release.verify import VerifyResult, verify_release


@dataclass
class ReleaseRun:
    """A packaged release and its verification."""

    summary: ReleaseSummary
    checked: VerifyResult

    def as_dict(self) -> dict:
        """The JSON-able record of the stage (a build's report, ``vdv release``'s output)."""
        s = self.summary
        return {
            "path": str(s.path),
            "counts": s.counts,
            "untrained_modalities": s.untrained_modalities,
            "missing": s.missing,
            "verified": self.checked.ok,
        }


def release_stage(
    work: str | os.PathLike,
    out: str | os.PathLike,
    run_config: Mapping | None = None,
    **options: Any,
) -> ReleaseRun:
    """:func:`package_release` with the run's configuration (its ``[release]`` section, and the
    modalities' sections that decide the identities), then :func:`verify_release` on the result.

    ``options`` are :func:`package_release`'s: ``allow_untrained``, ``salt``, ``allow_missing``,
    ``build_info``, and the ``precision`` and ``device`` the build resolved.
    """
    config = stage_config(ReleaseConfig, dict(run_config or {}), "release")
    summary = package_release(work, out, config=config, run_config=run_config, **options)
    return ReleaseRun(summary, verify_release(summary.path))
