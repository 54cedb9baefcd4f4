"""One driver per rule stage: read the work directory, keep what the stage needs, call it, summarise.

``vdv ingest | screen | score`` and the flows' tasks call the same driver: the command line parses
its options and prints the summary, the flow wires the stages and maps the per-clip work (probes,
pixel rules) over its workers, and neither repeats the stage. Each driver takes the run's whole
configuration mapping (a checked ``--config`` file) plus the stage's overrides, writes the stage's
tables under ``work`` and returns the stage's result; ``*_summary`` turns a result into the
small, JSON-able dict the flows record and the command line prints. Bad input (a pairing or
override file, a crawl time) is an :class:`~pipeline.core.errors.InputError` or a
:class:`~pipeline.core.config.ConfigError` naming it.

The extraction driver is :func:`pipeline.extraction.stage.run_extraction`; the release's is
:func:`pipeline.release.release_stage`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core import tables
from pipeline.core.checksums import batched_clip_records
from pipeline.core.config import ConfigError, stage_config
from pipeline.core.errors import InputError
from pipeline.core.placement import Placement
from pipeline.ingest.stage import IngestConfig, IngestResult, prepare_clips, read_pairing
from pipeline.scoring.virality import ScoreConfig, ScoreResult, read_scale, score_clips
from pipeline.screening.stage import PixelRules, ScreenConfig, ScreenResult, read_overrides, screen_clips


def stage_section(cls: type, config: Mapping[str, Any] | None, section: str, **overrides: Any) -> Any:
    """The stage's dataclass from the run's configuration, then ``overrides`` that are not None;
    a value the stage refuses is a :class:`ConfigError` naming the section."""
    try:
        return stage_config(cls, dict(config or {}), section, **overrides)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[{section}]: {err}") from err


def require_table(work: str | Path, spec: tables.TableSpec, command: str) -> list[dict]:
    """The rows of a table an earlier stage wrote; FileNotFoundError naming that stage when absent."""
    if not tables.table_files(work, spec.name):
        raise FileNotFoundError(f"no {spec.name} table under {work}; run `vdv {command}` first")
    try:
        return tables.read_table(work, spec).to_pylist()
    except tables.SchemaMismatch as err:  # an older work directory: that stage writes it anew
        raise tables.SchemaMismatch(f"{err}; run `vdv {command}` again") from None


# -- ingest ---------------------------------------------------------------------------------------


def run_ingest(
    raw_dir: str | Path,
    work: str | Path,
    config: Mapping[str, Any] | None = None,
    *,
    pairing: str | Path | None = None,
    crawl_time: str | None = None,
    probed: Mapping[str, Mapping[str, Any]] | None = None,
    override_file: str | Path | None = None,
    **overrides: Any,
) -> IngestResult:
    """``clips`` and the ingest rejections of ``raw_dir`` (:func:`pipeline.ingest.stage.prepare_clips`).

    ``pairing``: a pairing CSV; ``crawl_time``: the ``--crawl-time`` option (wins over ``[ingest]
    crawl_time``); ``probed``: files already probed elsewhere, by path; ``override_file``: the
    reviewer override CSV of screening (its ``keep`` admits a clip ingest judged a duplicate);
    ``overrides``: fields of ``[ingest]`` given on the command line.
    """
    from pipeline.ingest.metadata import parse_time

    cfg = stage_section(IngestConfig, config, "ingest", **overrides)
    decisions = _read_override_file(override_file)
    try:
        pairs = read_pairing(pairing) if pairing else None
    except InputError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from err
    try:
        crawl = parse_time(crawl_time if crawl_time is not None else cfg.crawl_time)
    except ValueError as err:
        raise ConfigError(f"crawl time: {err}") from err
    return prepare_clips(
        raw_dir, config=cfg, pairing=pairs, crawl_time=crawl, output_dir=work, probed=probed, overrides=decisions
    )


def _read_override_file(path: str | Path | None) -> dict | None:
    """The reviewer override CSV (:func:`pipeline.screening.stage.read_overrides`); a bad one is a ConfigError."""
    try:
        return read_overrides(path) if path else None
    except InputError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from err


def ingest_summary(result: IngestResult) -> dict:
    return {
        "clips": len(result.clips),
        "rejected": len(result.rejections),
        "reasons": result.reasons(),
        "metadata_problems": result.metadata_problems(),  # files or records that did not parse
        # clips ingest judged duplicates that a reviewer's keep admitted
        "kept_by_override": sum(1 for row in result.clips if row.get("ingest_override")),
    }


# -- screen ---------------------------------------------------------------------------------------


def pixel_rules(
    config: Mapping[str, Any] | None, work: str | Path, placement: Placement | None = None, **overrides: Any
) -> PixelRules | None:
    """The pixel rules of this run, cached in ``work`` with contact-sheet thumbnails; None when
    ``[screen] visual`` is off. A missing library is a ConfigError saying how to run without them."""
    if not stage_section(ScreenConfig, config, "screen", **overrides).visual:
        return None
    try:
        return PixelRules(config, work, thumbnails=True, placement=placement)
    except ImportError as err:
        raise ConfigError(f"pixel rules unavailable ({err}); pass --no-visual or set [screen] visual = false") from err


def pixel_rule_clips(work: str | Path, config: Mapping[str, Any] | None) -> list[dict]:
    """The clips whose pixel rules must run: they pass every cheap rule and the rules are on."""
    from pipeline.screening.stage import needs_pixels

    cfg = stage_section(ScreenConfig, config, "screen")
    if not cfg.visual:
        return []
    return [c for c in tables.read_table(work, tables.CLIPS).to_pylist() if needs_pixels(c, cfg)]


def run_screen(
    work: str | Path,
    config: Mapping[str, Any] | None = None,
    *,
    overrides: str | Path | None = None,
    pixels: PixelRules | None = None,
    placement: Placement | None = None,
    **settings: Any,
) -> ScreenResult:
    """``screening`` and the screen rejections of the ``clips`` table (:func:`pipeline.screening.stage.screen_clips`).

    The cheap rules run again; the pixel rules come from their per-clip shards, computed here for
    a clip that has none (``pixels``: the run's :func:`pixel_rules`, made here when None and the
    rules are on, with the people counter on ``placement``). ``overrides``: a reviewer override
    CSV; ``settings``: fields of ``[screen]``.
    """
    cfg = stage_section(ScreenConfig, config, "screen", **settings)
    clips = require_table(work, tables.CLIPS, "ingest")
    decisions = _read_override_file(overrides)
    if cfg.visual and pixels is None:
        pixels = pixel_rules(config, work, placement, **settings)
    with batched_clip_records():  # thousands of clip files confirmed in a row: their records written in batches
        return screen_clips(clips, cfg, overrides=decisions, visual=pixels if cfg.visual else None, output_dir=work)


def screen_summary(result: ScreenResult, pixels: PixelRules | None = None) -> dict:
    summary = {
        "screened": len(result.rows),
        "kept": len(result.kept),
        "rejected": len(result.rows) - len(result.kept),
        # every failing rule counts, so a clip rejected for two reasons appears under both
        "reasons": dict(
            Counter(reason for r in result.rows if not r["kept"] for reason in r["reasons"] or ["override_reject"])
        ),
        "notes": list(result.notes),
    }
    if pixels is not None:
        summary["pixel_rules"] = {"computed": pixels.computed, "reused": pixels.reused, "changed": pixels.changed}
    return summary


# -- score ----------------------------------------------------------------------------------------


def kept_clips(work: str | Path) -> list[dict]:
    """Rows of the ``clips`` table that screening kept, ordered by clip id."""
    kept = {row["clip_id"] for row in tables.read_table(work, tables.SCREENING).to_pylist() if row["kept"]}
    clips = tables.read_table(work, tables.CLIPS).to_pylist()
    return sorted((c for c in clips if c["clip_id"] in kept), key=lambda c: c["clip_id"])


def run_score(
    work: str | Path, config: Mapping[str, Any] | None = None, *, scale: str | Path | None = None
) -> ScoreResult:
    """``scores``, ``score_scale`` and the score rejections of the kept clips
    (:func:`pipeline.scoring.virality.score_clips`), on a scale fitted on them or on the stored ``scale``."""
    cfg = stage_section(ScoreConfig, config, "score")
    clips = require_table(work, tables.CLIPS, "ingest")
    kept = [row["clip_id"] for row in require_table(work, tables.SCREENING, "screen") if row["kept"]]
    stored = read_scale(scale, cfg) if scale else None
    return score_clips(clips, cfg, kept=kept, scale=stored, output_dir=work)


def score_summary(result: ScoreResult) -> dict:
    return {
        "scored": len(result.rows),
        "rejected": len(result.rejections),
        "challenges": {
            c: {"raw_min": s.raw_min, "raw_max": s.raw_max, "n_clips": s.n_clips} for c, s in result.scale.items()
        },
    }


def rejection_counts(rows: list[dict]) -> str:
    """``reason n, ...`` of rejection rows, for one line of output."""
    counts = Counter(row["reason"] for row in rows)
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "none"
