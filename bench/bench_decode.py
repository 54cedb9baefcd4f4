"""Decoded frames per kept clip: screening and extraction in one pass against two, and the reference.

Each clip (default: the demo's five kept clips and three that the pixel rules reject) is screened
by the pixel rules (default ``[visual]``) and, when kept, extracted (pose only, a small grid: the
decode count does not depend on the extractors), in a child process per way:

- ``ref``: the reference commit (``--ref``, default 95d487e, exported with ``git archive``):
  screening decodes the clip, extraction decodes it again;
- ``two``: this checkout the same way (``[extract] one_pass = false``, the CPU default);
- ``one``: this checkout with one pass (``[extract] one_pass = true``, the CUDA default).

Frames out of the codec are counted by wrapping ``av.open`` in the child (the same count for every
version; this checkout's own counter, ``DecodePass.frames_decoded``, is checked against it), and
set against each clip's frame count (the probe's demuxed packets). ``seek`` is what screening
would decode if it sought to the keyframe before each sample instead (forward only, from the
packets' keyframe flags; no decode): the other way to one decode per kept clip, which it does not
reach with the sample clips' groups of pictures. Nothing here is asserted.

    python bench/bench_decode.py
    python bench/bench_decode.py --clips musepose_dance.mp4 --ref /tmp/ref
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
KEPT = [
    "stgcn_ta_chi.mp4",
    "hybrik_taiji.mp4",
    "stgcn_clean_and_jerk.mp4",
    "musepose_dance.mp4",
    "tfjs_pose_squats.mp4",
]
REJECTED = ["liveportrait_d18_face.mp4", "tokenflow_woman-running.mp4", "sports2d_demo.mp4"]
CONFIG = {"pose": {"fps": 5.0, "max_side": 256}, "screen": {"max_followers": 0}}


def _count_opens():
    """Wrap ``av.open`` so that every frame a container's ``decode`` yields is counted, per file."""
    import av

    counts: dict[str, int] = {}
    real_open = av.open

    class Counted:
        def __init__(self, container, path):
            self._c, self._path = container, path

        def __getattr__(self, name):
            return getattr(self._c, name)

        def __enter__(self):
            self._c.__enter__()
            return self

        def __exit__(self, *exc):
            return self._c.__exit__(*exc)

        def decode(self, *args, **kwargs):
            for frame in self._c.decode(*args, **kwargs):
                counts[self._path] = counts.get(self._path, 0) + 1
                yield frame

    def counting(path, *args, **kwargs):
        return Counted(real_open(path, *args, **kwargs), str(path))

    av.open = counting
    return counts


def inner(way: str, clips: list[dict]) -> dict:
    """One way (ref | two | one) over ``clips``, in this process: frames decoded per clip, kept or not."""
    counts = _count_opens()
    from pipeline.extraction import stage as extraction
    from pipeline.modalities import registry as modalities
    from pipeline.screening.stage import PixelRules

    work = tempfile.mkdtemp(prefix=f"vdv-bench-decode-{way}-")
    config = {**CONFIG, "extract": {"one_pass": way == "one"}} if way != "ref" else CONFIG
    if way == "ref":
        plan = extraction.ExtractionPlan.make(["pose"], CONFIG, untrained=True, device="cpu", precision="float32")
    else:
        from pipeline.core.placement import resolve_placement

        placement = resolve_placement(config, "cpu", "float32", backends=modalities.backend_settings(config))
        plan = extraction.plan_extraction(["pose"], config, placement=placement)
    out, own = {}, {}
    for clip in clips:
        if way == "one":
            from pipeline.extraction.onepass import screen_and_extract

            done = screen_and_extract(work, clip, config, plan)
            kept, own[clip["clip_id"]] = bool(done["passed"]), done["decoded_frames"]
        else:
            rules = PixelRules(config, work, thumbnails=False)
            results, _ = rules.run(clip)
            kept = all(r.passed for r in results)
            own[clip["clip_id"]] = getattr(rules, "decoded_frames", 0)
            if kept:
                items = extraction.extract_clip(clip, extraction.load_extractors(plan), work)
                own[clip["clip_id"]] += max(getattr(it, "decoded_frames", 0) for it in items)
        out[clip["clip_id"]] = {
            "kept": kept,
            "decoded": counts.get(clip["path"], 0),
            "own_counter": own[clip["clip_id"]],
        }
    return out


