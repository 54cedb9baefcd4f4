"""What a flow run shows in the Prefect UI: a Markdown summary, tables, and the pipeline's logs.

``publish_artifacts(report, kind)`` turns the report dict a flow returns (``flows.build``,
``flows.reextract``; for ``flows.release`` the package summary of ``tasks.package``) into
artifacts of the current flow run:

- ``<kind>-summary`` (Markdown): what went in, what was kept, what was computed, where the
  release is, and every warning (untrained features, disabled rules, failed modalities);
- ``<kind>-screening``: clips per rejection reason (a clip rejected for two reasons counts
  under both), plus the kept count;
- ``<kind>-extraction``: computed, skipped, failed and seconds per modality;
- ``<kind>-release``: rows per config and split of the release, with its path.

The rows are built by plain functions (:func:`screening_rows`, :func:`extraction_rows`,
:func:`release_rows`, :func:`summary_markdown`) so they can be checked without a server.

``bridge_loggers()`` sends the records of the ``pipeline.*`` and ``models.*`` loggers (the
UNTRAINED warning, missing-shard warnings, per-clip rejections) to the run logs through
Prefect's API log handler. Only records emitted inside a flow or task run are sent; elsewhere
(``vdv screen`` outside a flow) the handler stays silent. Setting
``PREFECT_LOGGING_EXTRA_LOGGERS=pipeline,models`` in a worker's environment has the same effect
for processes that Prefect starts; the function is for flows run in-process (``vdv build``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from pipeline.modalities import registry

BRIDGED_LOGGERS = ("pipeline", "models")
KINDS = ("build", "reextract", "release")


# -- rows --------------------------------------------------------------------------------------------


def screening_rows(report: Mapping[str, Any]) -> list[dict]:
    """``{reason, clips}`` rows of the screening summary, most frequent first, then ``kept``."""
    screen = report.get("screen") or {}
    if not screen:
        return []
    reasons = sorted((screen.get("reasons") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    rows = [{"reason": reason, "clips": int(n)} for reason, n in reasons]
    rows.append({"reason": "(kept)", "clips": int(screen.get("kept", 0))})
    return rows


def extraction_rows(report: Mapping[str, Any]) -> list[dict]:
    """``{modality, computed, skipped, failed, seconds}`` per modality, then the totals."""
    extract = report.get("extract") or {}
    failed_modalities = report.get("failed_modalities") or {}
    rows = []
    known = registry.names()
    for modality in [m for m in known if m in extract or m in failed_modalities] + sorted(set(extract) - set(known)):
        s = extract.get(modality)
        if s is None:
            rows.append({"modality": modality, "computed": 0, "skipped": 0, "failed": "all", "seconds": None})
            continue
        rows.append(
            {
                "modality": modality,
                "computed": int(s.get("computed", 0)),
                "skipped": int(s.get("skipped", 0)),
                "failed": int(s.get("failed", 0)),
                "seconds": s.get("seconds"),
            }
        )
    if rows:
        numeric = [r for r in rows if isinstance(r["failed"], int)]
        rows.append(
            {
                "modality": "(total)",
                "computed": sum(r["computed"] for r in rows),
                "skipped": sum(r["skipped"] for r in rows),
                "failed": sum(r["failed"] for r in numeric),
                "seconds": round(sum(float(r["seconds"] or 0) for r in rows), 2),
            }
        )
    return rows


def _release_of(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The release summary: ``report["release"]`` of a build, or a package summary itself."""
    if "path" in report and "counts" in report:
        return report
    return report.get("release") or None


def release_rows(report: Mapping[str, Any]) -> list[dict]:
    """``{config, train, test, path}`` rows of the release's counts."""
    rel = _release_of(report)
    if not rel:
        return []
    return [
        {
            "config": config,
            "train": int(splits.get("train", 0)),
            "test": int(splits.get("test", 0)),
            "path": rel.get("path"),
        }
        for config, splits in sorted((rel.get("counts") or {}).items())
    ]


def _md_table(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    rows = list(rows)
    if not rows:
        return []
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("-" if r[c] is None else str(r[c]) for c in columns) + " |" for r in rows]
    return lines + [""]


