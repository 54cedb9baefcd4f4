"""Host waits and host time of the torch path (GPU node targets), against the reference commit.

    python bench/bench_host.py                       # all three, this checkout and 95d487e
    python bench/bench_host.py --only waits host --ref 95d487e

Prints:

1. ``waits``: host waits per grid frame through a real ``vdv build --modalities pose scenic
   --runner thread --workers 4`` of four real clips, with ``[pose] backend = "torch"`` and
   ``[scenic] vibe_backend = "torch"`` on the CPU, per component: the pixel rules (the people
   counter's static BlazePose), pose with its mask (the tracking BlazePose steps) and ViBe, plus
   whatever else waits ("other"). A host wait is a device-to-host copy or an operation whose
   output's shape depends on the data (:mod:`pipeline.core.hostwaits`, loaded from this checkout by
   path into both builds, ``bench/support/sitecustomize.py``). Grid frames: the scenic grid's
   frames (25 fps), one ViBe row each. Target: at most 6 per grid frame.
2. ``timing``: the same build without the counter, at this checkout and at the reference, in one
   run: wall seconds per grid frame and their ratio (target: this checkout no slower).
3. ``host``: the BlazePose step (tracking, with the mask) and the ViBe step at batch 64 on real
   frames, in a process per checkout: CPU microseconds per frame outside the networks and ATen
   operations per frame outside them (each one a kernel launch of a few microseconds on a GPU);
   numpy's ViBe (``vibe numpy``) on the same frames, one model per clip, for the CPU ratio.
   On the CPU the time outside the networks includes the arithmetic a GPU would do; the
   operation count is what stays on the host there.

Nothing is asserted; docs/GPU_NODE.md quotes the figures. Figures on a shared CPU are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_build import BUILD_CLIPS, CONFIG, SUPPORT, raw_layout, reference_tree  # noqa: E402

COMPONENTS = ("pixel rules", "pose+mask", "vibe", "other", "loading")
PER_FRAME = COMPONENTS[:4]  # "loading": BlazePose's network loads, once per process and precision
TORCH = """[pose]
backend = "torch"
[scenic]
vibe_backend = "torch"
"""


def build(tree: Path, raw: Path, pairing: Path, config: Path, work: Path, waits: Path | None) -> float:
    """One ``vdv build`` of pose and scenic, thread runner, 4 workers; its wall seconds."""
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    env = {
        **os.environ,
        "PYTHONPATH": f"{SUPPORT}{os.pathsep}{tree}",
        "PREFECT_HOME": str(work.parent / "prefect-home"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if waits is not None:
        waits.unlink(missing_ok=True)
        env["VDV_BENCH_HOSTWAITS"] = str(waits)
        env["VDV_BENCH_HOSTWAITS_CODE"] = str(ROOT / "pipeline" / "core" / "hostwaits.py")
    cmd = [sys.executable, "-m", "cli", "build", str(raw), "--pairing", str(pairing), "--config", str(config)]
    cmd += ["--work", str(work), "--untrained", "--device", "cpu", "--modalities", "pose", "scenic"]
    cmd += ["--runner", "thread", "--workers", "4"]
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"build at {tree} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall


def read_waits(path: Path) -> tuple[Counter, int, dict]:
    """(waits per (component, kind), grid frames, ATen ops per component) over every process."""
    counts, ops, frames = Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for component, kind, n in record["counts"]:
            counts[(component, kind)] += n
        ops.update(record["ops"])
        frames += record["vibe_rows"]
    return counts, frames, dict(ops)


def print_waits(label: str, counts: Counter, frames: int) -> None:
    total = sum(v for (c, _), v in counts.items() if c in PER_FRAME)
    parts = []
    for component in COMPONENTS:
        n = sum(v for (c, _), v in counts.items() if c == component)
        kinds = ", ".join(f"{k} {v / frames:.2f}" for (c, k), v in sorted(counts.items()) if c == component)
        parts.append(f"{component} {n / frames:.2f}" + (f" ({kinds})" if kinds else ""))
    print(
        f"waits {label:9s}: {total / max(frames, 1):6.2f} per grid frame over {frames} grid frames (loading "
        f"apart): " + "; ".join(parts)
    )


def host_figures(batch: int, steps: int) -> dict:
    """In this process (the checkout on PYTHONPATH): the BlazePose and ViBe steps at ``batch``."""
    import numpy as np
    import torch

    from pipeline.blazepose.engine import Networks, PoseEngine, TrackOptions
    from pipeline.core.decode import DecodeParams, iter_samples, target_size
    from pipeline.modalities.scenic import ScenicConfig, background_size, resized
    from pipeline.modalities.vibe import ViBe, ViBeParams
    from pipeline.modalities.vibe_torch import ViBeBank

    spec = __import__("importlib.util").util.spec_from_file_location("hw", ROOT / "pipeline" / "core" / "hostwaits.py")
    hw = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(hw)
    clips = Path(os.environ.get("VDV_BENCH_CLIPS", ROOT.parent / "shared" / "data" / "clips"))
    grid = DecodeParams(fps=25.0, max_side=640, end_s=(steps + 1) / 25.0)
    per_clip = [[s.image for s in iter_samples(clips / name, grid)][: steps + 1] for name in BUILD_CLIPS]
    rows = [per_clip[i % len(per_clip)] for i in range(batch)]
    mask_size = [target_size(r[0].shape[1], r[0].shape[0], DecodeParams(short_side=256)) for r in rows]
    config = ScenicConfig()
    small = [[resized(f, background_size(f, config)) for f in r] for r in rows]
    masks = [np.zeros(s[0].shape[:2], dtype=bool) for s in small]

    nets = Networks("cpu", "float32")
    in_nets = [0.0]
    real_run = nets.run

    def timed_run(net, x):
        start = time.perf_counter()
        with counter.component("network"):
            out = real_run(net, x)
        in_nets[0] += time.perf_counter() - start
        return out

    nets.run = timed_run
    counter = hw.HostWaits()
    out = {}
    engine = PoseEngine(nets, TrackOptions(segmentation=True), capacity=batch)
    slots = [engine.open() for _ in range(batch)]
    bank = ViBeBank(ViBeParams(), 0, "cpu")
    vslots = [bank.open() for _ in range(batch)]
    bank.step(vslots, [(s[0], m) for s, m in zip(small, masks, strict=True)])  # initialisation
    models = [ViBe(s[0], ViBeParams(), seed=0, exclude=m) for s, m in zip(small, masks, strict=True)]
    for name, run in (
        ("pose+mask", lambda i: engine.step(slots, [r[i] for r in rows], mask_size)),
        ("vibe", lambda i: bank.step(vslots, [(s[i], m) for s, m in zip(small, masks, strict=True)])),
        ("vibe numpy", lambda i: [v.apply(s[i], m) for v, s, m in zip(models, small, masks, strict=True)]),
    ):
        run(0)  # warm-up (the pose step detects here)
        in_nets[0], start = 0.0, time.perf_counter()
        for i in range(1, steps):
            run(i)
        wall, nets_s = time.perf_counter() - start, in_nets[0]
        with counter.counting(), counter.component(name):
            run(steps)
        frames = batch * (steps - 1)
        out[name] = {
            "us_outside_networks": 1e6 * (wall - nets_s) / frames,
            "us_in_networks": 1e6 * nets_s / frames,
            "ops_outside_networks": counter.ops.get(name, 0) / batch,
            "waits": sum(v for (c, _), v in counter.counts.items() if c == name) / batch,
        }
        counter.ops.clear()
        counter.counts.clear()
    out["torch_threads"] = torch.get_num_threads()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["waits", "timing", "host"], default=["waits", "timing", "host"])
    parser.add_argument("--ref", default="95d487e", help="the reference commit (default %(default)s)")
    parser.add_argument(
        "--checkouts", choices=["both", "this", "reference"], default="both", help="which checkouts to run"
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="host: steps timed after a warm-up (default 4)")
    parser.add_argument("--scratch", default=None, help="a directory for the builds (default: a temporary one)")
    parser.add_argument("--host-json", default=None, help=argparse.SUPPRESS)  # one checkout's host figures
    args = parser.parse_args()
    if args.host_json:
        Path(args.host_json).write_text(json.dumps(host_figures(args.batch, args.steps)))
        return
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench-host-"))
    scratch.mkdir(parents=True, exist_ok=True)
    trees = []
    if args.checkouts in ("both", "reference"):
        trees.append(("reference", reference_tree(args.ref, scratch)))
    if args.checkouts in ("both", "this"):
        trees.append(("this", ROOT))
    raw, pairing = raw_layout(scratch / "build", BUILD_CLIPS)
    config = scratch / "build" / "config.toml"
    config.write_text(CONFIG.format(screen="", extra=TORCH))
    print(f"clips: {', '.join(BUILD_CLIPS)}; reference {args.ref}; CPU, {os.cpu_count()} cores", flush=True)
    frames = {}
    if "waits" in args.only:
        for label, tree in trees:
            path = scratch / f"waits-{label}.jsonl"
            build(tree, raw, pairing, config, scratch / "build" / f"work-{label}", path)
            counts, frames[label], ops = read_waits(path)
            print_waits(label, counts, frames[label])
            print(
                f"          ATen ops per grid frame: {', '.join(f'{c} {n / frames[label]:.0f}' for c, n in ops.items())}"
            )
    if "timing" in args.only:
        walls = {}
        for label, tree in trees:
            walls[label] = build(tree, raw, pairing, config, scratch / "build" / f"work-{label}", None)
            per = f", {1000 * walls[label] / frames[label]:.1f} ms per grid frame" if label in frames else ""
            print(f"timing {label:9s}: build {walls[label]:.1f} s{per}", flush=True)
        if len(walls) == 2:
            print(f"timing: this checkout's build takes {walls['this'] / walls['reference']:.2f}x the reference's")
    if "host" in args.only:
        for label, tree in trees:
            out = scratch / f"host-{label}.json"
            env = {**os.environ, "PYTHONPATH": str(tree)}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--host-json", str(out)]
            cmd += ["--batch", str(args.batch), "--steps", str(args.steps)]
            subprocess.run(cmd, cwd=tree, env=env, check=True)
            figures = json.loads(out.read_text())
            for name in ("pose+mask", "vibe", "vibe numpy"):
                f = figures[name]
                print(
                    f"host {label:9s} {name:9s} batch {args.batch}: {f['us_outside_networks']:8.0f} us per frame outside "
                    f"the networks (CPU, {figures['torch_threads']} threads; networks {f['us_in_networks']:.0f}), "
                    f"{f['ops_outside_networks']:.1f} ATen ops and {f['waits']:.2f} host waits per frame",
                    flush=True,
                )


if __name__ == "__main__":
    main()
