"""Track splits (SPEC section 6) on the real clips' content ids."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pytest

from pipeline.scoring import splits

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_clip_ids() -> list[str]:
    """The clips' sha256 as published in SOURCES.md (the clip id of each real clip)."""
    text = (SHARED / "SOURCES.md").read_text()
    return re.findall(r"^([0-9a-f]{64})  clips/", text, flags=re.M)


def synthetic_ids(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [hashlib.sha256(rng.randbytes(16)).hexdigest() for _ in range(n)]


def test_real_ids_first_80_percent_by_key_are_train():
    ids = real_clip_ids()
    assert len(ids) == 19
    result = splits.track_split("all", ids)
    ordered = sorted(ids, key=lambda c: hashlib.sha256(("all" + c).encode()).hexdigest())
    n_train = 15  # round(0.8 * 19) = 15
    assert [result[c] for c in ordered] == ["train"] * n_train + ["test"] * (19 - n_train)


def test_split_ignores_input_order_and_depends_on_track():
    ids = real_clip_ids()
    a = splits.track_split("all", ids)
    b = splits.track_split("all", list(reversed(ids)))
    assert a == b
    other = splits.track_split("challenge-x", ids)
    assert other != a  # tracks are split independently
    assert sum(v == "train" for v in other.values()) == 15


@pytest.mark.parametrize(("n", "expected"), [(0, 0), (1, 1), (2, 1), (3, 2), (4, 3), (5, 4), (10, 8), (19, 15)])
def test_train_count(n, expected):
    assert splits.train_count(n) == expected


def test_bad_fraction_is_an_error():
    with pytest.raises(ValueError):
        splits.track_split("all", ["a", "b"], train_fraction=1.0)


def test_uploader_never_straddles_and_fills_about_80_percent():
    ids = synthetic_ids(200)
    rng = random.Random(1)
    uploader = {c: f"u{rng.randrange(40)}" for c in ids}
    result = splits.track_split("all", ids, uploader)
    sides: dict[str, set[str]] = {}
    for c in ids:
        sides.setdefault(uploader[c], set()).add(result[c])
    assert all(len(s) == 1 for s in sides.values())
    n_train = sum(v == "train" for v in result.values())
    largest = max(sum(1 for c in ids if uploader[c] == u) for u in sides)
    assert abs(n_train - 160) <= largest / 2


def test_neither_side_empty_with_two_uploaders():
    ids = synthetic_ids(5)
    # 3 + 2 clips: filling train to 4 would take both uploaders; the rule keeps a test side
    uploader = {c: ("a" if i < 3 else "b") for i, c in enumerate(ids)}
    result = splits.track_split("all", ids, uploader)
    assert {result[c] for c in ids[:3]} != {result[c] for c in ids[3:]}
    assert len({result[c] for c in ids[:3]}) == 1 and len({result[c] for c in ids[3:]}) == 1


def test_adding_clips_moves_few_assignments():
    ids = synthetic_ids(500)
    before = splits.track_split("all", ids)
    after = splits.track_split("all", ids + synthetic_ids(10, seed=7))
    moved = sum(before[c] != after[c] for c in ids)
    assert moved <= 10


def test_salted_uploader_hashes_give_the_same_split():
    ids = synthetic_ids(60)
    uploader = {c: f"user{i % 9}" for i, c in enumerate(ids)}
    salted = {c: hashlib.sha256(b"salt" + u.encode()).hexdigest() for c, u in uploader.items()}
    assert splits.track_split("all", ids, uploader) == splits.track_split("all", ids, salted)


def test_all_tracks_has_all_and_one_per_challenge():
    ids = real_clip_ids()
    challenge = {c: ("#dance A" if i % 2 else "music 123") for i, c in enumerate(ids)}
    tracks = splits.all_tracks(challenge)
    assert set(tracks) == {"all", "challenge-dance_A", "challenge-music_123"}
    assert set(tracks["all"]) == set(ids)
    for name in ("challenge-dance_A", "challenge-music_123"):
        members = tracks[name]
        assert set(members) == {c for c in ids if splits.challenge_track(challenge[c]) == name}
        assert members == splits.track_split(name, list(members))
