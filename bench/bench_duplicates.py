"""The near-duplicate rule on real clips: re-encodings against distinct takes of one camera set-up.

Every real sample clip long enough for two windows is cut into back-to-back windows of
``--window`` seconds (5.2 s by default: a challenge sound fixes the length, and creators film
several takes in one room, so the windows of one static-camera recording stand for takes of
one set-up: same duration, same background, different moments, no shared frame). Each window is
written with PyAV (H.264, at most 480 px) and then re-encoded four ways:

- ``mpeg4_half``: MPEG-4 Part 2 at half size and 120 kbit/s;
- ``hevc``: H.265 (libx265) at the same size, 300 kbit/s;
- ``half_fps``: H.264 at half the frame rate;
- ``h264_low``: H.264 at half size and 60 kbit/s.

Everything is probed by the pipeline's own :func:`pipeline.ingest.probe.probe` and compared with
:func:`pipeline.ingest.signature.near_duplicate`. It prints, per pair, the slice distances (bits of 64,
sorted) and the decision, then the margins of the rule: the largest "all slices but
``SPARE_SLICES``" distance among re-encodings (must stay at or under ``MAX_SLICE_BITS``) and the
smallest among distinct takes (must stay above it).

Pairs with a window in which nothing moves (every slice within ``STILL_BITS`` of its first: an
empty room, a person standing still) are counted separately ("still"): two such windows of one
camera can show the same picture, which no signature of the pictures can tell apart.

    PYTHONPATH=. python bench/bench_duplicates.py [--window 5.2] [--clips DIR] [--keep DIR [--reuse]]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2

from pipeline.ingest.probe import probe
from pipeline.ingest.signature import MAX_SLICE_BITS, SPARE_SLICES, Signature, near_duplicate, slice_bits

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
MAX_SIDE = 480
QUIET_X265 = {"preset": "ultrafast", "x265-params": "log-level=none"}


def decoded(path: Path) -> tuple[list[tuple[float, object]], float, int, int]:
    """(time, RGB array) of every frame at most MAX_SIDE px, the frame rate, width, height."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        w0, h0 = stream.codec_context.width, stream.codec_context.height
        scale = min(1.0, MAX_SIDE / max(w0, h0))
        w, h = int(w0 * scale) // 2 * 2, int(h0 * scale) // 2 * 2
        frames = [(f.time, f.to_ndarray(format="rgb24", width=w, height=h)) for f in container.decode(stream)]
    return frames, fps, w, h


def shown(frames, start: float, end: float, fps: float) -> list:
    """The frame shown at each tick of ``fps`` from ``start`` to ``end`` (the latest at or before it)."""
    out, i, k = [], 0, 0
    while start + k / fps < end - 1e-9:
        t = start + k / fps
        while i + 1 < len(frames) and frames[i + 1][0] <= t + 1e-9:
            i += 1
        out.append(frames[i][1])
        k += 1
    return out


REUSE = False  # --reuse: a window file already in --keep is not written again


