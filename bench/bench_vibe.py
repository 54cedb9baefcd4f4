"""Speed and memory of ViBe, the scenic and the facial extractors on real clips.

    python bench/bench_vibe.py [--clip PATH] [--seconds S] [--device cpu|cuda] [--out out/bench_vibe]

Prints frames (or samples) per second and peak memory (process RSS; CUDA peak when on a GPU),
and writes the clip's background images as PNGs under ``--out`` so they can be looked at.
Untrained weights are used when the cache has none (the speed is the same).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(module, config: dict, device: str | None):
    from pipeline.errors import WeightsError

    try:
        return module.build_extractor(config, device=device)
    except WeightsError:
        return module.build_extractor(config, untrained=True, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default=str(CLIPS / "hybrik_taiji.mp4"))
    parser.add_argument("--face-clip", default=str(CLIPS / "musepose_dance.mp4"))
    parser.add_argument("--seconds", type=float, default=10.0, help="excerpt length (default %(default)s)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--out", default="out/bench_vibe", help="directory for the background PNGs")
    args = parser.parse_args()

    import numpy as np
    import torch

    from pipeline import facial, scenic
    from pipeline.decode import DecodeParams, iter_samples
    from pipeline.vibe import window_backgrounds, write_backgrounds

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch threads {torch.get_num_threads()}, excerpt {args.seconds} s")

    config = scenic.ScenicConfig(end_s=args.seconds)
    frames = [
        s.image for s in iter_samples(args.clip, DecodeParams(fps=25, short_side=config.short_side, end_s=args.seconds))
    ]
    start = time.perf_counter()
    found = list(window_backgrounds(frames, params=config.vibe_params()))
    took = time.perf_counter() - start
    h, w = frames[0].shape[:2]
    print(
        f"vibe      {len(frames) / took:8.1f} frames/s  ({len(frames)} frames {w}x{h}, {len(found)} backgrounds, "
        f"up to {config.window // config.hop} live models)  peak RSS {peak_rss_mib():.0f} MiB"
    )
    paths = write_backgrounds(
        [(i / 25, im) for i, im in found], Path(args.out) / Path(args.clip).stem, Path(args.clip).stem
    )
    print(f"          backgrounds written to {paths[0].parent}/")
    del frames

    for name, module, clip, cfg in (
        ("scenic", scenic, args.clip, {"end_s": args.seconds}),
        ("facial", facial, args.face_clip, {"end_s": args.seconds}),
    ):
        extractor = build(module, cfg, device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        seq = extractor.compute(clip, "0" * 64)
        took = time.perf_counter() - start
        grid_frames = int(round(args.seconds * (25 if name == "scenic" else cfg.get("fps", 3.0))))
        gpu = f", CUDA peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.startswith("cuda") else ""
        print(
            f"{name:9s} {grid_frames / took:8.1f} grid frames/s ({len(seq.timestamps)} samples, "
            f"{int(np.sum(seq.valid))} valid, {took:.1f} s, {extractor.precision}, "
            f"weights {extractor.weights_sha256[:12]})  peak RSS {peak_rss_mib():.0f} MiB{gpu}"
        )


if __name__ == "__main__":
    main()
