"""Speed and memory of decoding and pose extraction on the real clips; the two BlazePose backends.

Prints, in one invocation (``--only`` picks one):

1. ``memory``: decoding and pose extraction (the configured backend) per real clip, each in a
   fresh process, so its peak resident memory (``ru_maxrss``) belongs to that measurement alone.
   The long clip (139 s) against a 10 s one shows whether memory grows with clip length.
2. ``backends``: the same frames of the same clips (the pose grid: 25 fps, 640 px) through
   mediapipe's BlazePose and the torch one in float32 and bfloat16, one clip at a time (what a
   CPU worker does) and, for torch, every clip in one batch per step; frames/s and the ratio to
   mediapipe, then where torch's time goes (frame upload and crops, the two networks, the
   landmark decoding and filters, per step).
3. ``batch``: torch frames/s at batch 1, 16, 64 and 256 (``--batches``): as many clips tracked at
   once, each fed its own real frames, on ``--device`` (the GPU node's figure with ``cuda``).

    python bench/bench_pose.py                               # all three on the CPU
    python bench/bench_pose.py --only backends --threads 2
    python bench/bench_pose.py --only batch --device cuda --precision float16
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIPS = ROOT.parent / "shared" / "data" / "clips"
DEFAULT = ["stgcn_ta_chi", "tfjs_pose_1", "musepose_dance", "hybrik_taiji", "intel_one-by-one-person-detection"]
BACKEND_CLIPS = ["stgcn_ta_chi", "musepose_dance", "hybrik_taiji", "tfjs_pose_squats"]


# -- 1. memory -----------------------------------------------------------------------------


def _measure(kind: str, clip: str, fps: float, max_side: int, queue) -> None:
    from pipeline.core.decode import DecodeParams, iter_samples

    path = CLIPS / f"{clip}.mp4"
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "pose":
        from pipeline.modalities.pose import MODALITY

        extractor = MODALITY.build({"fps": fps, "max_side": max_side})
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


def _in_process(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def memory(args) -> None:
    from pipeline.core.decode import source_fps

    print(f"grid {args.fps} fps, frames shrunk to {args.max_side} px; one process per measurement")
    print(f"{'clip':40s} {'what':6s} {'samples':>7s} {'s':>7s} {'fps':>7s} {'peak MiB':>9s} {'growth MiB':>10s}")
    for clip in args.clips:
        for kind in ("decode", "pose"):
            r = _in_process(_measure, kind, clip, args.fps, args.max_side)
            extra = (
                f"  person in {r['found']}/{r['samples']}"
                if kind == "pose"
                else f"  (source {source_fps(CLIPS / f'{clip}.mp4'):.2f} fps)"
            )
            print(
                f"{clip:40s} {kind:6s} {r['samples']:7d} {r['seconds']:7.2f} {r['samples'] / r['seconds']:7.1f}"
                f" {r['peak_mib']:9.1f} {r['growth_mib']:10.1f}{extra}"
            )


# -- 2. backends ---------------------------------------------------------------------------


def _frames(clips, fps: float, max_side: int, limit: int | None = None) -> dict:
    from pipeline.core.decode import DecodeParams, iter_samples

    grid = DecodeParams(fps=fps, max_side=max_side)
    return {
        c: [s.image for s in iter_samples(CLIPS / f"{c}.mp4", grid) if limit is None or s.index < limit] for c in clips
    }


class _Phases:
    """Seconds spent in the engine's phases (wrapped methods), for the profile."""

    def __init__(self, device: str):
        self.seconds: dict[str, float] = defaultdict(float)
        self.device = device

    def wrap(self, obj, name: str, label: str):
        import torch

        real = getattr(obj, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = real(*a, **k)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            self.seconds[label] += time.perf_counter() - t0
            return out

        setattr(obj, name, timed)


def _backend_run(backend: str, precision: str, together: bool, clips, fps, max_side, threads, device, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    frames = _frames(clips, fps, max_side)
    total = sum(len(f) for f in frames.values())
    profile = None
    if backend == "mediapipe":
        from pipeline.blazepose.backends import BlazePose

        with BlazePose() as warm:
            warm.process(frames[clips[0]][0])
        start = time.perf_counter()
        for clip in clips:
            with BlazePose() as pose:
                for image in frames[clip]:
                    pose.process(image)
        elapsed = time.perf_counter() - start
    else:
        from pipeline.blazepose import calculators as calc
        from pipeline.blazepose.engine import Networks, PoseEngine
        from pipeline.blazepose.settings import TrackOptions

        nets = Networks(device, precision)
        warm = PoseEngine(nets, TrackOptions())
        slot = warm.open()
        for image in frames[clips[0]][:5]:
            warm.step([slot], [image])
        phases = _Phases(device)
        engine = PoseEngine(nets, TrackOptions(), capacity=len(clips))
        phases.wrap(nets, "run", "networks (detector and landmark forwards)")
        phases.wrap(calc, "crop", "frame upload is outside; crops (grid_sample)")
        phases.wrap(engine, "_filter", "filters and next ROI (numpy, float64)")
        phases.wrap(calc, "decode_landmarks", "landmark decoding and heatmap refinement")
        phases.wrap(calc, "first_detection", "detection decoding and weighted NMS")
        start = time.perf_counter()
        if together:
            slots = {c: engine.open() for c in clips}
            for t in range(max(len(f) for f in frames.values())):
                live = [c for c in clips if t < len(frames[c])]
                engine.step([slots[c] for c in live], [frames[c][t] for c in live])
        else:
            for clip in clips:
                slot = engine.open()
                for image in frames[clip]:
                    engine.step([slot], [image])
                engine.close(slot)
        elapsed = time.perf_counter() - start
        profile = dict(phases.seconds)
    queue.put({"frames": total, "seconds": elapsed, "profile": profile})


def backends(args) -> None:
    print(
        f"BlazePose backends on {args.device}, {args.threads} torch thread(s), the pose grid ({args.fps} fps, {args.max_side} px)"
    )
    print(
        f"clips: {', '.join(args.backend_clips)}; each run in a fresh process, models loaded and warmed outside the timing"
    )
    runs = [
        ("mediapipe", "float32", False),
        ("torch", "float32", False),
        ("torch", "bfloat16", False),
        ("torch", "float32", True),
        ("torch", "bfloat16", True),
    ]
    results = []
    for backend, precision, together in runs:
        r = _in_process(
            _backend_run,
            backend,
            precision,
            together,
            args.backend_clips,
            args.fps,
            args.max_side,
            args.threads,
            args.device,
        )
        results.append((backend, precision, together, r))
    base = results[0][3]["frames"] / results[0][3]["seconds"]
    print(
        f"\n{'backend':10s} {'precision':9s} {'clips per step':>14s} {'frames':>7s} {'s':>7s} {'frames/s':>9s} {'vs mediapipe':>12s}"
    )
    for backend, precision, together, r in results:
        fps = r["frames"] / r["seconds"]
        per_step = len(args.backend_clips) if together else 1
        print(
            f"{backend:10s} {precision if backend == 'torch' else '-':9s} {per_step:>14d} {r['frames']:7d} {r['seconds']:7.2f} {fps:9.1f} {fps / base:11.2f}x"
        )
    for _, precision, together, r in results:
        if r["profile"]:
            print(
                f"\nwhere torch {precision} ({'all clips per step' if together else 'one clip per step'}) spends its {r['seconds']:.2f} s:"
            )
            for label, seconds in sorted(r["profile"].items(), key=lambda kv: -kv[1]):
                print(f"  {seconds:7.2f} s  {100 * seconds / r['seconds']:5.1f} %  {label}")
            rest = r["seconds"] - sum(r["profile"].values())
            print(
                f"  {rest:7.2f} s  {100 * rest / r['seconds']:5.1f} %  the rest (upload, grouping, projection, Python)"
            )


# -- 3. batch ------------------------------------------------------------------------------


def batch(args) -> None:
    import torch

    from pipeline.blazepose.engine import Networks, PoseEngine
    from pipeline.blazepose.settings import TrackOptions

    torch.set_num_threads(args.threads)
    frames = _frames(args.backend_clips, args.fps, args.max_side, limit=args.steps + 10)
    pool = list(frames.values())
    nets = Networks(args.device, args.precision)
    print(f"torch BlazePose on {args.device} in {args.precision}: frames/s with B clips tracked at once")
    print(f"{'batch':>6s} {'steps':>6s} {'frames':>7s} {'s':>7s} {'frames/s':>9s}")
    for size in args.batches:
        engine = PoseEngine(nets, TrackOptions(), capacity=size)
        slots = [engine.open() for _ in range(size)]
        clip_of = [pool[i % len(pool)] for i in range(size)]
        offset = [(i // len(pool)) % 5 for i in range(size)]  # clips of one source start apart
        steps = args.steps if size < 64 or not args.device.startswith("cuda") else args.steps * 2
        steps = min(steps, min(len(c) for c in pool) - 6)
        for t in range(3):  # warm-up: detections, allocations, kernel choices
            engine.step(slots, [clip_of[i][t + offset[i]] for i in range(size)])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for t in range(3, steps):
            engine.step(slots, [clip_of[i][t + offset[i]] for i in range(size)])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        n = size * (steps - 3)
        print(f"{size:6d} {steps - 3:6d} {n:7d} {elapsed:7.2f} {n / elapsed:9.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("memory", "backends", "batch"), help="one of the three figures")
    parser.add_argument("--clips", nargs="+", default=DEFAULT, help="clips of the memory figure")
    parser.add_argument(
        "--backend-clips", nargs="+", default=BACKEND_CLIPS, help="clips of the backends and batch figures"
    )
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (backends, batch)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (backends, batch)")
    parser.add_argument("--precision", default="float32", help="torch precision of the batch figure")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument(
        "--steps", type=int, default=40, help="steps per batch size, the first 3 a warm-up (the clips' frames bound it)"
    )
    parser.add_argument(
        "--clip-dir", type=Path, default=CLIPS, help="where the clips are (default ../shared/data/clips)"
    )
    args = parser.parse_args()
    if args.steps < 4:
        parser.error(f"--steps {args.steps}: at least 4 (the first 3 steps warm up and are not timed)")
    globals()["CLIPS"] = args.clip_dir
    for name, run in (("memory", memory), ("backends", backends), ("batch", batch)):
        if args.only in (None, name):
            run(args)
            print()


if __name__ == "__main__":
    main()
