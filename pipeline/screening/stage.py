"""Screening: which ingested clips enter the dataset (SPEC section 2, paper section 3).

Rules run cheapest first. The cheap rules need only the ``clips`` table (metadata and probe):
uploader followers (at most ``max_followers``, default 1,000, so that virality depends on the
content and not on the uploader's reach) and duration bounds (5 to 60 s). The pixel rules (one
dancer, upper body visible, camera motion) live in ``pipeline.screening.visual`` and run only on clips
that passed every cheap rule. Every rule reports every reason it fails for, and the
``screening`` table records which rules were evaluated and what each measured.

A reviewer's override file (CSV ``id, decision, note``; ``id`` is a clip id or a platform video
id, ``decision`` is ``keep`` or ``reject``) wins over the automatic decision; both are stored.

Incremental screening: each rule has its own identity. The cheap rules read only the ``clips``
table and are evaluated again on every run, so a re-crawl that changes followers or counts is
followed at once. The pixel rules depend on the clip's bytes (its id), the ``[visual]``
settings and their code; :class:`PixelRules` keeps each clip's results in its own shard of the
``pixel_rules`` table, written as soon as the clip is done, and reuses them while that identity
is unchanged, so a daily re-crawl never decodes 4,292 clips again and a crash loses at most the
clips in flight. ``vdv screen`` and the build flow use the same cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.core import tables
from pipeline.core.checksums import check_shard, confirm_clip, write_shard
from pipeline.core.errors import ClipError, Reason, disk_full, rejection_row
from pipeline.core.placement import Placement
from pipeline.core.textfiles import csv_rows, read_text
from pipeline.screening.rules import RuleResult

log = logging.getLogger(__name__)

STAGE = "screen"

VisualScreen = Callable[[Mapping[str, Any]], list[RuleResult]]
"""``clip row -> rule results`` of the pixel rules (:class:`PixelRules`)."""


def pixel_rule_modules() -> tuple[ModuleType, ...]:
    """The code the pixel rules' results depend on (part of their identity), with the people
    counter's BlazePose backend's (:func:`pipeline.blazepose.track.backend_code`)."""
    from pipeline.core import decode
    from pipeline.modalities import skeleton
    from pipeline.screening import motion, people, rules, visual

    return (sys.modules[__name__], visual, rules, people, motion, skeleton, decode)


@dataclass(frozen=True)
class ScreenConfig:
    """``[screen]`` section of the configuration file."""

    # most uploader followers a kept clip may have (SPEC section 2); 0 disables the rule
    max_followers: int | None = 1000
    # duration bounds in seconds (SPEC section 2: at least 5 s; choice: at most 60 s); 0 disables max
    min_duration_s: float = 5.0
    max_duration_s: float | None = 60.0
    # run the pixel rules of pipeline.screening.visual on clips that pass the cheap rules
    visual: bool = True

    def __post_init__(self):
        # settings that would reject every clip are refused when the file is read, naming the keys
        if self.max_followers is not None and self.max_followers < 0:
            raise ValueError(
                f"[screen] max_followers = {self.max_followers} must not be negative (0 disables the rule)"
            )
        if self.min_duration_s < 0:
            raise ValueError(f"[screen] min_duration_s = {self.min_duration_s} must not be negative")
        if self.max_duration_s is not None and self.max_duration_s < 0:
            raise ValueError(f"[screen] max_duration_s = {self.max_duration_s} must not be negative (0 disables it)")
        if self.max_duration_s and self.min_duration_s > self.max_duration_s:
            raise ValueError(
                f"[screen] min_duration_s = {self.min_duration_s} is above max_duration_s = {self.max_duration_s}: "
                "no clip could pass the duration rule"
            )

    @property
    def follower_rule_on(self) -> bool:
        return bool(self.max_followers)


@dataclass(frozen=True)
class Override:
    decision: str  # keep | reject
    note: str | None


@dataclass
class ScreenResult:
    rows: list[dict] = field(default_factory=list)  # rows of tables.SCREENING
    rejections: list[dict] = field(default_factory=list)  # rows of tables.REJECTIONS, stage "screen"
    notes: list[str] = field(default_factory=list)  # what the run wants its user to know

    @property
    def kept(self) -> list[str]:
        return [row["clip_id"] for row in self.rows if row["kept"]]


# -- cheap rules ----------------------------------------------------------------------------------


def followers_rule(clip: Mapping[str, Any], config: ScreenConfig) -> RuleResult | None:
    """Uploader has at most ``max_followers`` followers; None when the rule is disabled."""
    if not config.follower_rule_on:
        return None
    followers = clip.get("uploader_followers")
    details = {"followers": followers, "max_followers": config.max_followers}
    if followers is None:
        return RuleResult("followers", False, [Reason.UNKNOWN_FOLLOWERS], details)
    if followers > config.max_followers:
        return RuleResult("followers", False, [Reason.TOO_MANY_FOLLOWERS], details)
    return RuleResult("followers", True, [], details)


def duration_rule(clip: Mapping[str, Any], config: ScreenConfig) -> RuleResult:
    """Decodable duration within [min_duration_s, max_duration_s]."""
    duration = clip.get("duration_s")
    details = {"duration_s": duration, "min_s": config.min_duration_s, "max_s": config.max_duration_s or None}
    reasons = []
    if duration is None or duration < config.min_duration_s:
        reasons.append(Reason.TOO_SHORT)
    elif config.max_duration_s and duration > config.max_duration_s:
        reasons.append(Reason.TOO_LONG)
    return RuleResult("duration", not reasons, reasons, details)


CHEAP_RULES: tuple[Callable[[Mapping[str, Any], ScreenConfig], RuleResult | None], ...] = (
    followers_rule,
    duration_rule,
)
"""Rules that need no pixels, in evaluation order. A rule returns None when disabled."""


# -- overrides ------------------------------------------------------------------------------------


def read_overrides(path: str | Path) -> dict[str, Override]:
    """Clip id or video id -> :class:`Override` from a CSV with columns ``id, decision[, note]``.

    ``clip_id`` or ``video_id`` are accepted as the name of the id column.
    """
    path = Path(path)
    # UTF-8 with or without a byte-order mark, comma-separated (pipeline.core.textfiles)
    reader = csv_rows(read_text(path, "override file"), f"{path}: override file")
    names = set(reader.fieldnames or ())
    id_column = next((c for c in ("id", "clip_id", "video_id") if c in names), None)
    if id_column is None or "decision" not in names:
        raise ValueError(f"{path}: an override file needs columns 'id' (or clip_id/video_id) and 'decision'")
    overrides: dict[str, Override] = {}
    for i, row in enumerate(reader, start=2):
        key = (row.get(id_column) or "").strip()
        decision = (row.get("decision") or "").strip().lower()
        if not key:
            raise ValueError(f"{path}:{i}: empty id")
        if decision not in ("keep", "reject"):
            raise ValueError(f"{path}:{i}: decision must be keep or reject, not {decision!r}")
        if key in overrides:
            raise ValueError(f"{path}:{i}: {key} has two overrides")
        overrides[key] = Override(decision, (row.get("note") or "").strip() or None)
    return overrides


# -- the stage ------------------------------------------------------------------------------------


def visual_screener(
    config: Mapping[str, Any] | None = None, work: str | Path | None = None, placement: Placement | None = None
) -> PixelRules:
    """The pixel rules of ``pipeline.screening.visual`` with their ``[visual]`` configuration, cached in
    ``work`` when given (see :class:`PixelRules`), with contact-sheet thumbnails for the report."""
    return PixelRules(config, work, thumbnails=work is not None, placement=placement)


def _encode(results: list[RuleResult]) -> str:
    return json.dumps(
        [
            {"rule": r.rule, "passed": r.passed, "reasons": [x.value for x in r.reasons], "details": r.details}
            for r in results
        ],
        sort_keys=True,
        default=str,
    )


def _decode(text: str) -> list[RuleResult]:
    return [
        RuleResult(r["rule"], r["passed"], [Reason(x) for x in r["reasons"]], r["details"]) for r in json.loads(text)
    ]


class PixelRules:
    """The pixel rules (one dancer, upper body, camera motion) with a per-clip result cache.

    Imported lazily: the pixel rules load pose models that a run without them should not pay
    for. ``work`` None computes every time (nothing is cached). ``thumbnails`` writes the
    contact sheet of the analysed frames under ``<work>/report/thumbs`` (the build report's
    pictures, from the frames the rules decode anyway); it is part of the identity, since the
    stored details then describe the sheet.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        work: str | Path | None = None,
        *,
        thumbnails: bool = False,
        placement: Placement | None = None,
    ):
        from pipeline.blazepose.track import backend_code
        from pipeline.core.config import stage_config
        from pipeline.core.provenance import canonical_json, code_version
        from pipeline.screening import visual

        self.config = stage_config(visual.VisualConfig, dict(config or {}), "visual")
        # the people counter runs where the run's placement says (resolved here when not given)
        self.pose = visual.counter_settings(dict(config or {}), placement)
        self.work = None if work is None else Path(work)
        self.computed = self.reused = 0  # this object's cache misses and hits
        self.changed = 0  # clips whose file is no longer the ingested content (clip_changed)
        self.decoded_frames = 0  # frames its own decode passes put out (pipeline.core.decode)
        self.thumbnails = bool(thumbnails and self.work is not None)
        self._fingerprint = canonical_json(
            {
                "visual": dataclasses.asdict(self.config),
                "people_counter": dataclasses.asdict(self.pose),
                "code": code_version(*pixel_rule_modules(), *backend_code(self.pose.backend)),
                "thumbnails": self.thumbnails,
            }
        )

    def identity(self, clip_id: str) -> str:
        return hashlib.sha256(f"{clip_id}\n{self._fingerprint}".encode()).hexdigest()

    def shard_path(self, clip_id: str) -> Path:
        """``<work>/pixel_rules/<clip_id[:2]>/pixel_rules.<clip_id[:16]>.<identity[:12]>.parquet``:
        fanned out by clip id, so that a crawl of any size keeps each folder small (docs/SCALE.md).
        A shard of the flat layout before the fan-out has no checksum record, so it is never
        reused (:mod:`pipeline.core.checksums`); the next write removes it."""
        flat = tables.shard_path(self.work, "pixel_rules", f"{clip_id[:16]}.{self.identity(clip_id)[:12]}")
        return flat.parent / clip_id[: tables.FAN_OUT] / flat.name

    def cached(self, clip_id: str) -> list[RuleResult] | None:
        """The clip's stored results when they are current, else None."""
        if self.work is None:
            return None
        check = check_shard(self.work, self.shard_path(clip_id), keep=True)
        if not check.ok:
            if check.status != "missing":
                log.warning("pixel rules of %s not reused, computed again: %s", clip_id[:12], check.why())
            return None
        row = tables.read_file(check.path, tables.PIXEL_RULES, data=check.data).to_pylist()[0]
        return _decode(row["results"])

    def run(self, clip: Mapping[str, Any]) -> tuple[list[RuleResult], bool]:
        """``(results, computed)``: the stored results, or the rules run now (and stored).

        First the clip file is confirmed to be the ingested content (its sha256 is the clip id,
        :func:`pipeline.core.checksums.confirm_clip`); a changed file is the ``clip_changed`` result,
        never stored. A stored result is reused only when its shard is the file that was written
        (:func:`pipeline.core.checksums.check_shard`)."""
        import time

        from pipeline.screening import visual

        try:  # the file must still be the ingested content, whether its results are stored or not
            confirm_clip(self.work, clip["clip_id"], clip["path"])
        except ClipError as err:
            self.changed += 1
            return [RuleResult("visual", False, [err.reason], {"error": err.message})], False
        found = self.cached(clip["clip_id"])
        if found is not None:
            self.reused += 1
            return found, False
        self.computed += 1
        t0 = time.monotonic()
        stats: dict = {}
        results = _run_visual(
            lambda c: visual.screen_visual(
                c["path"],
                c["clip_id"],
                self.config,
                duration_s=c.get("duration_s"),
                thumbnails=self.thumbs_dir(),
                pose=self.pose,
                stats=stats,
            ),
            clip,
        )
        self.decoded_frames += stats.get("decoded_frames", 0)
        self.store(clip, results, time.monotonic() - t0)
        return results, True

    def judge(self, clip: Mapping[str, Any], sampled, error: ClipError | None, seconds: float) -> list[RuleResult]:
        """The rules on frames sampled by a pass that served other grids too (``sampled``: a
        :class:`pipeline.screening.visual.SampledFrames`; ``error``: that pass's decoder error), stored as
        :meth:`run` stores them."""
        import time

        from pipeline.screening import visual

        self.computed += 1
        t0 = time.monotonic()
        results = _run_visual(
            lambda c: visual.judge_frames(
                sampled.frames,
                c["clip_id"],
                self.config,
                sampled.params,
                thumbnails=self.thumbs_dir(),
                pose=self.pose,
                error=error,
            ),
            clip,
        )
        self.store(clip, results, seconds + time.monotonic() - t0)
        return results

    def thumbs_dir(self) -> Path | None:
        """Where the contact sheets go (None: not written)."""
        return tables.thumbnails_dir(self.work) if self.thumbnails else None

    def store(self, clip: Mapping[str, Any], results: list[RuleResult], seconds: float) -> None:
        """Write the clip's results as its current shard (nothing without ``work``)."""
        from pipeline.core.runtime import worker_name

        if self.work is None:
            return
        row = {
            "clip_id": clip["clip_id"],
            "identity": self.identity(clip["clip_id"]),
            "results": _encode(results),
            "seconds": round(seconds, 3),
            "worker": worker_name(),
        }
        target = self.shard_path(clip["clip_id"])
        write_shard(self.work, target, tables.to_table([row], tables.PIXEL_RULES, where=str(target)))
        pattern = f"pixel_rules.{clip['clip_id'][:16]}.*.parquet"  # older identities, and the flat layout
        for stale in [*target.parent.glob(pattern), *target.parent.parent.glob(pattern)]:
            if stale != target:
                stale.unlink(missing_ok=True)

    def __call__(self, clip: Mapping[str, Any]) -> list[RuleResult]:
        return self.run(clip)[0]


