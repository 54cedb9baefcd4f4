"""A GPU node's build throughput: the pixel rules and the four modalities of many clips in flight.

What the build's per-clip work does, without Prefect (which a bare GPU machine may not have):
``--clips-in-flight`` threads, as the thread runner's workers, each take the next clip, run the
pixel rules (``pipeline.screening.visual.screen_visual``) and then ``pipeline.extraction.stage.extract_clip``
(every modality from one decode pass) on ``--device``. BlazePose (pose, the person mask) and ViBe
run on the torch backends there, batched across the clips in flight (``pipeline.core.batching``);
holistic, facial and scenic's networks run untrained (random weights: the same work as trained
ones). The real clips are used ``--copies`` times each, as distinct clips (ids differ), so that
enough clips are in flight. Prints grid frames per second: frames of the 25 fps grid extracted,
over the wall time from the first clip to the last.

    python bench/bench_node.py --device cuda --clips-in-flight 64 --copies 16
    python bench/bench_node.py --device cpu --clips-in-flight 2 --copies 1 --clips stgcn_ta_chi tfjs_pose_1
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIPS = Path(os.environ.get("VDV_BENCH_CLIPS", ROOT.parent / "shared" / "data" / "clips"))
DEFAULT = [
    "musepose_dance",
    "hybrik_taiji",
    "stgcn_ta_chi",
    "stgcn_clean_and_jerk",
    "tfjs_pose_squats",
    "tuneavideo_man-surfing",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--clips", nargs="+", default=DEFAULT)
    parser.add_argument("--copies", type=int, default=8, help="each clip this many times, as distinct clips")
    parser.add_argument("--clips-in-flight", type=int, default=32, help="threads, each working on one clip")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per clip (default: cores / clips)")
    parser.add_argument("--no-screen", action="store_true", help="extraction only")
    parser.add_argument("--backend", default="auto", help="[pose] backend (auto: torch on CUDA); ViBe follows it")
    args = parser.parse_args()

    import torch

    from pipeline.core.runtime import place, threads_per_task
    from pipeline.extraction.stage import ExtractionPlan, extract_clip, load_extractors
    from pipeline.screening.visual import VisualConfig, counter_settings, screen_visual

    device, precision = place(args.device, "auto")
    vibe = {"torch": "torch", "mediapipe": "numpy"}.get(args.backend, "auto")
    config = {"pose": {"backend": args.backend}, "scenic": {"vibe_backend": vibe}, "extract": {"precision": precision}}
    plan = ExtractionPlan.make(
        ["pose", "holistic", "facial", "scenic"],
        config,
        untrained=True,
        device=device,
        precision=precision,
        threads=args.threads or threads_per_task(args.clips_in_flight),
    )
    print(
        f"device {device} ({torch.cuda.get_device_name() if device.startswith('cuda') else os.cpu_count()} "
        f"CPUs), precision {precision}, BlazePose backend {plan.pose_backend}, {args.clips_in_flight} clips in flight"
    )
    started = time.perf_counter()
    extractors = load_extractors(plan)
    print(f"models loaded in {time.perf_counter() - started:.1f} s")
    pose = counter_settings(config)
    clips = [
        {
            "clip_id": hashlib.sha256(f"{name}#{k}".encode()).hexdigest(),
            "path": str(CLIPS / f"{name}.mp4"),
            "video_id": name,
        }
        for k in range(args.copies)
        for name in args.clips
    ]
    frames = {"n": 0, "screen_s": 0.0}
    lock = threading.Lock()

    with tempfile.TemporaryDirectory() as work:

        def one(clip):
            t0 = time.perf_counter()
            if not args.no_screen:
                screen_visual(clip["path"], clip["clip_id"], VisualConfig(), pose=pose)
            t1 = time.perf_counter()
            items = extract_clip(clip, extractors, work)
            from pipeline.modalities.features import current_shards, read_features

            shard = current_shards(work, "pose").get(clip["clip_id"][:16])
            n = len(read_features(shard, "pose").column("timestamps")[0]) if shard else 0
            with lock:
                frames["n"] += n
                frames["screen_s"] += t1 - t0
            return items

        start = time.perf_counter()
        with ThreadPoolExecutor(args.clips_in_flight) as pool:
            results = list(pool.map(one, clips))
        wall = time.perf_counter() - start
    failed = [i for items in results for i in items if i.status == "rejected"]
    print(
        f"{len(clips)} clips, {frames['n']} grid frames (25 fps) in {wall:.1f} s: {frames['n'] / wall:.0f} frames/s"
        f" ({len(clips) / wall:.2f} clips/s); pixel rules {frames['screen_s']:.0f} thread-seconds; {len(failed)} failed items"
    )
    for item in failed[:5]:
        print("  failed:", item.modality, item.reason, item.message)


if __name__ == "__main__":
    main()
