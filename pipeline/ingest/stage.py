"""Ingest: raw clips + metadata -> the ``clips`` manifest and ``rejections`` (SPEC sections 1-2).

Raw layout
----------
::

    RAW_DIR/clips/<video_id>.mp4        one file per clip (.mp4 .mov .m4v .webm .mkv .avi)
    RAW_DIR/metadata/*.json|*.jsonl|*.csv  records (see pipeline.ingest.metadata for the columns)

A clip file's stem is its platform video id, unless a pairing file (CSV with columns ``file,
video_id[, challenge]``; ``file`` is the name inside ``clips/``) maps file names to records and,
optionally, assigns the challenge (SPEC section 3: a demo pairing real clips with real records
assigns challenges in its pairing file).

Every clip ends as either one ``clips`` row or one ``rejections`` row (stage ``ingest``), and
so does every metadata record: a record no clip points at is rejected as ``NO_CLIP``. The clip
id is the sha256 of the file's bytes; among clips with the same bytes the earliest upload
(create time) survives and the others are ``DUPLICATE_CONTENT``, and so are re-encodings of an
earlier upload (another codec, bitrate or resolution: same content signature, computed in the
probe's own pass over the file, :mod:`pipeline.ingest.signature`).

:func:`prepare_clips` computes the records and writes nothing unless given ``output_dir``.
"""

from __future__ import annotations

import csv
import errno
import functools
import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.core import tables
from pipeline.core.errors import ClipError, InputError, Reason, rejection_row
from pipeline.core.provenance import sha256_file
from pipeline.core.runtime import worker_name
from pipeline.core.textfiles import TextFileError, csv_rows, read_text
from pipeline.ingest.metadata import (
    CHALLENGE_RULES,
    MetadataRecord,
    check_record,
    derive_challenge,
    metadata_files,
    parse_time,
    read_metadata_file,
)
from pipeline.ingest.probe import MIN_DECODABLE_RATIO, ProbeResult, ProbeWorker, borrowed_worker
from pipeline.ingest.signature import (
    SIGNATURE_VERSION,
    Signature,
    SignatureIndex,
    best_match_pairwise,
    signature_version,
)

log = logging.getLogger(__name__)

STAGE = "ingest"
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi")
PAIRING_COLUMNS = ("file", "video_id")  # required; "challenge" is optional


@dataclass(frozen=True)
class IngestConfig:
    """``[ingest]`` section of the configuration file."""

    # wall-clock seconds one clip's probe may take before it is killed (DECODE_TIMEOUT)
    probe_budget_s: float = 60.0
    # decodable / claimed duration under this is a clip cut mid-stream (SPEC section 2)
    min_decodable_ratio: float = MIN_DECODABLE_RATIO
    # crawl time for records without one (ISO 8601); the --crawl-time option overrides it
    crawl_time: str | None = None
    # how a record without an explicit challenge gets one: none | music_id | hashtag
    challenge_rule: str = "none"
    # hashtags that name challenges for challenge_rule = "hashtag" (generic ones never count)
    challenge_hashtags: tuple[str, ...] = ()
    # file suffixes taken as clips; other files in clips/ are rejected as NOT_A_VIDEO
    video_suffixes: tuple[str, ...] = VIDEO_SUFFIXES

    def __post_init__(self):
        if self.challenge_rule not in CHALLENGE_RULES:
            raise ValueError(f"[ingest] challenge_rule must be one of {CHALLENGE_RULES}, not {self.challenge_rule!r}")
        if self.probe_budget_s <= 0:
            raise ValueError("[ingest] probe_budget_s must be positive")


@dataclass(frozen=True)
class Pairing:
    video_id: str
    challenge: str | None = None


