"""Probe time per real clip: duration, checks and content signature in one open and one pass.

Prints, per clip, the wall time of :func:`pipeline.ingest.probe.probe` (best of ``--repeat`` runs),
the container opens it made (``av.open`` calls, the scale-out budget counts them) and the
decodable duration next to the frame count over the average rate.

    python bench/bench_probe.py
    python bench/bench_probe.py --clips musepose_dance sports2d_demo --repeat 5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="*", help="clip stems (default: every clip in ../shared/data/clips)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import av

    from pipeline.ingest import probe as probe_module

    opens = []
    real_open = av.open

    def counting_open(*a, **k):
        opens.append(a[0])
        return real_open(*a, **k)

    av.open = counting_open
    names = args.clips or sorted(p.stem for p in CLIPS.glob("*.mp4"))
    print(f"{'clip':<36} {'seconds':>8} {'opens':>5} {'duration':>10} {'frames/fps':>10}")
    total = 0.0
    for name in names:
        best = float("inf")
        for _ in range(args.repeat):
            opens.clear()
            start = time.perf_counter()
            result = probe_module.probe(CLIPS / f"{name}.mp4")
            best = min(best, time.perf_counter() - start)
        total += best
        nominal = result.frame_count / result.avg_fps if result.avg_fps else float("nan")
        print(f"{name:<36} {best:>8.3f} {len(opens):>5} {result.duration_s:>10.4f} {nominal:>10.4f}")
    print(f"{'total':<36} {total:>8.3f}")


if __name__ == "__main__":
    main()
