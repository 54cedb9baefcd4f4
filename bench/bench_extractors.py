"""Speed and peak memory of each feature extractor (pose, holistic, facial, scenic) on real clips.

Each extractor runs in its own child process so that its peak resident memory (``ru_maxrss``)
is its own; on CUDA the peak allocated device memory is reported too. Real weights are not
needed: the appearance extractors run with ``--untrained`` seeded weights, which cost the same
compute as the trained ones. Clips are cut to their first ``--seconds`` (re-encoded with PyAV,
same size and frame rate) so that a run stays short; every extractor sees the same excerpts.

    python bench/bench_extractors.py                       # all modalities, default clips, 4 s each
    python bench/bench_extractors.py --modalities holistic --seconds 8 --device cuda

Columns: ``samples/s`` counts grid samples (25 fps for pose and holistic, 3 fps for facial,
one background per 12 frames for scenic), ``x realtime`` is clip seconds per wall-clock second
(comparable across modalities), ``peak RSS`` the child's peak resident memory, ``load s`` the
time to build the extractor (model construction and weights).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "clips"
MODALITIES = ("pose", "holistic", "facial", "scenic")
DEFAULT_CLIPS = ("stgcn_ta_chi.mp4", "musepose_dance.mp4", "liveportrait_d18_face.mp4")


def cut_excerpt(src: Path, dst: Path, seconds: float) -> Path:
    """Re-encode the first ``seconds`` of ``src`` (video only) to ``dst`` at the same size and rate."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        istream = inp.streams.video[0]
        rate = istream.average_rate or 25
        ostream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=rate)
        ostream.pix_fmt = "yuv420p"
        t0, index = None, 0
        for frame in inp.decode(istream):
            if frame.time is None:
                continue
            t0 = frame.time if t0 is None else t0
            if frame.time - t0 >= seconds:
                break
            if not ostream.width:  # first frame: the encoder needs even sizes
                ostream.width, ostream.height = frame.width - frame.width % 2, frame.height - frame.height % 2
            image = frame.reformat(width=ostream.width, height=ostream.height, format="yuv420p")
            image.pts, image.time_base = index, 1 / Fraction(rate)
            index += 1
            for packet in ostream.encode(image):
                out.mux(packet)
        for packet in ostream.encode():
            out.mux(packet)
    return dst


def run_one(modality: str, clips: list[str], device: str | None) -> dict:
    """Child process: build the extractor, run it over the clips, report figures as JSON."""
    import torch

    module = importlib.import_module(f"pipeline.modalities.{modality}")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    extractor = module.MODALITY.build(None, untrained=True, device=device)
    load_s = time.perf_counter() - t
    cuda = extractor.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    samples, clip_seconds, wall = 0, 0.0, 0.0
    for clip in clips:
        # warm-up on the first clip is counted: a scheduled run pays it once per process too
        t = time.perf_counter()
        seq = extractor.compute(clip, Path(clip).stem)
        if cuda:
            torch.cuda.synchronize()
        wall += time.perf_counter() - t
        samples += len(seq.timestamps)
        clip_seconds += len(seq.timestamps) / seq.fps
    return {
        "modality": modality,
        "extractor": extractor.name,
        "device": extractor.device,
        "precision": extractor.precision,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "torch_threads": torch.get_num_threads(),
        "load_s": load_s,
        "wall_s": wall,
        "samples": samples,
        "samples_per_s": samples / wall if wall else 0.0,
        "realtime": clip_seconds / wall if wall else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_model_mb": rss_before / 1024,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modalities", nargs="+", default=list(MODALITIES), choices=MODALITIES)
    parser.add_argument(
        "--clips", nargs="+", default=list(DEFAULT_CLIPS), help="file names under ../shared/data/clips or paths"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="excerpt length per clip (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    parser.add_argument("--child", metavar="MODALITY", help=argparse.SUPPRESS)
    parser.add_argument("--excerpts", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print("RESULT " + json.dumps(run_one(args.child, args.excerpts, args.device)), flush=True)
        return 0

    import torch

    gpu = torch.cuda.is_available()
    print(f"GPU: {'yes, ' + torch.cuda.get_device_name() if gpu else 'no (CPU only)'}; CPU cores: {os.cpu_count()}")
    print(
        f"torch {torch.__version__}; untrained seeded weights; excerpts of {args.seconds:g} s of {', '.join(args.clips)}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="vdv-bench-") as tmp:
        excerpts = []
        for name in args.clips:
            src = Path(name) if Path(name).exists() else DATA / name
            excerpts.append(str(cut_excerpt(src, Path(tmp) / f"{src.stem}.mp4", args.seconds)))
        for modality in args.modalities:
            if importlib.util.find_spec(f"pipeline.modalities.{modality}") is None:
                print(f"{modality}: skipped (pipeline/{modality}.py does not exist yet)")
                continue
            cmd = [sys.executable, __file__, "--child", modality, "--excerpts", *excerpts]
            if args.device:
                cmd += ["--device", args.device]
            proc = subprocess.run(
                cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                print(f"{modality}: failed ({' | '.join(tail)})")
                continue
            results.append(json.loads(lines[-1][len("RESULT ") :]))

    header = f"{'modality':<9} {'device':<7} {'precision':<9} {'samples':>7} {'samples/s':>9} {'x realtime':>10} {'load s':>7} {'peak RSS MB':>11} {'peak CUDA MB':>12}"
    print(header)
    print("-" * len(header))
    for r in results:
        cuda_mb = f"{r['peak_cuda_mb']:.0f}" if r["peak_cuda_mb"] is not None else "-"
        print(
            f"{r['modality']:<9} {r['device']:<7} {r['precision']:<9} {r['samples']:>7} {r['samples_per_s']:>9.1f} "
            f"{r['realtime']:>10.2f} {r['load_s']:>7.1f} {r['peak_rss_mb']:>11.0f} {cuda_mb:>12}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
