"""Speed and memory of decoding and pose extraction on the real clips, on this machine's CPU.

Each measurement runs in a fresh process, so its peak resident memory (``ru_maxrss``) belongs
to that measurement alone. The long clip (139 s) against a 10 s one shows whether memory grows
with clip length: the decoder streams frames and the pose shard holds 48 floats per sample.

    python bench/bench_pose.py                       # the default clips
    python bench/bench_pose.py --clips stgcn_ta_chi --no-pose
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from pathlib import Path

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"
DEFAULT = ["stgcn_ta_chi", "tfjs_pose_1", "musepose_dance", "hybrik_taiji", "intel_one-by-one-person-detection"]


def _measure(kind: str, clip: str, fps: float, max_side: int, queue) -> None:
    from pipeline.decode import DecodeParams, iter_samples

    path = CLIPS / f"{clip}.mp4"
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "pose":
        from pipeline.pose import build_extractor

        extractor = build_extractor({"fps": fps, "max_side": max_side})
        extractor.compute(CLIPS / "tfjs_pose_1.mp4", "warm-up")  # model load outside the timing
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        seq = extractor.compute(path, clip)
        n, found = len(seq.timestamps), int(seq.valid.sum())
    else:
        start = time.perf_counter()
        n = found = 0
        for _ in iter_samples(path, DecodeParams(fps=fps, max_side=max_side)):
            n += 1
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    queue.put(
        {
            "samples": n,
            "found": found,
            "seconds": elapsed,
            "peak_mib": peak / 1024,
            "growth_mib": (peak - baseline) / 1024,
        }
    )


def measure(kind: str, clip: str, fps: float, max_side: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(kind, clip, fps, max_side, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=DEFAULT)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--no-pose", action="store_true", help="decoding only")
    args = parser.parse_args()

    from pipeline.decode import source_fps

    print(f"grid {args.fps} fps, frames shrunk to {args.max_side} px; one process per measurement")
    print(f"{'clip':40s} {'what':6s} {'samples':>7s} {'s':>7s} {'fps':>7s} {'peak MiB':>9s} {'growth MiB':>10s}")
    for clip in args.clips:
        kinds = ["decode"] if args.no_pose else ["decode", "pose"]
        for kind in kinds:
            r = measure(kind, clip, args.fps, args.max_side)
            extra = (
                f"  person in {r['found']}/{r['samples']}"
                if kind == "pose"
                else f"  (source {source_fps(CLIPS / f'{clip}.mp4'):.2f} fps)"
            )
            print(
                f"{clip:40s} {kind:6s} {r['samples']:7d} {r['seconds']:7.2f} {r['samples'] / r['seconds']:7.1f}"
                f" {r['peak_mib']:9.1f} {r['growth_mib']:10.1f}{extra}"
            )


if __name__ == "__main__":
    main()
