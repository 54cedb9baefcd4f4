"""Typed errors and the reason codes recorded in the ``rejections`` and ``screening`` tables."""

from __future__ import annotations

import errno
import os
from enum import StrEnum
from pathlib import Path


class Reason(StrEnum):
    """Why a clip (or a metadata record) left the pipeline. Values are stored in tables."""

    # ingest: the file
    NOT_A_VIDEO = "not_a_video"  # no video stream / not a media container
    UNREADABLE = "unreadable_video"  # container opens but frames cannot be decoded
    ZERO_FRAMES = "zero_frames"
    TRUNCATED = "truncated"  # decodable duration < 90 % of the container's claim
    DECODE_TIMEOUT = "decode_timeout"  # exceeded the per-clip decoding budget
    DUPLICATE_CONTENT = "duplicate_content"  # same bytes as an earlier upload
    # ingest: the metadata
    NO_METADATA = "no_metadata"  # a clip with no metadata record
    NO_CLIP = "no_clip"  # a metadata record with no clip file
    BAD_METADATA = "bad_metadata"  # unparsable record or field
    MISSING_COUNTS = "missing_counts"
    NEGATIVE_COUNTS = "negative_counts"
    NO_CRAWL_TIME = "no_crawl_time"
    CREATE_AFTER_CRAWL = "create_after_crawl"
    NO_CHALLENGE = "no_challenge"
    # screening (SPEC section 2)
    TOO_MANY_FOLLOWERS = "too_many_followers"
    UNKNOWN_FOLLOWERS = "unknown_followers"  # the follower rule is on but the count is absent
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    NO_DANCER = "no_dancer"
    MULTIPLE_PEOPLE = "multiple_people"
    UPPER_BODY_NOT_VISIBLE = "upper_body_not_visible"
    CAMERA_MOTION = "camera_motion"
    SHOT_CUT = "shot_cut"
    OVERRIDE_REJECT = "override_reject"
    # scoring
    NO_SCALE = "no_scale"  # scored on a stored scale that lacks the clip's challenge
    # extraction
    EXTRACT_FAILED = "extract_failed"
    # screening and extraction: the file at the clip's path is no longer the ingested content
    CLIP_CHANGED = "clip_changed"
    # the sports benchmark's (AQA-7) split files
    CONFLICTING_DUPLICATE = "conflicting_duplicate"  # a sample listed twice with different scores
    UNKNOWN_CLASS = "unknown_class"  # a class index the benchmark does not define
    WORKER_DIED = "worker_died"  # the processes working on the clip died twice (pipeline.core.attempts)


class ClipError(Exception):
    """A clip cannot go on: carries the clip id and a :class:`Reason` so callers can record it."""

    def __init__(self, clip_id: str | None, reason: Reason, message: str):
        super().__init__(f"{clip_id or '<no id>'}: {reason.value}: {message}")
        self.clip_id = clip_id
        self.reason = reason
        self.message = message


class InputError(ValueError):
    """An input file (pairing CSV, override file) is malformed: one line naming the file and what
    is wrong. It is a data error, so it is never retried; the command line exits with code 2."""


class WeightsError(RuntimeError):
    """Model weights are missing, corrupt or of an unexpected format; the message names the fix."""


NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})  # a full device, a spent disk quota


class DiskFull(OSError):
    """No space left where the run writes (a full device or a spent quota): the machine's fault,
    never a clip's. A clip that meets it is not rejected and its attempt is not a failure; the
    run stops with one line naming the directory, and a rerun with space goes on from there.

    An ``OSError`` (errno, strerror, filename), so that it crosses process boundaries as one.
    """

    def __str__(self) -> str:
        target = Path(self.filename) if self.filename else None
        if target is None:
            where = "the directory it writes in"
        elif target.is_dir():
            where = str(target)
        else:
            where = f"{target.parent} (writing {target.name})"
        return (
            f"no space left on the device of {where}: {self.strerror or 'No space left on device'}; "
            "free space there and run the command again (what was finished is kept)"
        )


def disk_full(err: BaseException | None) -> DiskFull | None:
    """``err`` as a :class:`DiskFull` when it, or an error it was raised from, says the device is
    full (ENOSPC) or the quota spent (EDQUOT); None otherwise."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFull):
            return err
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            return DiskFull(err.errno, os.strerror(err.errno), err.filename)
        err = err.__cause__ or err.__context__
    return None


def rejection_row(
    stage: str,
    reason: Reason,
    message: str,
    *,
    clip_id: str | None = None,
    video_id: str | None = None,
    path: str | None = None,
) -> dict:
    """One row of ``tables.REJECTIONS``: the only place such a row is built."""
    return {
        "stage": stage,
        "clip_id": clip_id,
        "video_id": video_id,
        "path": None if path is None else str(path),
        "reason": reason.value,
        "message": message,
    }
