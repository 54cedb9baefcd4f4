"""The training loader's decoded cache (models/decoded.py): a copy is used only when it is the
decoded form of the very bytes the loader verified, and one that fails a check is rebuilt."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from models import data, decoded
from pipeline.modalities.features import current_shards
from tests.support.shards import write_stream

CLIP, OTHER = "a" * 64, "b" * 64


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    """Two clips' holistic shards (seeded values, some samples invalid)."""
    rng = np.random.default_rng(5)
    for cid, length in ((CLIP, 90), (OTHER, 40)):
        write_stream(tmp_path / "work", "holistic", cid, rng.normal(size=(length, 256)), rng.random(length) > 0.2)
    return tmp_path / "work"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return a[0].dtype == b[0].dtype == np.float32 and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_a_shard_is_decoded_once_and_read_back_from_its_copy(work: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    cache = tmp_path / "cache"
    plain = data.WorkDirSource(work, cache=False).load("holistic", CLIP)
    assert not cache.exists()
    with caplog.at_level(logging.INFO, logger="models.decoded"):
        source = data.WorkDirSource(work, cache=cache)
        first = source.load("holistic", CLIP)
        sha = _sha(current_shards(work, "holistic")[CLIP[:16]])
        assert [p.relative_to(cache).as_posix() for p in cache.rglob("*.arrow")] == [f"{sha[:2]}/{sha}.arrow"]
        source.load("holistic", OTHER)  # a second copy written: the folder is named once a process
    assert len(list(cache.rglob("*.arrow"))) == 2
    assert caplog.text.count(f"decoded copies of the feature files go to {cache}") == 1
    monkeypatch.setattr(data, "_rows", lambda table: pytest.fail("decoded the shard again"))
    again = data.WorkDirSource(work, cache=cache).load("holistic", CLIP)
    assert _same(first, plain) and _same(again, plain)
    # the environment variable names the folder; "off" turns the cache off
    monkeypatch.setenv(decoded.ENV, "off")
    assert data.WorkDirSource(work).cache is None


@pytest.mark.parametrize("damage", ["flipped bit", "truncated", "another shard's copy"])
def test_a_damaged_copy_is_removed_and_rebuilt_never_used(work: Path, tmp_path: Path, damage: str, caplog) -> None:
    cache = decoded.DecodedCache(tmp_path / "cache")
    shard = current_shards(work, "holistic")[CLIP[:16]]
    plain = data.WorkDirSource(work, cache=False).load("holistic", CLIP)
    data.WorkDirSource(work, cache=cache).load("holistic", CLIP)
    data.WorkDirSource(work, cache=cache).load("holistic", OTHER)
    target = cache.path(_sha(shard))
    good = target.read_bytes()
    if damage == "flipped bit":  # one bit of one float of the clip's features
        at = good.find(plain[0][3].tobytes()) + 5
        damaged = good[:at] + bytes([good[at] ^ 0x10]) + good[at + 1 :]
    elif damage == "truncated":
        damaged = good[:-100]
    else:  # the decoded copy of the other clip's shard, under this shard's name
        damaged = cache.path(_sha(current_shards(work, "holistic")[OTHER[:16]])).read_bytes()
    assert damaged != good and len(damaged) > 1000
    target.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="models.decoded"):
        got = data.WorkDirSource(work, cache=cache).load("holistic", CLIP)
    assert _same(got, plain)  # the source's arrays, not the damaged copy's
    assert "removed, rebuilt" in caplog.text
    assert target.read_bytes() == good  # written again from the shard


def test_a_changed_shard_never_reads_the_copy_of_its_old_bytes(work: Path, tmp_path: Path) -> None:
    cache = decoded.DecodedCache(tmp_path / "cache")
    shard = current_shards(work, "holistic")[CLIP[:16]]
    old = data.WorkDirSource(work, cache=cache).load("holistic", CLIP)
    old_copy = cache.path(_sha(shard))
    # the clip extracted again (new values, same shard path, recorded in the ledger)
    write_stream(work, "holistic", CLIP, np.full((90, 256), 7.0), np.ones(90, bool))
    assert current_shards(work, "holistic")[CLIP[:16]] == shard and cache.path(_sha(shard)) != old_copy
    # even with the old copy planted under the new bytes' name, the new bytes are what is read
    cache.path(_sha(shard)).parent.mkdir(parents=True, exist_ok=True)
    cache.path(_sha(shard)).write_bytes(old_copy.read_bytes())
    new = data.WorkDirSource(work, cache=cache).load("holistic", CLIP)
    assert not np.array_equal(new[0], old[0])
    assert np.array_equal(new[0], np.full((90, 256), 7.0, np.float32)) and new[1].all()
    assert old_copy.is_file()  # left alone: named by other bytes


