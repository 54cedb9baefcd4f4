"""The near-duplicate pass at ingest: the index decides as comparing every pair would, a reviewer's
keep admits a clip judged a duplicate, and a probe of an older signature version is redone."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
from conftest import SHARED_CLIPS
from test_signature import _row, reencode

from cli import main
from flows import tasks
from pipeline.core import tables
from pipeline.ingest.signature import (
    BAND_BITS,
    BANDS,
    MAX_SLICE_BITS,
    SIGNATURE_VERSION,
    SLICES,
    Signature,
    make_signature,
    near_duplicate,
)
from pipeline.ingest.stage import IngestConfig, near_duplicates, prepare_clips, probe_file


def _spread_flips(h: int, n: int, rng: random.Random) -> int:
    """``h`` with ``n`` bits flipped, spread over the bands as evenly as can be, so that no band
    stays equal once ``n`` reaches BANDS (the case an exact-band index would miss)."""
    bands = list(range(BANDS))
    rng.shuffle(bands)
    for i in range(n):
        band = bands[i % BANDS]
        bit = band * BAND_BITS + rng.randrange(1 if band == 0 else 0, BAND_BITS)
        h ^= 1 << bit
    return h


def _perturbed(base: Signature, rng: random.Random, per_slice: list[int], duration_shift: float) -> Signature:
    return Signature(
        round(base.duration_s + duration_shift, 3),
        tuple(_spread_flips(h, n, rng) for h, n in zip(base.hashes, per_slice, strict=True)),
    )


def _synthetic(n_bases: int = 60, seed: int = 7) -> list[Signature]:
    """Signatures of one challenge sound's length: originals sharing most bits (one room), and
    copies of them at, under and over the threshold, with one outlying slice or two."""
    rng = random.Random(seed)
    room = [rng.getrandbits(64) & ~(1 << 63) for _ in range(SLICES)]
    signatures = []
    for _ in range(n_bases):
        # another take in the same room: each slice 8 to 16 bits away from the room's picture
        base = _perturbed(Signature(15.0, tuple(room)), rng, [rng.randint(8, 16) for _ in range(SLICES)], 0.0)
        signatures.append(base)
        for _ in range(4):
            level = rng.choice([0, 2, 4, MAX_SLICE_BITS - 1, MAX_SLICE_BITS, MAX_SLICE_BITS + 1, MAX_SLICE_BITS + 2])
            per_slice = [rng.randint(0, level) for _ in range(SLICES)]
            per_slice[rng.randrange(2)] = level  # the indexed slices carry the level
            for _ in range(rng.choice([0, 0, 1, 2])):  # outlying slices, the indexed ones included
                per_slice[rng.randrange(SLICES)] = rng.randint(MAX_SLICE_BITS + 1, 30)
            shift = rng.choice([0.0, 0.0, 0.1, -0.3, 0.6, 1.5])  # within or outside the duration tolerance
            signatures.append(_perturbed(base, rng, per_slice, shift))
    rng.shuffle(signatures)
    return signatures


def _candidates(signatures: list[Signature]) -> list[tuple]:
    t0 = datetime(2021, 1, 1, tzinfo=UTC)
    out = []
    for i, s in enumerate(signatures):
        record = SimpleNamespace(video_id=f"v{i:04d}", create_time=t0 + timedelta(minutes=i // 3))
        probe = SimpleNamespace(content_signature=make_signature(s.duration_s, list(s.hashes)))
        out.append((Path(f"c{i}.mp4"), f"id{i}", record, probe))
    return out


def _decisions(found) -> list[tuple[str, str, float]]:
    return [(kept[1], dropped[1], bits) for kept, dropped, bits in found]


def test_the_index_decides_as_comparing_every_pair():
    signatures = _synthetic()
    candidates = _candidates(signatures)
    indexed = _decisions(near_duplicates(candidates))
    pairwise = _decisions(near_duplicates(candidates, pairwise=True))
    assert indexed == pairwise
    # the set holds what the proof is about: matches with no band equal in either indexed slice,
    # matches at the threshold, and pairs just over it that must stay apart
    by_id = {c[1]: signatures[i] for i, c in enumerate(candidates)}
    bits = [
        sorted((x ^ y).bit_count() for x, y in zip(by_id[k].hashes, by_id[d].hashes, strict=True))
        for k, d, _ in pairwise
    ]
    assert len(pairwise) >= 50
    assert any(b[-2] == MAX_SLICE_BITS for b in bits)
    assert any(b[-1] > MAX_SLICE_BITS for b in bits)  # a spare slice used

    def exact_band(k, d):
        a, b = by_id[k].hashes, by_id[d].hashes
        mask = (1 << BAND_BITS) - 1
        return any(((a[s] ^ b[s]) >> (j * BAND_BITS)) & mask == 0 for s in range(2) for j in range(BANDS))

    assert sum(not exact_band(k, d) for k, d, _ in pairwise) >= 10
    survivors = [s for c, s in zip(candidates, signatures, strict=True) if c[1] not in {d for _, d, _ in pairwise}]
    near_misses = sum(
        1
        for s in survivors
        for t in signatures
        if t is not s
        and near_duplicate(s, Signature(s.duration_s, t.hashes)) is None
        and sorted((x ^ y).bit_count() for x, y in zip(s.hashes, t.hashes, strict=True))[-2] <= MAX_SLICE_BITS + 2
    )
    assert near_misses >= 10


def test_a_reviewer_keep_admits_a_clip_judged_a_reencoding(make_raw, tmp_path, capsys):
    copy = reencode(SHARED_CLIPS / "stgcn_ta_chi.mp4", tmp_path / "src.mp4", codec="mpeg4", scale=0.5, bitrate=150_000)
    rows = [_row("orig", "2021-01-01T00:00:00Z"), _row("reup", "2021-01-03T00:00:00Z")]
    raw = make_raw({"orig.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4", "reup.mp4": copy.read_bytes()}, {"r.csv": rows})
    work = tmp_path / "work"
    assert main(["ingest", str(raw), "--work", str(work)]) == 0
    clips = tables.read_table(work, tables.CLIPS).to_pylist()
    assert [c["video_id"] for c in clips] == ["orig"]
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("id,decision,note\nreup,keep,a duet of the original\nghost,reject,screening's\n")
    capsys.readouterr()
    assert main(["ingest", str(raw), "--work", str(work), "--overrides", str(overrides)]) == 0
    out = capsys.readouterr().out
    clips = {c["video_id"]: c for c in tables.read_table(work, tables.CLIPS).to_pylist()}
    assert sorted(clips) == ["orig", "reup"]
    assert clips["orig"]["ingest_override"] is None
    assert clips["reup"]["ingest_override"] == "keep"
    note = clips["reup"]["ingest_override_note"]
    assert "a duet of the original" in note and "re-encoding of video orig" in note and note in out
    rejected = tables.read_table(work, tables.REJECTIONS).to_pylist()
    assert not [r for r in rejected if r["reason"] == "duplicate_content"]
    # the build flow's ingest task takes the same file (`vdv build --overrides`)
    summary = tasks.ingest.fn(str(raw), str(tmp_path / "built"), {}, None, None, None, str(overrides))
    assert summary["kept_by_override"] == 1 and summary["clips"] == 2
    built = {
        c["video_id"]: c["ingest_override"] for c in tables.read_table(tmp_path / "built", tables.CLIPS).to_pylist()
    }
    assert built == {"orig": None, "reup": "keep"}


def test_a_bad_override_file_is_one_line_before_any_probe(make_raw, tmp_path, capsys):
    raw = make_raw({"orig.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4"}, {"r.csv": [_row("orig", "2021-01-01T00:00:00Z")]})
    bad = tmp_path / "o.csv"
    bad.write_text("id,decision\norig,maybe\n")
    assert main(["ingest", str(raw), "--work", str(tmp_path / "w"), "--overrides", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "keep or reject" in err[0]
    assert not tables.table_files(tmp_path / "w", "clips")


def test_probe_results_of_an_older_signature_are_probed_again(make_raw, tmp_path):
    """Probe results handed to ingest (as the build flow does) whose signatures another rule made
    would never match anything: ingest probes those files again, and the re-encoding is caught."""
    copy = reencode(SHARED_CLIPS / "stgcn_ta_chi.mp4", tmp_path / "src.mp4", codec="mpeg4", scale=0.5, bitrate=150_000)
    rows = [_row("orig", "2021-01-01T00:00:00Z"), _row("reup", "2021-01-03T00:00:00Z")]
    raw = make_raw({"orig.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4", "reup.mp4": copy.read_bytes()}, {"r.csv": rows})
    probed = {}
    for path in sorted((raw / "clips").iterdir()):
        found = probe_file(path)
        old = "p1:10010:" + ",".join(["665f19660e9813e6"] * 6)
        found["probe"] = dataclasses.replace(found["probe"], content_signature=old)
        probed[str(path)] = found
    result = prepare_clips(raw, config=IngestConfig(), probed=probed)
    assert [c["video_id"] for c in result.clips] == ["orig"]
    assert result.clips[0]["content_signature"].startswith(f"{SIGNATURE_VERSION}:")
    assert [r["video_id"] for r in result.rejections if r["reason"] == "duplicate_content"] == ["reup"]


def test_a_work_directory_of_the_older_clips_table_is_refused_naming_ingest(tmp_path, capsys):
    """Its clips hold signatures of the old rule; screening it would keep clips no current rule judged."""
    old = tables.CLIPS.schema.remove(tables.CLIPS.schema.get_field_index("ingest_override_note"))
    old = old.remove(old.get_field_index("ingest_override"))
    old = old.with_metadata({b"vdv.table": b"clips", b"vdv.schema_version": b"2"})
    path = tables.shard_path(tmp_path / "work", "clips", 0)
    path.parent.mkdir(parents=True)
    pq.write_table(old.empty_table(), path)
    assert main(["screen", "--no-visual", "--work", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "v2" in err[0] and "run `vdv ingest` again" in err[0]
