"""What a release says about people (SPEC section 9): uploaders only as salted hashes, and a
scores table built from an allow-list of columns, so captions, usernames and paths never leave."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import pyarrow as pa

from pipeline.core import tables
from pipeline.release.config import ReleaseError
from pipeline.release.layout import RELEASE_SCORES

SALT_ENV = "VDV_RELEASE_SALT"
# Columns that must never appear in a released table (SPEC section 9).
FORBIDDEN_COLUMNS = (
    "uploader_id",
    "username",
    "user_name",
    "nickname",
    "caption",
    "text",
    "desc",
    "path",
    "metadata_source",
)


def salted_hash(value: str | None, salt: bytes) -> str | None:
    """``sha256(salt || value)`` hex, the released stand-in for an uploader identity."""
    if value is None:
        return None
    return hashlib.sha256(salt + value.encode()).hexdigest()


def resolve_salt(salt: str | None) -> tuple[bytes, str]:
    """(salt bytes, where it came from). The salt itself is never written to the release."""
    if salt:
        return salt.encode(), "option"
    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode(), f"env:{SALT_ENV}"
    return secrets.token_bytes(32), "random (not kept: hashes cannot be linked to other releases)"


def released_scores(work: Path, salt: bytes) -> tuple[pa.Table, dict[str, str | None]]:
    """The released scores (allow-listed columns, sorted by clip id) and clip id -> raw uploader id, for splitting."""
    scores = tables.read_table(work, tables.SCORES)
    if scores.num_rows == 0:
        raise ReleaseError(f"{work}: the scores table is empty; run ingest, screen and score first")
    clips = {row["clip_id"]: row for row in tables.read_table(work, tables.CLIPS).to_pylist()}
    rows, uploader_of = [], {}
    for s in scores.to_pylist():
        clip = clips.get(s["clip_id"])
        if clip is None:
            raise ReleaseError(f"{work}: scored clip {s['clip_id']} is not in the clips table")
        uploader_of[s["clip_id"]] = clip["uploader_id"]
        rows.append(_released_row(s, clip, salt))
    if len(uploader_of) != len(rows):
        raise ReleaseError(f"{work}: the scores table holds a clip more than once")
    rows.sort(key=lambda r: r["clip_id"])
    return tables.to_table(rows, RELEASE_SCORES, where="release scores"), uploader_of


def _released_row(score: dict, clip: dict, salt: bytes) -> dict:
    """One row of the released scores: the allow-list, with the uploader replaced by its salted hash."""
    return {
        "clip_id": score["clip_id"],
        "video_id": score["video_id"] if score["video_id"] is not None else clip["video_id"],
        "challenge": score["challenge"],
        "uploader": salted_hash(clip["uploader_id"], salt),
        "likes": clip["likes"],
        "comments": clip["comments"],
        "reposts": clip["reposts"],
        "create_time": clip["create_time"],
        "crawl_time": clip["crawl_time"],
        "existing_days": score["existing_days"],
        "raw_score": score["raw_score"],
        "score": score["score"],
        "out_of_scale": score["out_of_scale"],
        "degenerate_challenge": score["degenerate_challenge"],
        "duration_s": clip["duration_s"],
    }