def needs_pixels(clip: Mapping[str, Any], config: ScreenConfig) -> bool:
    """True when the clip passes every cheap rule, so its pixel rules decide."""
    return all(r.passed for r in (rule(clip, config) for rule in CHEAP_RULES) if r is not None)


def _run_visual(visual: VisualScreen, clip: Mapping[str, Any]) -> list[RuleResult]:
    try:
        return list(visual(clip))
    except ClipError as err:
        return [RuleResult("visual", False, [err.reason], {"error": err.message})]
    except Exception as err:  # noqa: BLE001 - one clip's failure is recorded, the run goes on
        if (full := disk_full(err)) is not None:
            raise full from err  # the machine's fault, not the clip's: the run stops
        log.exception("pixel rules failed on %s", clip["path"])
        return [RuleResult("visual", False, [Reason.EXTRACT_FAILED], {"error": f"{type(err).__name__}: {err}"})]


def screen_clip(
    clip: Mapping[str, Any],
    config: ScreenConfig,
    *,
    override: Override | None = None,
    visual: VisualScreen | None = None,
) -> dict:
    """One ``screening`` row: every rule's verdict, the automatic decision and the override."""
    results = [r for r in (rule(clip, config) for rule in CHEAP_RULES) if r is not None]
    if visual is not None and all(r.passed for r in results):
        results.extend(_run_visual(visual, clip))
    reasons = [reason.value for r in results for reason in r.reasons]
    automatic = all(r.passed for r in results)
    kept = automatic
    if override is not None:
        kept = override.decision == "keep"
        if not kept:
            reasons.append(Reason.OVERRIDE_REJECT.value)
    details = {r.rule: {"passed": r.passed, **r.details} for r in results}
    return {
        "clip_id": clip["clip_id"],
        "video_id": clip.get("video_id"),
        "kept": kept,
        "automatic_kept": automatic,
        "reasons": reasons,
        "rules_evaluated": [r.rule for r in results],
        "override": None if override is None else override.decision,
        "override_note": None if override is None else override.note,
        "details": json.dumps(details, sort_keys=True, default=str),
    }


