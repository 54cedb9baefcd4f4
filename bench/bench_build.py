"""Whole-build, holistic, worker-scaling and memory figures, each against its reference.

Prints, in one invocation:

1. ``build``: the same whole build (ingest, pixel rules, score, all four modalities at the
   default, published preprocessing, no release) on real clips, at this checkout and at the
   reference commit (``--ref``, default d061e30, checked out with ``git worktree``), alternating
   the two ``--rounds`` times: clips/s, clip-seconds per wall-second, container opens per kept
   clip (every process counted, the probe's child included), peak RSS of the largest process, and
   the ratio of wall times.
2. ``holistic``: the holistic extractor alone (one pass, the build's precision) against a naive
   per-frame script (OpenCV decode, resize and centre crop, one ResNet-50 forward per frame,
   fp32 NCHW), frames/s on the same clips and frames, in one process.
3. ``workers``: one local Dask worker against two (one torch thread each) on ``--scale-clips``
   clips (pixel rules off so that more clips reach extraction).
4. ``memory``: RSS growth of the one-pass extraction (four modalities, default sizes) above its
   level once the models are loaded, on a 60 s clip against a 10 s clip cut from the same video.

``--device cuda`` runs the same figures on a GPU (the naive script then runs on it too). Nothing
here is asserted; docs/RESULTS.md quotes the figures.

    python bench/bench_build.py                      # all four
    python bench/bench_build.py --only build --rounds 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SUPPORT = ROOT / "bench" / "support"
BUILD_CLIPS = ["musepose_dance.mp4", "hybrik_taiji.mp4", "stgcn_ta_chi.mp4", "stgcn_clean_and_jerk.mp4"]
SCALE_CLIPS = [
    *BUILD_CLIPS,
    "tfjs_pose_squats.mp4",
    "tokenflow_woman-running.mp4",
    "sports2d_demo.mp4",
    "liveportrait_d19_face.mp4",
]
CONFIG = """
[ingest]
crawl_time = "2021-01-06T15:51:49Z"
[screen]
max_followers = 0  # the sample's only creator has 398,700 followers
{screen}
[release]
group_by_uploader = false
{extra}
"""


def sh(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def reference_tree(ref: str, where: Path) -> Path:
    """A git worktree of ``ref`` (created once, reused)."""
    tree = where / f"ref-{ref}"
    if not (tree / ".git").exists():
        sh("git", "worktree", "add", "--detach", str(tree), ref, cwd=ROOT)
    return tree


def raw_layout(root: Path, clips: list[str]) -> tuple[Path, Path]:
    """RAW_DIR with links to the real clips and the real metadata sample; a pairing CSV."""
    raw = root / "raw"
    (raw / "clips").mkdir(parents=True, exist_ok=True)
    (raw / "metadata").mkdir(exist_ok=True)
    sample = SHARED / "metadata" / "tiktok_scraper_sample.json"
    if not (raw / "metadata" / sample.name).exists():
        (raw / "metadata" / sample.name).symlink_to(sample)
    records = json.loads(sample.read_text())
    records = records if isinstance(records, list) else records.get("collector", records)
    pairing = root / "pairing.csv"
    with open(pairing, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "video_id", "challenge"])
        for name, record in zip(clips, records, strict=False):
            link = raw / "clips" / name
            if not link.exists():
                link.symlink_to(SHARED / "clips" / name)
            w.writerow([name, record["id"], "#bench"])
    return raw, pairing


def timed_build(tree: Path, entry: str, raw: Path, pairing: Path, config: Path, work: Path, extra: list[str]) -> dict:
    """One ``vdv build`` in a fresh process; wall time, opens and peak RSS of the largest process."""
    shutil.rmtree(work, ignore_errors=True)
    opens = work.parent / f"{work.name}.opens"
    opens.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": f"{SUPPORT}{os.pathsep}{tree}",
        "VDV_BENCH_OPENS": str(opens),
        "PREFECT_HOME": str(work.parent / "prefect-home"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    cmd = [sys.executable, "-m", entry, "build", str(raw), "--pairing", str(pairing), "--config", str(config)]
    cmd += ["--work", str(work), "--untrained", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB; a running maximum
    if done.returncode != 0:
        raise SystemExit(f"build at {tree} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    import pyarrow.parquet as pq

    # read without schema checks: the reference commit writes older table versions
    def rows(table: str, columns: list[str]) -> list[dict]:
        files = sorted((work / table).glob("*.parquet"))
        return [r for f in files for r in pq.read_table(f, columns=columns).to_pylist()]

    clips = {c["clip_id"]: c for c in rows("clips", ["clip_id", "path", "duration_s"])}
    kept = [r["clip_id"] for r in rows("scores", ["clip_id"])]
    by_path = (
        Counter(line.split(" ", 1)[1].strip() for line in opens.read_text().splitlines()) if opens.exists() else {}
    )
    kept_opens = [by_path.get(str(Path(clips[c]["path"])), 0) for c in kept]
    shards = sum(1 for _ in (work / "features").glob("*/*.parquet"))
    return {
        "wall_s": wall,
        "kept": len(kept),
        "clip_seconds": sum(clips[c]["duration_s"] for c in kept),
        "opens_per_kept_clip": max(kept_opens) if kept_opens else 0,
        "peak_rss_mib": max(peak, before) / 1024,
        "shards": shards,
    }


def bench_build(args, scratch: Path) -> None:
    ref = reference_tree(args.ref, scratch)
    raw, pairing = raw_layout(scratch / "build", BUILD_CLIPS)
    config = scratch / "build" / "config.toml"
    config.write_text(CONFIG.format(screen="", extra=""))
    device = ["--device", args.device] if args.device else []
    runs = {"reference": [], "this": []}
    for r in range(args.rounds):
        # the command line's package: cli since the layered layout, pipeline before it (d061e30)
        ref_entry = "cli" if (ref / "cli" / "__main__.py").exists() else "pipeline"
        for label, tree, entry in (("reference", ref, ref_entry), ("this", ROOT, "cli")):
            res = timed_build(tree, entry, raw, pairing, config, scratch / "build" / f"work-{label}", device)
            runs[label].append(res)
            print(
                f"build round {r + 1} {label:9s}: {res['wall_s']:6.1f} s, {res['kept']} kept clips "
                f"({res['clip_seconds']:.1f} s of video), {res['shards']} shards, "
                f"{res['opens_per_kept_clip']} opens per kept clip, peak RSS {res['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    for label, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        print(
            f"build {label:9s}: median {wall:6.1f} s = {rs[0]['kept'] / wall:.3f} clips/s, "
            f"{rs[0]['clip_seconds'] / wall:.3f} clip-s per wall-s, opens per kept clip "
            f"{max(r['opens_per_kept_clip'] for r in rs)}"
        )
    ratio = statistics.median(r["wall_s"] for r in runs["reference"]) / statistics.median(
        r["wall_s"] for r in runs["this"]
    )
    target = " (target >= 2x)" if args.ref == "d061e30" else ""
    print(f"build speed-up against {args.ref}: {ratio:.2f}x{target}")


def naive_holistic(clips: list[Path], device: str, fps: float = 25.0) -> tuple[int, float]:
    """The naive script: OpenCV decode, the 25 fps grid by timestamp, one fp32 forward per frame."""
    import cv2
    import numpy as np
    import torch

    from pipeline.weights.inference import load_model

    model, _ = load_model("tsn_r50_kinetics400", untrained=True, device=device)
    model = model.to(memory_format=torch.contiguous_format)
    mean = torch.tensor([123.675, 116.28, 103.53], device=device).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375], device=device).view(1, 3, 1, 1)
    n, t0 = 0, time.monotonic()
    for path in clips:
        cap = cv2.VideoCapture(str(path))
        next_t = 0.0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if t + 1e-6 < next_t:
                continue
            next_t += 1.0 / fps
            h, w = frame.shape[:2]
            s = 256 / min(h, w)
            frame = cv2.resize(frame, (round(w * s), round(h * s)))
            h, w = frame.shape[:2]
            crop = cv2.cvtColor(
                frame[(h - 224) // 2 : (h - 224) // 2 + 224, (w - 224) // 2 : (w - 224) // 2 + 224], cv2.COLOR_BGR2RGB
            )
            x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float().to(device)
            with torch.inference_mode():
                model((x - mean) / std)
            n += 1
        cap.release()
    return n, time.monotonic() - t0


def bench_holistic(args) -> None:
    from pipeline.core.provenance import sha256_file
    from pipeline.core.runtime import resolve_device, resolve_precision
    from pipeline.extraction import stage as extraction

    device = resolve_device(args.device)
    clips = [SHARED / "clips" / c for c in BUILD_CLIPS[:3]]
    plan = extraction.ExtractionPlan.make(
        ["holistic"], {}, untrained=True, device=device, precision=resolve_precision("auto", device)
    )
    extractors = extraction.load_extractors(plan)
    with tempfile.TemporaryDirectory() as work:
        t0 = time.monotonic()
        n_fast = 0
        for path in clips:
            extraction.extract_clip({"clip_id": sha256_file(path), "path": str(path)}, extractors, work)
            from pipeline.modalities.features import current_shards, read_features

            shard = current_shards(work, "holistic")[sha256_file(path)[:16]]
            n_fast += len(read_features(shard, "holistic").column("timestamps")[0])
        fast = time.monotonic() - t0
    n_naive, naive = naive_holistic(clips, device)
    print(
        f"holistic extractor ({plan.precision}, channels_last, one pass): {n_fast} frames in {fast:.1f} s = {n_fast / fast:.1f} frames/s"
    )
    print(
        f"naive per-frame script (OpenCV, fp32 NCHW, batch 1):     {n_naive} frames in {naive:.1f} s = {n_naive / naive:.1f} frames/s"
    )
    print(f"holistic speed-up: {(n_fast / fast) / (n_naive / naive):.2f}x (target >= 2.5x)")


def bench_workers(args, scratch: Path) -> None:
    raw, pairing = raw_layout(scratch / "scale", SCALE_CLIPS[: args.scale_clips])
    config = scratch / "scale" / "config.toml"
    config.write_text(CONFIG.format(screen="visual = false\nmin_duration_s = 3.0", extra="[extract]\nthreads = 1"))
    device = ["--device", args.device] if args.device else []
    walls: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for n in (1, 2):
            extra = ["--runner", "dask", "--workers", str(n), "--threads-per-worker", "1", *device]
            res = timed_build(ROOT, "cli", raw, pairing, config, scratch / "scale" / f"work-{n}", extra)
            report = json.loads((scratch / "scale" / f"work-{n}" / "flow_state" / "build_report.json").read_text())
            walls[n].append(report["stage_seconds"]["extract"])
            workers = Counter(i["worker"] for i in report["items"] if i["status"] == "computed")
            print(
                f"workers {n}: extraction {walls[n][-1]:.1f} s of a {res['wall_s']:.1f} s build, items per worker {dict(workers)}",
                flush=True,
            )
    ratio = statistics.median(walls[1]) / statistics.median(walls[2])
    print(
        f"two workers against one (extraction stage, {args.scale_clips} clips, 1 thread each): {ratio:.2f}x (target >= 1.6x)"
    )


MEMORY_CHILD = r"""
import json, resource, sys, time, threading
sys.path.insert(0, sys.argv[1])
from pipeline.extraction import stage as extraction
from pipeline.core.runtime import resolve_precision
device = sys.argv[3] or "cpu"
modalities = getattr(extraction, "MODALITIES", None) or ("pose", "holistic", "facial", "scenic")  # a tree with the registry has none
plan = extraction.ExtractionPlan.make(modalities, {}, untrained=True, device=device, precision=resolve_precision("auto", device))
ex = extraction.load_extractors(plan)
def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS")) / 1024
base = rss(); peak = [base]; stop = threading.Event()
def watch():
    while not stop.wait(0.05):
        peak[0] = max(peak[0], rss())