def seek_frames(path: str, times: list[float]) -> int:
    """Frames screening would decode seeking forward to the keyframe at or before each sample time
    and decoding up to it (a sample needs every frame from its group's keyframe)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        packets = [(float(p.pts * p.time_base), p.is_keyframe) for p in container.demux(stream) if p.pts is not None]
    pts = sorted(packets)
    t0 = pts[0][0]
    keys = [i for i, (_, key) in enumerate(pts) if key]
    decoded, position = 0, -1  # index of the last frame decoded
    for t in times:
        target = max((i for i, (p, _) in enumerate(pts) if p - t0 <= t + 1e-9), default=0)
        if target <= position:
            continue
        key = max((k for k in keys if k <= target), default=0)
        start = position + 1 if key <= position + 1 else key
        decoded += target - start + 1
        position = target
    return decoded


def _clips(names: list[str]) -> list[dict]:
    from pipeline.core.provenance import sha256_file
    from pipeline.ingest.probe import probe
    from pipeline.screening.visual import VisualConfig, sample_params

    out = []
    for name in names:
        path = SHARED / "clips" / name
        found = probe(path)
        params = sample_params(path, VisualConfig(), found.duration_s)
        n = min(VisualConfig().max_frames, math.ceil(found.duration_s * params.fps - 1e-9))
        out.append(
            {
                "clip_id": sha256_file(path),
                "path": str(path),
                "video_id": name,
                "duration_s": found.duration_s,
                "frame_count": found.frame_count,
                "sample_times": [k / params.fps for k in range(n)],
                "size": f"{found.width}x{found.height}",
            }
        )
    return out


def _ref_checkout(ref: str) -> Path:
    target = Path(tempfile.mkdtemp(prefix="vdv-ref-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def _run(way: str, root: Path, clips: list[dict]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = f"import json, sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import bench_decode as b; " + (
        f"print('RESULT', json.dumps(b.inner({way!r}, json.loads(sys.stdin.read()))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(clips), env=env, cwd=root, capture_output=True, text=True
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{way}: failed\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", default=KEPT + REJECTED)
    parser.add_argument("--ref", default="95d487e", help="reference commit (or a checkout of it)")
    args = parser.parse_args(argv)
    clips = _clips(args.clips)
    ref_root = Path(args.ref) if Path(args.ref).is_dir() else _ref_checkout(args.ref)
    ways = {"ref": _run("ref", ref_root, clips), "two": _run("two", ROOT, clips), "one": _run("one", ROOT, clips)}
    print(f"{'clip':32} {'size':>10} {'frames':>6} {'kept':>5} {'ref':>6} {'two':>6} {'one':>6} {'seek+1':>6}")
    totals = dict.fromkeys(("frames", "ref", "two", "one", "seek"), 0)
    for clip in clips:
        row = {w: ways[w][clip["clip_id"]] for w in ways}
        kept = row["ref"]["kept"]
        if not (kept == row["two"]["kept"] == row["one"]["kept"]):
            print(f"  SCREENING DIFFERS on {clip['video_id']}: {[row[w]['kept'] for w in ways]}")
        seek = seek_frames(clip["path"], clip["sample_times"]) + (clip["frame_count"] if kept else 0)
        print(
            f"{clip['video_id'][:32]:32} {clip['size']:>10} {clip['frame_count']:>6} {str(kept):>5} "
            + " ".join(f"{row[w]['decoded'] / clip['frame_count']:>6.2f}" for w in ways)
            + f" {seek / clip['frame_count']:>6.2f}"
        )
        for w in ("two", "one"):
            if row[w]["own_counter"] != row[w]["decoded"]:
                print(f"  {w}: DecodePass counted {row[w]['own_counter']}, av.open {row[w]['decoded']}")
        if kept:
            totals["frames"] += clip["frame_count"]
            totals["seek"] += seek
            for w in ways:
                totals[w] += row[w]["decoded"]
    frames = max(totals["frames"], 1)
    print(
        "decoded frames per kept clip (all kept clips together): "
        + ", ".join(f"{w} {totals[w] / frames:.2f}x" for w in ("ref", "two", "one", "seek"))
        + f"; one pass against the reference: {totals['one'] / max(totals['ref'], 1):.2f}"
    )


if __name__ == "__main__":
    main()
