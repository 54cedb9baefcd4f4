"""Ingest of a crawl: 50,000 records with their probe results given, most of one challenge sound's length.

A crawl is larger than the dataset that survives screening, and a challenge sound gives
thousands of clips one duration, so the near-duplicate pass meets them all in one duration
bucket. This builds such a crawl from the content signatures of the real sample clips
(probed here once, outside the timing):

- takes: each slice hash of a real clip's signature with 8 to 16 bits flipped (another take of
  one set-up: same room, other moments), ``--bucket-share`` of them 15 s long (one sound), the
  others of 5 to 60 s;
- re-encodings (``--reencoded`` of the records): a take with 0 to 4 bits flipped per slice, in three
  of ten one slice with 5 to 20 (a cut, a caption), and the duration off by up to 0.2 s;
- close takes (a tenth of the records): an earlier take with 7 to 10 bits flipped in every
  slice, just over the rule's 6 (distinct, to be kept);

then runs :func:`pipeline.stages.run_ingest` on it with the probe results given, as the build flow
supplies them (empty clip files: nothing is hashed or decoded), and prints the CPU seconds and
the peak RSS of the ingest, against the 60 s target, and how many re-encodings were caught and
takes kept (every one is expected).

    PYTHONPATH=. python bench/bench_crawl.py [--records 50000] [--reencoded 0.2] [--bucket-share 0.6]
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.ingest.probe import ProbeResult, probe
from pipeline.ingest.signature import Signature, make_signature
from pipeline.stages import run_ingest

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
TARGET_CPU_S = 60.0


def flip(h: int, n: int, rng: random.Random) -> int:
    for bit in rng.sample(range(1, 64), n):
        h ^= 1 << bit
    return h


def crawl(bases: list[Signature], n: int, reencoded: float, bucket_share: float, close: float = 0.1, seed: int = 1):
    """(video id, signature, kind, original video id) of ``n`` records; kind: take | reencoding."""
    rng = random.Random(seed)
    takes: list[tuple[str, Signature]] = []
    records = []
    for i in range(n):
        video_id = f"7{i:018d}"
        if takes and rng.random() < reencoded:
            original, source = rng.choice(takes)
            hashes = [flip(h, rng.randint(0, 4), rng) for h in source.hashes]
            if rng.random() < 0.3:  # a cut or a caption in one slice
                cut = rng.randrange(len(hashes))
                hashes[cut] = flip(source.hashes[cut], rng.randint(5, 20), rng)
            duration = max(1.0, source.duration_s + rng.uniform(-0.2, 0.2))
            records.append((video_id, Signature(round(duration, 3), tuple(hashes)), "reencoding", original))
            continue
        if takes and rng.random() < close:
            # another take, close to an earlier one: every slice 7 to 10 bits away
            _, source = rng.choice(takes)
            signature = Signature(source.duration_s, tuple(flip(h, rng.randint(7, 10), rng) for h in source.hashes))
            takes.append((video_id, signature))
            records.append((video_id, signature, "take", None))
            continue
        base = rng.choice(bases)
        duration = 15.0 if rng.random() < bucket_share else rng.uniform(5, 60)
        signature = Signature(round(duration, 3), tuple(flip(h, rng.randint(8, 16), rng) for h in base.hashes))
        takes.append((video_id, signature))
        records.append((video_id, signature, "take", None))
    return records


def write_raw(raw: Path, records) -> dict[str, dict]:
    """RAW_DIR with one empty clip file and one metadata row per record; the probe results by path.
    A re-encoding is uploaded after its original (the original survives)."""
    (raw / "clips").mkdir(parents=True)
    (raw / "metadata").mkdir()
    t0 = datetime(2021, 1, 1, tzinfo=UTC)
    probed = {}
    with open(raw / "metadata" / "crawl.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["video_id", "challenge", "likes", "comments", "reposts", "create_time", "crawl_time", "followers"]
        )
        for i, (video_id, signature, _, _) in enumerate(records):
            path = raw / "clips" / f"{video_id}.mp4"
            path.touch()
            created = (t0 + timedelta(seconds=i)).isoformat()
            writer.writerow([video_id, "#sound", 10 + i % 97, i % 13, i % 7, created, "2021-03-01T00:00:00+00:00", 500])
            result = ProbeResult(
                duration_s=signature.duration_s,
                container_duration_s=signature.duration_s,
                frame_count=round(signature.duration_s * 30),
                avg_fps=30.0,
                width=576,
                height=1024,
                rotation=0,
                video_codec="h264",
                has_audio=True,
                audio_codec="aac",
                content_signature=make_signature(signature.duration_s, list(signature.hashes)),
            )
            clip_id = f"{i:064x}"
            probed[str(path)] = {
                "path": str(path),
                "clip_id": clip_id,
                "probe": result,
                "reason": None,
                "message": None,
            }
    return probed


def pairwise_check(records) -> None:
    """The indexed pass against the pairwise one on the first records: CPU of each, same decisions."""
    from types import SimpleNamespace

    from pipeline.ingest.stage import near_duplicates

    t0 = datetime(2021, 1, 1, tzinfo=UTC)
    candidates = [
        (
            Path(v),
            v,
            SimpleNamespace(video_id=v, create_time=t0 + timedelta(seconds=i)),
            SimpleNamespace(content_signature=make_signature(s.duration_s, list(s.hashes))),
        )
        for i, (v, s, _, _) in enumerate(records)
    ]
    timed = {}
    for pairwise in (False, True):
        c0 = time.process_time()
        found = near_duplicates(candidates, pairwise=pairwise)
        timed[pairwise] = (time.process_time() - c0, [(k[1], d[1], b) for k, d, b in found])
    same = timed[False][1] == timed[True][1]
    print(
        f"near-duplicate pass on the first {len(records)}: indexed CPU {timed[False][0]:.2f} s, pairwise "
        f"{timed[True][0]:.2f} s; same decisions: {same} ({len(timed[False][1])} duplicates)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--reencoded", type=float, default=0.2, help="share of records that re-encode an earlier one")
    parser.add_argument("--bucket-share", type=float, default=0.6, help="share of takes 15 s long (one sound)")
    parser.add_argument(
        "--pairwise-check",
        type=int,
        default=5000,
        metavar="N",
        help="compare with the pairwise pass on N records (0: no)",
    )
    parser.add_argument("--clips", type=Path, default=CLIPS, help="real clips whose signatures seed the crawl")
    args = parser.parse_args(argv)

    bases = [Signature.parse(probe(p).content_signature) for p in sorted(args.clips.glob("*.mp4"))]
    records = crawl([b for b in bases if b is not None], args.records, args.reencoded, args.bucket_share)
    with tempfile.TemporaryDirectory() as tmp:
        raw, work = Path(tmp) / "raw", Path(tmp) / "work"
        probed = write_raw(raw, records)
        cpu0, wall0 = time.process_time(), time.monotonic()
        result = run_ingest(raw, work, {}, probed=probed)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.pairwise_check:
        pairwise_check(records[: args.pairwise_check])
    dropped = {r["video_id"] for r in result.rejections if r["reason"] == "duplicate_content"}
    kinds = {video_id: kind for video_id, _, kind, _ in records}
    caught = sum(kinds[v] == "reencoding" for v in dropped)
    takes_dropped = sum(kinds[v] == "take" for v in dropped)
    n_re = sum(k == "reencoding" for k in kinds.values())
    print(f"records: {len(records)} ({len(records) - n_re} takes, {n_re} re-encodings); clips kept {len(result.clips)}")
    print(f"re-encodings caught: {caught} of {n_re}; takes dropped: {takes_dropped} of {len(records) - n_re}")
    print(
        f"ingest: CPU {cpu:.1f} s (target at most {TARGET_CPU_S:.0f} s), wall {wall:.1f} s, peak RSS {rss_mib:.0f} MiB"
    )
    return 0 if caught == n_re and takes_dropped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