def summary_markdown(report: Mapping[str, Any], kind: str = "build") -> str:
    """The Markdown summary of one run."""
    lines = [f"# vdv {kind}", ""]
    facts = []
    for key, label in (("raw_dir", "raw directory"), ("work", "work directory")):
        if report.get(key):
            facts.append(f"- {label}: `{report[key]}`")
    if report.get("modalities"):
        facts.append(f"- modalities: {', '.join(report['modalities'])}")
    if report.get("seconds") is not None:
        facts.append(f"- wall time: {report['seconds']} s")
    ingest = report.get("ingest") or {}
    if ingest:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted((ingest.get("reasons") or {}).items()))
        facts.append(
            f"- ingest: {ingest.get('clips', 0)} clip(s) accepted, {ingest.get('rejected', 0)} rejected"
            + (f" ({reasons})" if reasons else "")
        )
    screen = report.get("screen") or {}
    if screen:
        facts.append(
            f"- screening: {screen.get('kept', 0)} kept, {screen.get('rejected', 0)} rejected "
            f"({screen.get('screened', 0)} screened, {screen.get('skipped', 0)} reused)"
        )
    score = report.get("score") or {}
    if score:
        facts.append(f"- scores: {score.get('scored', 0)} clip(s) in {len(score.get('challenges') or {})} challenge(s)")
    totals = report.get("extract_totals") or {}
    if totals:
        facts.append(
            f"- extraction: {totals.get('computed', 0)} computed, {totals.get('skipped', 0)} skipped, "
            f"{totals.get('failed', 0)} failed"
        )
    lines += facts + [""]

    warnings = list(screen.get("notes") or [])
    for modality, error in (report.get("failed_modalities") or {}).items():
        warnings.append(f"extraction of {modality} FAILED: {error}")
    rel = _release_of(report)
    if rel and rel.get("untrained_modalities"):
        warnings.append(
            f"features of {', '.join(rel['untrained_modalities'])} come from UNTRAINED weights (allowed explicitly)"
        )
    for modality, missing in ((rel or {}).get("missing") or {}).items():
        warnings.append(f"{len(missing)} kept clip(s) have no {modality} shard and are not in the release")
    if warnings:
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in warnings] + [""]

    if screen:
        lines += ["## Screening by reason", ""] + _md_table(screening_rows(report))
    if report.get("extract"):
        lines += ["## Extraction", ""] + _md_table(extraction_rows(report))
    if rel:
        lines += [
            "## Release",
            "",
            f"`{rel.get('path')}`" + (" (verified)" if rel.get("verified") else ""),
            "",
        ] + _md_table({k: v for k, v in r.items() if k != "path"} for r in release_rows(report))
    return "\n".join(lines).rstrip() + "\n"


# -- publishing ----------------------------------------------------------------------------------------


def publish_artifacts(report: Mapping[str, Any], kind: str = "build") -> dict[str, UUID]:
    """Create the summary and table artifacts of ``report`` in the current flow run; artifact key -> id.

    Tables that would be empty (no screening in a re-extraction without ``raw_dir``, no release)
    are not created. Outside a flow or task run (a stage driven directly) none is: there is no
    run to attach them to, and Prefect deprecates artifacts without one.
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    if kind not in KINDS:
        raise ValueError(f"unknown report kind {kind!r}; known: {list(KINDS)}")
    if not _in_run():
        return {}
    created = {}
    key = f"{kind}-summary"
    created[key] = create_markdown_artifact(
        markdown=summary_markdown(report, kind), key=key, description=f"what this vdv {kind} run did"
    )
    tables = (
        ("screening", screening_rows(report), "clips per screening rejection reason, and the kept count"),
        ("extraction", extraction_rows(report), "computed, skipped, failed and seconds per modality"),
        ("release", release_rows(report), "rows per config and split of the release"),
    )
    for name, rows, description in tables:
        if rows:
            key = f"{kind}-{name}"
            created[key] = create_table_artifact(table=rows, key=key, description=description)
    return created


class _InRun(logging.Filter):
    """Pass only records emitted inside a Prefect flow or task run (others have no run to go to)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _in_run()


def _in_run() -> bool:
    """Whether this code runs inside a Prefect flow or task run."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def bridge_loggers(names: Iterable[str] = BRIDGED_LOGGERS) -> list[logging.Logger]:
    """Send the records of ``names`` (and their children) to Prefect's run logs; idempotent."""
    from prefect.logging.handlers import APILogHandler

    bridged = []
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            handler = APILogHandler()
            handler.addFilter(_InRun())
            logger.addHandler(handler)
        bridged.append(logger)
    return bridged


__all__ = [
    "bridge_loggers",
    "extraction_rows",
    "publish_artifacts",
    "release_rows",
    "screening_rows",
    "summary_markdown",
]