def test_a_cache_that_cannot_be_written_is_logged_once_and_reading_goes_on(work: Path, tmp_path: Path, caplog) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    plain = data.WorkDirSource(work, cache=False)
    with caplog.at_level(logging.WARNING, logger="models.decoded"):
        source = data.WorkDirSource(work, cache=blocked / "cache")
        for cid in (CLIP, OTHER):
            assert _same(source.load("holistic", cid), plain.load("holistic", cid))
    assert caplog.text.count("cannot write") == 1


def test_an_over_full_cache_loses_its_least_recently_read_copies_and_killed_writes(tmp_path: Path, caplog) -> None:
    rng = np.random.default_rng(8)
    clips = ["c" * 64, "d" * 64, "e" * 64]
    work = tmp_path / "work"
    for cid in clips:  # three copies of one size
        write_stream(work, "holistic", cid, rng.normal(size=(60, 256)), np.ones(60, bool))
    root = tmp_path / "cache"
    first, second, third = clips
    data.WorkDirSource(work, cache=decoded.DecodedCache(root)).load("holistic", first)
    data.WorkDirSource(work, cache=decoded.DecodedCache(root)).load("holistic", second)
    a, b = sorted(root.rglob("*.arrow"), key=lambda p: p.stat().st_mtime_ns)
    size = a.stat().st_size
    assert b.stat().st_size == size
    hour = decoded.TOUCH_AFTER_S
    now = time.time()
    os.utime(a, (now - 3 * hour, now - 3 * hour))  # the first copy written, then read again lately
    os.utime(b, (now - 2 * hour, now - 2 * hour))
    plain = data.WorkDirSource(work, cache=False)
    assert _same(
        data.WorkDirSource(work, cache=decoded.DecodedCache(root)).load("holistic", first),
        plain.load("holistic", first),
    )
    assert a.stat().st_mtime > now - hour  # the read marked it recent
    # a write killed two days ago, and one in flight now in another process
    stale, fresh = a.parent / f".{a.name}.k1ll3d.tmp", b.parent / f".{b.name}.1nfl1t.tmp"
    for tmp in (stale, fresh):
        tmp.write_bytes(b"partial")
    # files the cache did not name, older than anything: never touched (a cache pointed at a shared folder)
    foreign = [a.parent / "train-00000.arrow", a.parent / ".notes.tmp", root / "hf" / f"{a.stem}.arrow"]
    for path in foreign:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * size)
    for path in [stale, *foreign]:
        os.utime(path, (now - 2 * decoded.STALE_TMP_S, now - 2 * decoded.STALE_TMP_S))
    # room for two and a half copies: the third copy's write removes the least recently read one
    cache = decoded.DecodedCache(root, cap=int(2.5 * size))
    with caplog.at_level(logging.WARNING, logger="models.decoded"):
        data.WorkDirSource(work, cache=cache).load("holistic", third)
    assert "over its cap" in caplog.text and decoded.MAX_ENV in caplog.text
    assert not stale.exists() and fresh.exists() and all(path.exists() for path in foreign)
    left = set(root.rglob("*.arrow")) - set(foreign)
    assert a in left and b not in left and len(left) == 2  # the third one written after the tidy
    # the removed copy is written again from its shard when next read, with the same values
    assert _same(data.WorkDirSource(work, cache=cache).load("holistic", second), plain.load("holistic", second))
    assert b.is_file()


@pytest.mark.parametrize("value", ["lots", "0", "-3", "nan", "inf"])
def test_a_cap_that_is_not_a_positive_number_is_refused_naming_the_variable(
    value: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv(decoded.MAX_ENV, value)
    with pytest.raises(ValueError, match=r"\$VDV_DECODED_CACHE_MAX_GB must be a positive number"):
        decoded.from_option(tmp_path / "cache")
    monkeypatch.setenv(decoded.MAX_ENV, "0.5")
    assert decoded.from_option(tmp_path / "cache").cap == 2**29
    monkeypatch.delenv(decoded.MAX_ENV)
    assert decoded.from_option(tmp_path / "cache").cap == 32 * 2**30