@dataclass
class IngestResult:
    clips: list[dict] = field(default_factory=list)  # rows of tables.CLIPS
    rejections: list[dict] = field(default_factory=list)  # rows of tables.REJECTIONS

    def reasons(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for row in self.rejections:
            counts[row["reason"]] += 1
        return dict(sorted(counts.items()))

    def metadata_problems(self, limit: int = 10) -> list[str]:
        """One line per metadata file or record that did not parse (see :func:`metadata_problems`)."""
        return metadata_problems(self.rejections, limit)


def metadata_problems(rejections: list[dict], limit: int = 10) -> list[str]:
    """Lines naming each metadata file or record that did not parse, and why (for summaries).

    A count of ``bad_metadata`` alone does not tell a data engineer which file to fix; the
    message of such a rejection names the file and the parser's error (line, column).
    """
    rows = [r for r in rejections if r["reason"] == Reason.BAD_METADATA.value and r.get("clip_id") is None]
    lines = [
        r["message"] if r.get("path") and r["path"] in r["message"] else f"{r.get('path')}: {r['message']}"
        for r in rows
    ]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more (rejections table, reason bad_metadata)"]
    return lines


def read_pairing(path: str | Path) -> dict[str, Pairing]:
    """File name -> :class:`Pairing` from a CSV with columns ``file, video_id[, challenge]``.

    A malformed file raises :class:`~pipeline.core.errors.InputError` naming the file, the line or
    the missing column.
    """
    path = Path(path)
    try:
        reader = csv_rows(read_text(path, "pairing file"), f"{path}: pairing file", skip_comments=True)
        columns = [c.strip() for c in reader.fieldnames or ()]
        missing = [c for c in PAIRING_COLUMNS if c not in columns]
        if missing:
            raise InputError(
                f"{path}: pairing file lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"(header: {','.join(columns) or 'none'}; expected file,video_id[,challenge])"
            )
        reader.fieldnames = columns
        pairing: dict[str, Pairing] = {}
        for row in reader:
            i = reader.line_num
            name = (row.get("file") or "").strip()
            video_id = (row.get("video_id") or "").strip()
            if not name or not video_id:
                raise InputError(f"{path}:{i}: empty file or video_id")
            if name in pairing:
                raise InputError(f"{path}:{i}: {name} is paired twice")
            pairing[name] = Pairing(video_id, (row.get("challenge") or "").strip() or None)
    except TextFileError as err:
        raise InputError(str(err)) from None
    except csv.Error as err:
        raise InputError(f"{path}: pairing file is not valid CSV ({err})") from None
    return pairing


def _seconds(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(microsecond=0)


def _crawl_key(record: MetadataRecord) -> float:
    return record.crawl_time.timestamp() if record.crawl_time else float("-inf")


def load_records(raw_dir: str | Path, crawl_time: datetime | None) -> tuple[dict[str, MetadataRecord], list[dict]]:
    """Every record under ``RAW_DIR/metadata`` by video id, and the rejections of unreadable ones.

    A video id seen in several files keeps the record crawled last (its counts are the latest).
    """
    records: dict[str, MetadataRecord] = {}
    rejections: list[dict] = []
    files = metadata_files(raw_dir)
    if not files:
        log.warning("no metadata files under %s", Path(raw_dir) / "metadata")
    for path in files:
        found, problems = read_metadata_file(path, crawl_time)
        for problem in problems:
            rejections.append(
                rejection_row(
                    STAGE, Reason.BAD_METADATA, problem.message, video_id=problem.video_id, path=problem.source
                )
            )
        for record in found:
            old = records.get(record.video_id)
            if old is not None:
                log.info(
                    "video %s appears in %s and %s; keeping the later crawl", record.video_id, old.source, record.source
                )
                if old.crawl_time is not None and _crawl_key(record) == _crawl_key(old):
                    _warn_conflict(old, record)
                if _crawl_key(record) <= _crawl_key(old):
                    continue
            records[record.video_id] = record
    return records, rejections


_COMPARED = ("likes", "comments", "reposts", "plays", "followers", "create_time")


def _warn_conflict(kept: MetadataRecord, other: MetadataRecord) -> None:
    """Two records of one video crawled at the same time: nothing says which counts are the
    latest, so the first file (by name) is kept, and a warning names both files when they differ."""
    differ = [
        f"{name} {getattr(kept, name)} vs {getattr(other, name)}"
        for name in _COMPARED
        if getattr(kept, name) != getattr(other, name)
    ]
    if differ:
        when = kept.crawl_time.isoformat() if kept.crawl_time else None
        log.warning(
            "video %s: %s and %s have the same crawl time (%s) but different %s; keeping %s (first by file name)",
            kept.video_id,
            kept.source,
            other.source,
            when,
            ", ".join(differ),
            Path(kept.source).name,
        )


def _clip_row(path: Path, clip_id: str, record: MetadataRecord, probe: ProbeResult, override: str | None) -> dict:
    return {
        "clip_id": clip_id,
        "video_id": record.video_id,
        "path": str(path),
        "challenge": record.challenge,
        "uploader_id": record.uploader_id,
        "uploader_followers": record.followers,
        "likes": record.likes,
        "comments": record.comments,
        "reposts": record.reposts,
        "plays": record.plays,
        "create_time": _seconds(record.create_time),
        "crawl_time": _seconds(record.crawl_time),
        "crawl_time_source": record.crawl_time_source,
        "metadata_source": Path(record.source).name,
        "duration_s": probe.duration_s,
        "container_duration_s": probe.container_duration_s,
        "frame_count": probe.frame_count,
        "avg_fps": probe.avg_fps,
        "width": probe.width,
        "height": probe.height,
        "rotation": probe.rotation,
        "video_codec": probe.video_codec,
        "has_audio": probe.has_audio,
        "audio_codec": probe.audio_codec,
        "size_bytes": path.stat().st_size,
        "content_signature": probe.content_signature,
        "ingest_override": None if override is None else "keep",
        "ingest_override_note": override,
    }


def prepare_clips(
    raw_dir: str | Path,
    *,
    config: IngestConfig = IngestConfig(),
    pairing: dict[str, Pairing] | None = None,
    crawl_time: datetime | str | None = None,
    output_dir: str | Path | None = None,
    probed: Mapping[str, Mapping[str, Any]] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> IngestResult:
    """Build the clip manifest of ``raw_dir``; write the tables only when ``output_dir`` is given.

    ``crawl_time`` (the ``--crawl-time`` option) wins over ``config.crawl_time``; both apply only
    to records without their own crawl time column. ``probed`` maps a file's path to what
    :func:`probe_file` found, computed elsewhere (the flows map it over clips on their workers);
    the other files are hashed and probed here. ``overrides``: the reviewer's decisions by clip id
    or video id (``pipeline.screening.stage.read_overrides``); a ``keep`` admits a clip that ingest judged
    a re-encoding of an earlier upload, and its row says so.
    """
    raw_dir = check_raw_dir(raw_dir)
    clips_dir = raw_dir / "clips"
    crawl = parse_time(crawl_time if crawl_time is not None else config.crawl_time)
    pairing = pairing or {}
    records, rejections = load_records(raw_dir, crawl)
    result = IngestResult(rejections=rejections)

    files = _listed(clips_dir)
    for name in sorted(set(pairing) - {p.name for p in files}):
        log.warning("pairing names %s, which is not in %s", name, clips_dir)
    used: dict[str, str] = {}  # video id -> file name that claimed its record
    candidates = _probe_files(files, pairing, records, used, config, result.rejections, probed or {})
    result.clips = [_clip_row(*c, note) for *c, note in _unique_content(candidates, result.rejections, overrides or {})]
    result.clips.sort(key=lambda row: row["path"])

    for video_id, record in sorted(records.items()):
        if video_id not in used:
            result.rejections.append(
                rejection_row(
                    STAGE, Reason.NO_CLIP, f"no clip file for video {video_id}", video_id=video_id, path=record.source
                )
            )

    if output_dir is not None:
        write_ingest(result, output_dir)
    return result


def _probe_files(files, pairing, records, used, config, rejections: list[dict], known) -> list[tuple]:
    """``(path, clip_id, record, probe)`` of each acceptable file; the others' rows go to ``rejections``.

    ``known``: :func:`probe_file` results by path, used instead of hashing and probing again; one
    whose content signature is of another version (another duplicate rule) is probed again.
    """
    suffixes = {s.lower() for s in config.video_suffixes}
    candidates: list[tuple[Path, str, MetadataRecord, ProbeResult]] = []
    probed: dict[str, ProbeResult | ClipError] = {}  # same bytes are probed once
    hashes: dict[str, str] = {}
    stale = 0
    for found in known.values():
        if found.get("clip_id"):
            hashes[found["path"]] = found["clip_id"]
            if _stale_signature(found.get("probe")):
                stale += 1
                continue
            probed[found["clip_id"]] = _outcome(found)
    if stale:
        log.info("%d clip(s) probed again: their content signatures are not of version %s", stale, SIGNATURE_VERSION)
    with ProbeWorker(config.probe_budget_s, config.min_decodable_ratio) as worker:
        for i, path in enumerate(files, start=1):
            outcome = _ingest_one(path, suffixes, pairing, records, used, probed, worker, config, hashes)
            if isinstance(outcome, dict):
                rejections.append(outcome)
                log.info(
                    "[%d/%d] %s: rejected (%s) %s", i, len(files), path.name, outcome["reason"], outcome["message"]
                )
                continue
            candidates.append(outcome)
            probe = outcome[3]
            log.info(
                "[%d/%d] %s: %.1f s %dx%d %s",
                i,
                len(files),
                path.name,
                probe.duration_s,
                probe.width,
                probe.height,
                probe.video_codec,
            )
    return candidates


def _unique_content(candidates: list[tuple], rejections: list[dict], overrides: Mapping[str, Any]) -> list[tuple]:
    """The candidates left once duplicate content is dropped, each with its override note (None
    when no override applied): the earliest upload survives (SPEC section 2), whether the bytes
    are the same or re-encoded; the dropped ones' rows go to ``rejections``. A re-encoding that
    the reviewer's ``overrides`` keep (by clip id or video id) stays, its note saying what ingest
    judged."""
    by_content: dict[str, list] = defaultdict(list)
    for candidate in candidates:
        by_content[candidate[1]].append(candidate)
    survivors = []
    for clip_id, group in by_content.items():
        group.sort(key=_upload_order)
        path, _, record, _ = group[0]
        survivors.append(group[0])
        for dup_path, _, dup, _ in group[1:]:
            rejections.append(
                rejection_row(
                    STAGE,
                    Reason.DUPLICATE_CONTENT,
                    f"same bytes as video {record.video_id} ({path.name}), uploaded earlier",
                    clip_id=clip_id,
                    video_id=dup.video_id,
                    path=str(dup_path),
                )
            )
    notes: dict[str, str] = {}
    dropped_ids: set[str] = set()
    for kept, dropped, bits in near_duplicates(survivors):
        path, _, record, _ = kept
        dup_path, dup_id, dup, _ = dropped
        judged = (
            f"re-encoding of video {record.video_id} ({path.name}), uploaded earlier: same duration and "
            f"frames (perceptual hashes {bits:.1f} bits apart on average, every slice but one close)"
        )
        override = _keep_override(overrides, dup_id, dup.video_id)
        if override is not None:
            notes[dup_id] = (
                f"kept by reviewer override{f' ({override.note})' if override.note else ''}; ingest judged: {judged}"
            )
            log.info("%s: %s", dup_path.name, notes[dup_id])
            continue
        dropped_ids.add(dup_id)
        rejections.append(
            rejection_row(
                STAGE, Reason.DUPLICATE_CONTENT, judged, clip_id=dup_id, video_id=dup.video_id, path=str(dup_path)
            )
        )
    return [(*c, notes.get(c[1])) for c in survivors if c[1] not in dropped_ids]


def _keep_override(overrides: Mapping[str, Any], clip_id: str, video_id: str):
    """The reviewer's ``keep`` for this clip (by clip id, else video id), or None."""
    override = overrides.get(clip_id) or overrides.get(video_id)
    return override if override is not None and override.decision == "keep" else None


def _upload_order(candidate) -> tuple:
    record = candidate[2]
    return (record.create_time, record.video_id)


def near_duplicates(candidates: list[tuple], *, pairwise: bool = False) -> list[tuple[tuple, tuple, float]]:
    """(kept, dropped, mean hash bits) for each candidate that re-encodes an earlier upload.

    ``candidates`` are ``(path, clip_id, record, probe)`` of distinct bytes. They are taken in
    upload order; each is compared with the earlier survivors (:func:`pipeline.ingest.signature.near_duplicate`)
    and dropped for the closest one that matches. The survivors are held in a
    :class:`~pipeline.ingest.signature.SignatureIndex`, which finds the few that can match without
    comparing every pair (thousands of clips of one challenge sound share one duration);
    ``pairwise`` compares every pair instead, the reference the index must agree with.
    """
    index = SignatureIndex()
    kept: list[tuple] = []
    found = []
    for candidate in sorted(candidates, key=_upload_order):
        signature = Signature.parse(candidate[3].content_signature)
        if signature is None:
            continue  # no signature: the probe said so (a frame it could not hash)
        match = best_match_pairwise(index.signatures, signature) if pairwise else index.best_match(signature)
        if match is not None:
            found.append((kept[match[0]], candidate, match[1]))
        else:
            index.add(signature)
            kept.append(candidate)
    return found


def _ingest_one(path, suffixes, pairing, records, used, probed, worker, config, hashes):
    """One clip file -> (path, clip_id, record, probe) or a rejection row."""
    if path.suffix.lower() not in suffixes:
        return rejection_row(
            STAGE,
            Reason.NOT_A_VIDEO,
            f"{path.name}: suffix {path.suffix or '(none)'} is not a video suffix",
            path=str(path),
        )
    paired = pairing.get(path.name)
    video_id = paired.video_id if paired else path.stem
    try:
        clip_id = hashes.get(str(path)) or sha256_file(path)
    except OSError as err:
        message = _broken_link(path) or f"cannot read {path.name}: {err.strerror or err}"
        return rejection_row(STAGE, Reason.UNREADABLE, message, video_id=video_id, path=str(path))
    reject = functools.partial(rejection_row, STAGE, clip_id=clip_id, video_id=video_id, path=str(path))
    record = records.get(video_id)
    if record is None:
        return reject(Reason.NO_METADATA, f"no metadata record for video {video_id}")
    if video_id in used:
        return reject(Reason.BAD_METADATA, f"video {video_id} is already paired with {used[video_id]}")
    used[video_id] = path.name
    if paired and paired.challenge:
        record = replace(record, challenge=paired.challenge, challenge_source="pairing")
    challenge, source = derive_challenge(record, config.challenge_rule, config.challenge_hashtags)
    record = replace(record, challenge=challenge, challenge_source=source)
    try:
        check_record(record)
    except ClipError as err:
        return reject(err.reason, err.message)
    if clip_id not in probed:
        try:
            probed[clip_id] = worker.probe(path, clip_id)
        except ClipError as err:
            probed[clip_id] = err
    outcome = probed[clip_id]
    if isinstance(outcome, ClipError):
        return reject(outcome.reason, outcome.message)
    return path, clip_id, record, outcome


def check_raw_dir(raw_dir: str | Path, label: str = "RAW_DIR") -> Path:
    """``raw_dir`` resolved, once it is known to hold ``clips/``; else an :class:`InputError`.

    An input error, not a missing file that might come back: a build's ingest task retries an
    ``OSError``, and a raw directory given wrong is wrong on every retry. ``label`` names where
    the path came from (the argument, an option, a flow parameter).
    """
    path = Path(raw_dir)
    expected = "expected RAW_DIR/clips/ and RAW_DIR/metadata/"
    if not path.exists():
        raise InputError(f"{label} {raw_dir}: no such directory ({expected})")
    if not path.is_dir():
        raise InputError(f"{label} {raw_dir}: not a directory ({expected})")
    if not (path / "clips").is_dir():
        raise InputError(f"{label} {raw_dir}: no clips/ directory in it ({expected})")
    return path.resolve()


def clip_files(raw_dir: str | Path, config: IngestConfig = IngestConfig()) -> list[Path]:
    """The files of ``RAW_DIR/clips`` with a video suffix: what :func:`prepare_clips` probes."""
    clips_dir = Path(raw_dir).resolve() / "clips"
    suffixes = {s.lower() for s in config.video_suffixes}
    return [p for p in _listed(clips_dir) if p.suffix.lower() in suffixes] if clips_dir.is_dir() else []


def _listed(clips_dir: Path) -> list[Path]:
    """The files of ``clips_dir`` that ingest looks at (hidden files are not clips), sorted.

    A symbolic link that leads nowhere (its target is gone, or it is a loop) is listed too, so
    that it becomes a rejection rather than vanishing; a link to a directory is not a clip.
    """
    return sorted(
        p
        for p in clips_dir.iterdir()
        if not p.name.startswith(".") and (p.is_file() or (p.is_symlink() and not p.is_dir()))
    )


def _broken_link(path: Path) -> str | None:
    """Why the symbolic link ``path`` cannot be followed (a missing target, a loop); None when it
    is not a broken link."""
    if not path.is_symlink():
        return None
    try:
        target = os.readlink(path)
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop so
        return f"{path.name} is a symbolic link loop ({path.name} -> {target})"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{path.name} is a symbolic link loop ({path.name} -> {target})"
        return f"{path.name} is a symbolic link to {target}, which does not exist"
    return None


def probe_file(path: str | Path, config: IngestConfig = IngestConfig()) -> dict[str, Any]:
    """One clip file's content id and probe, as plain values that travel from any worker.

    ``{"path", "clip_id", "probe" (ProbeResult or None), "reason", "message", "worker"}``; a file
    that cannot be read has no clip id, a bad video a reason and a message. Probes run in this
    process's probe workers (:func:`pipeline.ingest.probe.borrowed_worker`), within the budget.
    """
    found: dict[str, Any] = {"path": str(path), "clip_id": None, "probe": None, "reason": None, "message": None}
    found["worker"] = worker_name()
    try:
        found["clip_id"] = sha256_file(path)
        with borrowed_worker(config.probe_budget_s, config.min_decodable_ratio) as worker:
            found["probe"] = worker.probe(path, found["clip_id"])
    except OSError:
        found["clip_id"] = None  # prepare_clips reads the file again and records why it cannot
    except ClipError as err:
        found["reason"], found["message"] = err.reason.value, err.message
    return found


def _stale_signature(probe: ProbeResult | None) -> bool:
    """True for a probe whose content signature another duplicate rule made (it would never match)."""
    version = signature_version(probe.content_signature) if probe is not None else None
    return version is not None and version != SIGNATURE_VERSION


def _outcome(found: Mapping[str, Any]) -> ProbeResult | ClipError:
    if found.get("probe") is not None:
        return found["probe"]
    return ClipError(found["clip_id"], Reason(found["reason"]), found["message"])


def write_ingest(result: IngestResult, work: str | Path) -> tuple[Path, Path]:
    """Write ``clips`` and the ingest shard of ``rejections`` (replacing a previous ingest)."""
    clips = tables.replace_table(result.clips, tables.CLIPS, work)
    rejected = tables.write_table(result.rejections, tables.REJECTIONS, tables.shard_path(work, "rejections", STAGE))
    return clips, rejected