threading.Thread(target=watch, daemon=True).start()
items = extraction.extract_clip({"clip_id": "m" * 64, "path": sys.argv[2]}, ex, sys.argv[4], confirm=False)
stop.set()
print(json.dumps({"base": base, "peak": max(peak[0], rss()), "status": [i.status for i in items]}))
"""


def cut(src: Path, dst: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``src``, stream-copied (same codec, size and content)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        ostream = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            if packet.pts is not None and float(packet.pts * stream.time_base) >= seconds and packet.is_keyframe:
                break
            packet.stream = ostream
            out.mux(packet)
    return dst


def bench_memory(args, scratch: Path) -> None:
    src = SHARED / "clips" / "intel_one-by-one-person-detection.mp4"
    growth = {}
    for seconds in (10, 60):
        clip = cut(src, scratch / f"clip{seconds}.mp4", seconds)
        out = (
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    MEMORY_CHILD,
                    str(ROOT),
                    str(clip),
                    args.device or "",
                    str(scratch / f"mem{seconds}"),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        m = json.loads(out)
        growth[seconds] = m["peak"] - m["base"]
        print(
            f"memory {seconds:2d} s clip: RSS {m['base']:.0f} MiB with models loaded, peak {m['peak']:.0f} MiB, growth {growth[seconds]:.0f} MiB {m['status']}"
        )
    print(f"memory growth 60 s / 10 s: {growth[60] / max(growth[10], 1e-9):.2f}x (target <= 1.2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="d061e30", help="reference commit for the build comparison (default: d061e30)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per comparison (default: 2)")
    parser.add_argument("--scale-clips", type=int, default=6, help="clips of the worker comparison (default: 6)")
    parser.add_argument("--device", help="cpu or cuda (default: CUDA when present)")
    parser.add_argument("--only", nargs="+", choices=("build", "holistic", "workers", "memory"))
    parser.add_argument("--scratch", default=str(ROOT / "out" / "bench_build"), help="scratch directory")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    import torch

    cuda = torch.cuda.is_available()
    print(f"device: {args.device or ('cuda' if cuda else 'cpu')}, {os.cpu_count()} CPU(s), torch {torch.__version__}")
    if not cuda:
        print("GPU figures: unmeasured (no CUDA device here); run with --device cuda on a GPU machine")
    only = set(args.only or ("build", "holistic", "workers", "memory"))
    if "build" in only:
        bench_build(args, scratch)
    if "holistic" in only:
        bench_holistic(args)
    if "workers" in only:
        bench_workers(args, scratch)
    if "memory" in only:
        bench_memory(args, scratch)


if __name__ == "__main__":
    main()