def screen_clips(
    clips: Iterable[Mapping[str, Any]],
    config: ScreenConfig = ScreenConfig(),
    *,
    overrides: Mapping[str, Override] | None = None,
    visual: VisualScreen | None = None,
    output_dir: str | Path | None = None,
) -> ScreenResult:
    """Screen every clip; write ``screening`` and the screen rejections only given ``output_dir``.

    ``visual`` runs the pixel rules (see :func:`visual_screener`); None when ``config.visual``
    is off or for a run that tests the cheap rules alone.
    """
    clips = list(clips)
    overrides = dict(overrides or {})
    result = ScreenResult()
    if not config.follower_rule_on:
        result.notes.append(
            "follower rule DISABLED (max_followers = 0): clips are kept whatever their uploader's reach"
        )
    if visual is None:
        result.notes.append("pixel rules (one dancer, upper body, camera motion) NOT evaluated")
    used: set[str] = set()
    for i, clip in enumerate(clips, start=1):
        key = clip["clip_id"] if clip["clip_id"] in overrides else clip.get("video_id")
        override = overrides.get(key) if key is not None else None
        if override is not None:
            used.add(key)
        row = screen_clip(clip, config, override=override, visual=visual)
        result.rows.append(row)
        verdict = "kept" if row["kept"] else "rejected " + ",".join(row["reasons"])
        log.info(
            "[%d/%d] %s: %s%s",
            i,
            len(clips),
            Path(clip["path"]).name,
            verdict,
            f" (override {override.decision})" if override else "",
        )
        if not row["kept"]:
            result.rejections.append(
                rejection_row(
                    STAGE,
                    # the first failing rule is the row's reason; the message lists every one
                    Reason(row["reasons"][0]),
                    "; ".join(row["reasons"])
                    + _changed_note(row)
                    + (f" (override note: {override.note})" if override and override.note else ""),
                    clip_id=row["clip_id"],
                    video_id=row["video_id"],
                    path=clip["path"],
                )
            )
    unused = sorted(set(overrides) - used)
    if unused:
        result.notes.append(f"{len(unused)} override(s) match no clip: {', '.join(unused)}")
        log.warning("overrides that match no clip: %s", unused)
    if output_dir is not None:
        write_screening(result, output_dir)
    return result


def _changed_note(row: Mapping[str, Any]) -> str:
    """``: <what changed, and the fix>`` for a clip whose file changed after ingest, else ``""``."""
    if Reason.CLIP_CHANGED.value not in row["reasons"]:
        return ""
    return ": " + json.loads(row["details"]).get("visual", {}).get("error", "")


def write_screening(result: ScreenResult, work: str | Path) -> tuple[Path, Path]:
    screening = tables.replace_table(result.rows, tables.SCREENING, work)
    rejected = tables.write_table(result.rejections, tables.REJECTIONS, tables.shard_path(work, "rejections", STAGE))
    return screening, rejected
