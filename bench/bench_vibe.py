"""Cost of the scenic background images before and after person masking, the Places365 input
against the published preprocessing, and the scenic and facial extractors end to end.

    python bench/bench_vibe.py [--clip PATH] [--seconds S] [--device cpu|cuda] [--out out/bench_vibe] [--vibe-only]
    python bench/bench_vibe.py --against 95d487e [--batch 16] [--rounds 3]   # the torch ViBe's CPU ratio

Prints:

- the cost per grid frame of the background images: *before* (the previous design: a fresh ViBe
  model per 120-frame window, up to 10 live, at a 160 px grid, image = mean of the samples) and
  *after* (the BlazePose person mask plus one ViBe model and the window means, at the 256 px
  grid), the mask and ViBe apart; then numpy's ViBe against the torch one on the same frames and
  masks (``--vibe-only`` stops there);
- how far the network's input (224 x 224 RGB pixels) is from the Places365 reference demo
  applied to the native frame (resize to 256 x 256, centre 224): mean absolute error in grey
  levels, for the previous geometry (160 px grid, short side to 256, crop), for the 160 px grid
  with the reference geometry (what the enlargement alone costs) and for the current one (256 px
  grid, 256 x 256, crop), on one frame a second of the sample clips;
- samples per second and peak memory (process RSS; CUDA peak on a GPU) of the scenic and facial
  extractors; untrained weights are used when the cache has none (the speed is the same).

It writes the clip's background images (after) as PNGs under ``--out`` so they can be looked at.
Figures on a shared CPU are noisy: treat them as lower bounds.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"
GEOMETRY_CLIPS = ("hybrik_taiji.mp4", "musepose_dance.mp4", "stgcn_ta_chi.mp4", "controlvideo_moonwalk.mp4")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(module, config: dict, device: str | None):
    from pipeline.core.errors import WeightsError

    try:
        return module.MODALITY.build(config, device=device)
    except WeightsError:
        return module.MODALITY.build(config, untrained=True, device=device)


def previous_backgrounds(frames, params, window: int = 120, hop: int = 12) -> int:
    """The previous design, for its cost: a fresh ViBe model per window (from the window's first
    frame), the image being the mean of the model's samples at the window's end."""
    import numpy as np

    from pipeline.modalities.vibe import ViBe

    models, images = {}, 0
    for index, frame in enumerate(frames):
        if index == 0 or (index + window - hop) % hop == 0:
            models[index] = ViBe(frame, params, seed=(0, index))
        for start, model in models.items():
            if start != index:
                model.apply(frame)
        if (index + 1) % hop == 0:
            np.rint(models[max(0, index - window + 1)].samples.mean(axis=1, dtype=np.float32)).astype(np.uint8)
            images += 1
        for start in [s for s in models if s + window - 1 <= index]:
            del models[start]
    return images


def geometry_errors(seconds: float) -> list[tuple[str, float, float, float]]:
    """(clip, MAE previous, MAE of the 160 px grid with the reference geometry, MAE current) of
    the network input against the reference demo."""
    import cv2
    import numpy as np

    from pipeline.core.decode import DecodeParams, iter_samples
    from pipeline.modalities.scenic import places_input

    def previous(image):  # short side to 256 (aspect kept), centre 224
        h, w = image.shape[:2]
        scale = 256 / min(h, w)
        size = (max(224, int(round(w * scale))), max(224, int(round(h * scale))))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
        top, left = (size[1] - 224) // 2, (size[0] - 224) // 2
        return resized[top : top + 224, left : left + 224]

    out = []
    for name in GEOMETRY_CLIPS:
        grid = DecodeParams(fps=1.0, end_s=seconds)
        native = [s.image for s in iter_samples(CLIPS / name, grid)]
        small = [s.image for s in iter_samples(CLIPS / name, DecodeParams(fps=1.0, short_side=160, end_s=seconds))]
        big = [s.image for s in iter_samples(CLIPS / name, DecodeParams(fps=1.0, short_side=256, end_s=seconds))]
        before, enlarged, after = [], [], []
        for n, s, b in zip(native, small, big, strict=True):
            reference = places_input(n, 256, 224).astype(np.float32)  # the demo on the native frame
            before.append(np.abs(previous(s).astype(np.float32) - reference).mean())
            enlarged.append(np.abs(places_input(s, 256, 224).astype(np.float32) - reference).mean())
            after.append(np.abs(places_input(b, 256, 224).astype(np.float32) - reference).mean())
        out.append((name, float(np.mean(before)), float(np.mean(enlarged)), float(np.mean(after))))
    return out


def against_reference(ref: str, batch: int, steps: int, rounds: int) -> None:
    """numpy's ViBe, this checkout's torch ViBe and ``ref``'s torch ViBe (its
    ``pipeline/modalities/vibe_torch.py``, read with ``git show`` and imported beside this one: it needs only
    :class:`pipeline.modalities.vibe.ViBeParams`) on the same real frames, ``batch`` clips a step on the CPU,
    interleaved round by round in one process, so that the ratios see the same machine load."""
    import importlib.util
    import statistics
    import subprocess
    import tempfile

    import numpy as np

    from pipeline.core.decode import DecodeParams, iter_samples
    from pipeline.modalities.scenic import ScenicConfig, background_size, resized
    from pipeline.modalities.vibe import ViBe, ViBeParams
    from pipeline.modalities.vibe_torch import ViBeBank

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{ref}:pipeline/modalities/vibe_torch.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(source)
    spec = importlib.util.spec_from_file_location("reference_vibe_torch", fh.name)
    reference = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = reference  # its dataclasses look their module up
    spec.loader.exec_module(reference)
    names = ("musepose_dance.mp4", "hybrik_taiji.mp4", "stgcn_ta_chi.mp4", "stgcn_clean_and_jerk.mp4")
    n = 1 + steps * rounds
    grid = DecodeParams(fps=25.0, max_side=640, end_s=n / 25.0)
    config = ScenicConfig()
    clips = []
    for name in names:
        frames = [s.image for s in iter_samples(CLIPS / name, grid)][:n]
        clips.append([resized(f, background_size(f, config)) for f in frames])
    rows = [clips[i % len(clips)] for i in range(batch)]
    masks = [np.zeros(r[0].shape[:2], dtype=bool) for r in rows]
    params = ViBeParams()
    this, ref_bank = ViBeBank(params, 0, "cpu"), reference.ViBeBank(params, 0, "cpu")
    slots = {id(b): [b.open() for _ in rows] for b in (this, ref_bank)}
    models = [ViBe(r[0], params, seed=0, exclude=m) for r, m in zip(rows, masks, strict=True)]
    for b in (this, ref_bank):
        b.step(slots[id(b)], [(r[0], m) for r, m in zip(rows, masks, strict=True)])
    runs = {
        "numpy": lambda i: [v.apply(r[i], m) for v, r, m in zip(models, rows, masks, strict=True)],
        "torch": lambda i: this.step(slots[id(this)], [(r[i], m) for r, m in zip(rows, masks, strict=True)]),
        f"torch@{ref}": lambda i: ref_bank.step(
            slots[id(ref_bank)], [(r[i], m) for r, m in zip(rows, masks, strict=True)]
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for round_ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for i in range(1 + round_ * steps, 1 + (round_ + 1) * steps):
                run(i)
            times[name].append((time.perf_counter() - start) / (steps * batch))
        print(f"round {round_}: " + ", ".join(f"{k} {1000 * v[-1]:.1f} ms/frame" for k, v in times.items()), flush=True)
    sizes = sorted({r[0].shape[:2] for r in rows})
    ratio = [t / r for t, r in zip(times["torch"], times[f"torch@{ref}"], strict=True)]
    to_numpy = [t / r for t, r in zip(times["torch"], times["numpy"], strict=True)]
    print(
        f"ViBe at batch {batch} ({len(names)} real clips, sizes {sizes}, no person mask), median over {rounds} rounds: "
        f"torch / torch@{ref} {statistics.median(ratio):.2f}x (rounds {', '.join(f'{r:.2f}' for r in ratio)}), "
        f"torch / numpy {statistics.median(to_numpy):.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default=str(CLIPS / "hybrik_taiji.mp4"))
    parser.add_argument("--face-clip", default=str(CLIPS / "musepose_dance.mp4"))
    parser.add_argument("--seconds", type=float, default=10.0, help="excerpt length (default %(default)s)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--out", default="out/bench_vibe", help="directory for the background PNGs")
    parser.add_argument("--vibe-only", action="store_true", help="stop after the ViBe figures")
    parser.add_argument(
        "--against", metavar="REF", default=None, help="only: ViBe against REF's torch ViBe, interleaved (e.g. 95d487e)"
    )
    parser.add_argument("--batch", type=int, default=16, help="--against: clips a step (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="--against: rounds (default %(default)s)")
    args = parser.parse_args()
    if args.against:
        against_reference(args.against, args.batch, 2, args.rounds)
        return

    import numpy as np
    import torch

    from pipeline.core.decode import DecodeParams, iter_samples
    from pipeline.modalities import facial, scenic
    from pipeline.modalities.vibe import ViBeParams, WindowBackgrounds, write_backgrounds

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, excerpt {args.seconds} s of {Path(args.clip).name}"
    )

    config = scenic.ScenicConfig(end_s=args.seconds)
    small = [s.image for s in iter_samples(args.clip, DecodeParams(fps=25, short_side=160, end_s=args.seconds))]
    start = time.perf_counter()
    previous_backgrounds(small, ViBeParams(reset_share=1.0))
    before = (time.perf_counter() - start) / len(small)
    h, w = small[0].shape[:2]
    print(f"before    {1000 * before:8.1f} ms/grid frame  (a ViBe model per window, up to 10 live, {w}x{h})")
    del small

    # as the extractor runs: the mask on the pose grid (640 px), ViBe on the frames resized to 256 px
    grid = [s.image for s in iter_samples(args.clip, scenic.decode_params(config))]
    size = scenic.background_size(grid[0], config)
    masks = scenic.PersonMasks(config)
    start = time.perf_counter()
    person = [masks.mask(f, size, i) for i, f in enumerate(grid)]
    mask_s = (time.perf_counter() - start) / len(grid)
    masks.close()
    frames = [scenic.resized(f, size) for f in grid]
    del grid
    windows = WindowBackgrounds(
        window=config.window, hop=config.hop, params=config.vibe_params(), inpaint_radius=config.inpaint_radius
    )
    found = []
    start = time.perf_counter()
    for i, (frame, mask) in enumerate(zip(frames, person, strict=True)):
        out = windows.push(frame, mask)
        if out is not None:
            found.append((i / config.fps, out))
    vibe_s = (time.perf_counter() - start) / len(frames)
    h, w = frames[0].shape[:2]
    filled = [o.filled_share for _, o in found]
    print(
        f"after     {1000 * (mask_s + vibe_s):8.1f} ms/grid frame  (person mask {1000 * mask_s:.1f}, one ViBe model and "
        f"window means {1000 * vibe_s:.1f}; {w}x{h}, {len(found)} backgrounds, inpainted share mean "
        f"{np.mean(filled):.3f} max {np.max(filled):.3f})  peak RSS {peak_rss_mib():.0f} MiB"
    )
    # the torch ViBe on the same frames and masks (pipeline.modalities.vibe_torch, through the batch server)
    from pipeline.modalities.vibe_torch import vibe_model

    windows = WindowBackgrounds(
        window=config.window,
        hop=config.hop,
        params=config.vibe_params(),
        inpaint_radius=config.inpaint_radius,
        model=vibe_model(config.vibe_params(), config.seed, device),
    )
    start = time.perf_counter()
    for frame, mask in zip(frames, person, strict=True):
        windows.push(frame, mask)
    torch_s = (time.perf_counter() - start) / len(frames)
    windows.close()
    print(
        f"ViBe      numpy {1000 * vibe_s:.1f} ms/grid frame, torch ({device}, one clip a step) "
        f"{1000 * torch_s:.1f} ms/grid frame: torch/numpy {torch_s / vibe_s:.2f}x (window means included in both)"
    )
    if args.vibe_only:
        return
    paths = write_backgrounds(
        [(t, o.image) for t, o in found], Path(args.out) / Path(args.clip).stem, Path(args.clip).stem
    )
    print(f"          backgrounds written to {paths[0].parent}/")
    del frames, person

    print("Places365 input vs the reference demo on the native frame (MAE, grey levels, 224x224 RGB):")
    for name, prev, now in geometry_errors(min(args.seconds, 10.0)):
        print(
            f"          {name:28s} previous (160 px, short side 256, crop) {prev:6.1f}   current (256 px, 256x256, crop) {now:5.1f}"
        )

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
