"""Fixed 80/20 train/test splits of the evaluation tracks (SPEC section 6).

The paper evaluates on one all-challenge track (every clip, shuffled) and one track per
challenge, each with a fixed 80/20 split that ships with the release.

Split rule (SPEC section 6, with the uploader constraint made concrete here)
----------------------------------------------------------------------------
1. Every clip of a track gets the key ``sha256(track_name + clip_id)`` (hex). Because the key
   depends only on the track and the clip, adding clips moves few assignments, and tracks are
   split independently of each other.
2. Clips are grouped by uploader; a clip with no known uploader is a group of its own. A group
   is ordered by the smallest key among its clips (its "first clip").
3. Groups are walked in that order; a group joins train when that brings the train count closer
   to the target ``n_train`` than leaving it out (a tie goes to test), else it goes to test. So a
   whole uploader falls on one side, and with one clip per group (no uploader information) this
   is exactly "the first ``n_train`` clips by key are train".
4. ``n_train = round(train_fraction * n)`` (halves round up), kept between 1 and ``n - 1``
   whenever the track has at least two clips; a one-clip track is train only.
5. With at least two groups neither side may be empty: if test is empty the last group (by
   order) moves to test; if train is empty the first group moves to train.

Uploader grouping only needs equality of uploader values, so the rule gives the same split
when uploaders are replaced by salted hashes: a release can be re-checked without the salt.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping

TRAIN = "train"
TEST = "test"
ALL_TRACK = "all"
TRAIN_FRACTION = 0.8  # SPEC section 6: 80/20


def split_key(track_name: str, clip_id: str) -> str:
    """The ordering key of a clip within a track: sha256 of track name + clip id (hex)."""
    return hashlib.sha256((track_name + clip_id).encode()).hexdigest()


def train_count(n: int, train_fraction: float = TRAIN_FRACTION) -> int:
    """How many of ``n`` clips go to train (rule 4 of the module docstring)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    if n <= 1:
        return n
    return min(max(math.floor(train_fraction * n + 0.5), 1), n - 1)


def track_split(
    track_name: str,
    clip_ids: Iterable[str],
    uploader_of: Mapping[str, str | None] | None = None,
    train_fraction: float = TRAIN_FRACTION,
) -> dict[str, str]:
    """clip_id -> ``"train"`` or ``"test"`` for one track, by the rule of the module docstring."""
    ids = sorted(set(clip_ids))
    uploader_of = uploader_of or {}
    keys = {cid: split_key(track_name, cid) for cid in ids}
    groups: dict[object, list[str]] = {}
    for cid in ids:
        uploader = uploader_of.get(cid)
        # a clip without an uploader is its own group: it cannot be tied to anyone
        groups.setdefault(("uploader", uploader) if uploader is not None else ("clip", cid), []).append(cid)
    ordered = sorted(groups.values(), key=lambda members: min(keys[c] for c in members))
    target = train_count(len(ids), train_fraction)
    sides: list[str] = []
    n_train = 0
    for members in ordered:
        joins = abs(n_train + len(members) - target) < abs(n_train - target)
        sides.append(TRAIN if joins else TEST)
        n_train += len(members) if joins else 0
    if len(ordered) >= 2 and TEST not in sides:
        sides[-1] = TEST
    if len(ordered) >= 2 and TRAIN not in sides:
        sides[0] = TRAIN
    return {cid: side for members, side in zip(ordered, sides, strict=True) for cid in members}


def challenge_track(challenge: str) -> str:
    """Track name of a single-challenge track; also a safe file name (``splits/<track>.parquet``)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", challenge).strip("._") or "unnamed"
    return f"challenge-{slug}"


def all_tracks(
    clip_challenge: Mapping[str, str],
    uploader_of: Mapping[str, str | None] | None = None,
    train_fraction: float = TRAIN_FRACTION,
) -> dict[str, dict[str, str]]:
    """Every track: ``"all"`` over every clip, plus one track per challenge (SPEC section 6).

    ``clip_challenge`` maps clip id -> challenge. Returns track name -> (clip id -> split).
    """
    tracks = {ALL_TRACK: track_split(ALL_TRACK, clip_challenge, uploader_of, train_fraction)}
    by_challenge: dict[str, list[str]] = {}
    for cid, challenge in clip_challenge.items():
        by_challenge.setdefault(challenge, []).append(cid)
    for challenge in sorted(by_challenge):
        name = challenge_track(challenge)
        if name in tracks:
            raise ValueError(f"challenges {challenge!r} and another map to the same track name {name!r}")
        tracks[name] = track_split(name, by_challenge[challenge], uploader_of, train_fraction)
    return tracks