def encode(dst: Path, frames: list, codec: str, fps: float, *, bitrate: int | None = None, options=None) -> Path:
    if REUSE and dst.exists():
        return dst
    h, w = frames[0].shape[:2]
    with av.open(str(dst), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if bitrate:
            stream.bit_rate = bitrate
        stream.options = options or {}
        for k, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


def half(frames: list) -> list:
    h, w = frames[0].shape[:2]
    return [cv2.resize(f, (w // 4 * 2, h // 4 * 2), interpolation=cv2.INTER_AREA) for f in frames]


def windows(path: Path, window: float, out: Path) -> list[tuple[Path, dict[str, Path]]]:
    """(original, {variant: re-encoding}) of each back-to-back window of ``path``."""
    frames, fps, _, _ = decoded(path)
    start, end = frames[0][0], frames[-1][0] + 1 / fps
    made = []
    for k in range(int((end - start) // window)):
        a = start + k * window
        picture = shown(frames, a, a + window, fps)
        base = out / f"{path.stem}.w{k}"
        original = encode(Path(f"{base}.orig.mp4"), picture, "libx264", fps, options={"crf": "20"})
        variants = {
            "mpeg4_half": encode(Path(f"{base}.mpeg4.mp4"), half(picture), "mpeg4", fps, bitrate=120_000),
            "hevc": encode(Path(f"{base}.hevc.mp4"), picture, "libx265", fps, bitrate=300_000, options=QUIET_X265),
            "half_fps": encode(Path(f"{base}.half.mp4"), shown(frames, a, a + window, fps / 2), "libx264", fps / 2),
            "h264_low": encode(Path(f"{base}.low.mp4"), half(picture), "libx264", fps, bitrate=60_000),
        }
        made.append((original, variants))
    return made


def evidence(a: Signature, b: Signature) -> int:
    """The distance the rule bounds: the largest slice distance once SPARE_SLICES worst are set aside."""
    return sorted(slice_bits(a, b))[-1 - SPARE_SLICES]


STILL_BITS = 2  # a window whose slices all agree within this many bits: nothing moves in it


def still(s: Signature) -> bool:
    return all((h ^ s.hashes[0]).bit_count() <= STILL_BITS for h in s.hashes)


def report(pairs: dict[str, list], out=sys.stdout) -> None:
    def line(kind, name, a, b):
        bits = sorted(slice_bits(a, b))
        decision = "DUPLICATE" if near_duplicate(a, b) is not None else "distinct"
        print(f"{kind:10s} {name:52s} evidence {evidence(a, b):2d}  slices {bits}  -> {decision}", file=out)

    for kind in ("reencoding", "take", "still"):
        for name, a, b in pairs[kind]:
            line(kind, name, a, b)
    re_worst = max((evidence(a, b), n) for n, a, b in pairs["reencoding"])
    take_best = min((evidence(a, b), n) for n, a, b in pairs["take"])
    missed = sum(near_duplicate(a, b) is None for _, a, b in pairs["reencoding"])
    dropped = sum(near_duplicate(a, b) is not None for _, a, b in pairs["take"])
    caught_still = sum(near_duplicate(a, b) is not None for _, a, b in pairs["still"])
    print(f"\nrule: every slice but {SPARE_SLICES} within {MAX_SLICE_BITS} bits of 64 (and durations agree)", file=out)
    print(
        f"re-encodings: {len(pairs['reencoding'])} pairs, {missed} missed; largest evidence {re_worst[0]} bits "
        f"({re_worst[1]}): margin {MAX_SLICE_BITS - re_worst[0]} bits under the threshold",
        file=out,
    )
    print(
        f"distinct takes: {len(pairs['take'])} pairs, {dropped} dropped; smallest evidence {take_best[0]} bits "
        f"({take_best[1]}): margin {take_best[0] - MAX_SLICE_BITS} bits over the threshold",
        file=out,
    )
    print(f"still pairs (nothing moves in a window): {len(pairs['still'])}, {caught_still} judged duplicates", file=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=float, default=5.2, help="window length, seconds (default 5.2)")
    parser.add_argument("--clips", type=Path, default=CLIPS, help="directory of real clips")
    parser.add_argument("--keep", type=Path, help="write the windows here instead of a temporary directory")
    parser.add_argument("--reuse", action="store_true", help="with --keep: reuse the window files already there")
    args = parser.parse_args(argv)
    global REUSE
    REUSE = args.reuse and args.keep is not None
    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        pairs: dict[str, list] = {"reencoding": [], "take": [], "still": []}
        for clip in sorted(args.clips.glob("*.mp4")):
            made = windows(clip, args.window, out)
            if len(made) < 2:
                continue
            sig = {p: Signature.parse(probe(p).content_signature) for o, v in made for p in (o, *v.values())}
            for original, variants in made:
                for name, copy in variants.items():
                    pairs["reencoding"].append((f"{original.stem} {name}", sig[original], sig[copy]))
            for (a, _), (b, _) in itertools.combinations(made, 2):
                kind = "still" if still(sig[a]) or still(sig[b]) else "take"
                pairs[kind].append((f"{a.stem} / {b.stem.split('.')[-2]}", sig[a], sig[b]))
            print(f"# {clip.name}: {len(made)} windows of {args.window} s", file=sys.stderr, flush=True)
        report(pairs)
    print(f"CPU {time.process_time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
