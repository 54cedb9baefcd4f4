"""What the checksum ledger costs (pipeline/core/checksums.py), in seconds per 1,000 shards or clips.

Shards of every built-in modality are synthesised for a clip of ``--seconds`` (VDV's clips are
15 s on average; TikTok's limit was 60 s) at the modality's default rate and width, with random
(incompressible) values, and written through the project's one shard writer. Printed per modality:
the shard's size; writing it with its record against the bare atomic Parquet write; checking it
(hash + ledger look-up, as a reuse or the release does) against reading it as a table; then folding
a ledger of ``--records`` records, recording one row in a segment of 1, half and all of ``SEGMENT_ROWS`` rows, and
confirming a clip file by the fast path (stat) and by hashing (the real sample clips).

Files are in the page cache (just written); a cold cache adds the disk's read time, which a release
pays anyway to copy the shards.

    python bench/bench_checksums.py
    python bench/bench_checksums.py --shards 50 --seconds 60
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"


def _writer(modality: str, dim: int):
    from pipeline.modalities.features import FeatureExtractor

    class Synthetic(FeatureExtractor):
        name, version = "bench-synthetic", "bench"

        def params(self) -> dict:
            return {}

    ex = Synthetic()
    ex.modality, ex.dim = modality, dim
    return ex


def _per_1000(seconds: float, n: int) -> float:
    return seconds / n * 1000


def bench_modality(root: Path, modality: str, n: int, clip_s: float) -> dict:
    import pyarrow.parquet as pq

    from pipeline.core import checksums, tables
    from pipeline.modalities import registry as modalities
    from pipeline.modalities.features import FeatureSequence

    record = modalities.get(modality)
    rate = record.default_rate()
    t = max(1, int(clip_s * rate))
    ex = _writer(modality, record.dim)
    rng = np.random.default_rng(0)
    work = root / modality
    ids = [f"{i:064x}" for i in range(n)]
    seqs = [
        FeatureSequence(
            np.arange(t) / rate, np.ones(t, bool), rng.normal(size=(t, record.dim)).astype(np.float32), rate
        )
        for _ in range(min(n, 4))
    ]
    tables_ = [ex.table(cid, seqs[i % len(seqs)]) for i, cid in enumerate(ids)]
    t0, c0 = time.perf_counter(), time.process_time()
    for i, cid in enumerate(ids):  # the bare write, as before the ledger
        target = ex.shard_path(root / f"{modality}-bare", cid)
        tables.atomic_write(target, lambda tmp, table=tables_[i]: pq.write_table(table, tmp, compression="zstd"))
    bare, bare_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    paths = [checksums.write_shard(work, ex.shard_path(work, cid), tables_[i]) for i, cid in enumerate(ids)]
    recorded, recorded_cpu = time.perf_counter() - t0, time.process_time() - c0
    checksums._KNOWN.clear()  # a fresh process: the ledger is read once
    t0, c0 = time.perf_counter(), time.process_time()
    assert all(checksums.check_shard(work, p).ok for p in paths)
    check, check_cpu = time.perf_counter() - t0, time.process_time() - c0
    spec = ex.spec()
    t0 = time.perf_counter()
    for p in paths:
        tables.read_file(p, spec)
    read = time.perf_counter() - t0
    return {
        "modality": modality,
        "rows": t,
        "mb": statistics.mean(p.stat().st_size for p in paths) / 2**20,
        "write": _per_1000(bare, n),
        "write_recorded": _per_1000(recorded, n),
        "check": _per_1000(check, n),
        "write_cpu": _per_1000(bare_cpu, n),
        "write_recorded_cpu": _per_1000(recorded_cpu, n),
        "check_cpu": _per_1000(check_cpu, n),
        "read": _per_1000(read, n),
    }


def bench_fold(root: Path, records: int) -> float:
    """Seconds to fold ``records`` records in segments of 1,000 rows (each names an existing file)."""
    from datetime import UTC, datetime

    from pipeline.core import checksums, tables

    work = root / "fold"
    files = []
    for i in range(100):
        path = work / "features" / "pose" / f"pose.{i:016x}.000000000000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
        files.append(path)
    now = datetime.now(UTC)
    for s in range(0, records, checksums.SEGMENT_ROWS):
        rows = [
            {
                "kind": "shard",
                "path": f"features/pose/{files[i % len(files)].name}",
                "sha256": f"{i:064x}",
                "size": 100,
                "mtime_ns": None,
                "ctime_ns": None,
                "inode": None,
                "recorded": now,
                "writer": "bench:1",
            }
            for i in range(s, min(records, s + checksums.SEGMENT_ROWS))
        ]
        tables.write_table(rows, tables.CHECKSUMS, tables.shard_path(work, "checksums", f"w-bench-{s}"))
    t0 = time.perf_counter()
    checksums.fold(work)
    return time.perf_counter() - t0


def bench_segment(root: Path) -> dict[int, float]:
    """Seconds to record one row when this process's segment holds k rows."""
    from pipeline.core import checksums

    work = root / "segment"
    work.mkdir()
    out = {}
    target = work / "x.parquet"
    target.write_bytes(b"x")
    row = {
        "kind": "clip",
        "path": str(target),
        "sha256": "0" * 64,
        "size": 1,
        "mtime_ns": 0,
        "ctime_ns": 0,
        "inode": 0,
        "recorded": checksums._now(),
        "writer": "bench:1",
    }
    for k in range(checksums.SEGMENT_ROWS):
        t0 = time.perf_counter()
        checksums._record(work, [dict(row, sha256=f"{k:064x}")])
        if k in (0, checksums.SEGMENT_ROWS // 2 - 1, checksums.SEGMENT_ROWS - 2):
            out[k + 1] = time.perf_counter() - t0
    return out


def bench_clips(root: Path) -> tuple[float, float, float]:
    """(fast path s per 1,000 clips, hash s per clip, MB hashed per second) on the real clips."""
    from pipeline.core import checksums
    from pipeline.core.provenance import sha256_file

    work = root / "clips"
    clips = sorted(CLIPS.glob("*.mp4"))
    ids = {p: sha256_file(p) for p in clips}  # the cache warm, as ingest leaves it
    t0 = time.perf_counter()
    for p in clips:
        checksums.confirm_clip(work, ids[p], p)  # first time: hashed, recorded
    hashed = time.perf_counter() - t0
    t0 = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        for p in clips:
            checksums.confirm_clip(work, ids[p], p)
    fast = time.perf_counter() - t0
    mb = sum(p.stat().st_size for p in clips) / 2**20
    return _per_1000(fast, rounds * len(clips)), hashed / len(clips), mb / hashed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=100, help="shards per modality (default: %(default)s)")
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="clip length the shards hold (default: %(default)s)"
    )
    parser.add_argument(
        "--records", type=int, default=17_000, help="records of the folded ledger (default: %(default)s)"
    )
    args = parser.parse_args()

    from pipeline.modalities import registry as modalities

    with tempfile.TemporaryDirectory(prefix="bench-checksums-", dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        print(f"shards of a {args.seconds:g} s clip, {args.shards} per modality; seconds per 1,000 shards")
        print("wall seconds (CPU seconds of this process in brackets: what a loaded machine does not inflate)")
        print(f"{'modality':<9} {'rows':>5} {'MB':>6} {'write':>15} {'write+record':>15} {'check':>15} {'read':>7}")
        for m in modalities.names():
            r = bench_modality(root, m, args.shards, args.seconds)
            print(
                f"{m:<9} {r['rows']:>5} {r['mb']:>6.2f} {r['write']:>7.2f} ({r['write_cpu']:>5.2f}) "
                f"{r['write_recorded']:>7.2f} ({r['write_recorded_cpu']:>5.2f}) {r['check']:>7.2f} ({r['check_cpu']:>5.2f}) "
                f"{r['read']:>7.2f}"
            )
        print(f"fold of {args.records} records: {bench_fold(root, args.records):.2f} s")
        seg = bench_segment(root)
        print("record one row, segment of k rows: " + ", ".join(f"k={k}: {s * 1000:.1f} ms" for k, s in seg.items()))
        fast, per_clip, rate = bench_clips(root)
        print(
            f"clip files: fast path (stat) {fast:.3f} s per 1,000 clips; first hash {per_clip * 1000:.1f} ms a clip "
            f"({rate:.0f} MB/s)"
        )


if __name__ == "__main__":
    main()
