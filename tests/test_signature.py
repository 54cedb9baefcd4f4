"""Near-duplicate uploads: re-encodings of a real clip match it, different performances do not."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import pytest
from conftest import SHARED_CLIPS

from pipeline.ingest.probe import probe
from pipeline.ingest.signature import (
    MAX_SLICE_BITS,
    SIGNATURE_VERSION,
    SLICES,
    SPARE_SLICES,
    Signature,
    near_duplicate,
    slice_bits,
)
from pipeline.ingest.stage import IngestConfig, prepare_clips

FAST = {"libx264": {"preset": "ultrafast"}, "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"}}


def reencode(src, dst, *, codec: str, scale: float, bitrate: int, rate: float | None = None):
    """Decode ``src`` and encode it again with PyAV: another codec, bitrate, size or frame rate."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        fps = Fraction(rate).limit_denominator(1001) if rate else vin.average_rate
        stream = out.add_stream(codec, rate=fps)
        w = int(vin.codec_context.width * scale) // 2 * 2
        h = int(vin.codec_context.height * scale) // 2 * 2
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = w, h, "yuv420p", bitrate
        stream.options = FAST.get(codec, {})
        frames = [(f.time, f.to_ndarray(format="rgb24", width=w, height=h)) for f in inp.decode(vin)]
        end = frames[-1][0] + 1 / float(vin.average_rate)
        i = k = 0
        while k / float(fps) < end - 1e-9:  # the latest source frame at or before each output time
            while i + 1 < len(frames) and frames[i + 1][0] <= k / float(fps) + 1e-9:
                i += 1
            frame = av.VideoFrame.from_ndarray(frames[i][1], format="rgb24")
            frame.pts = k
            k += 1
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


def signature(path) -> Signature:
    return Signature.parse(probe(path).content_signature)


VARIANTS = [
    ("stgcn_ta_chi.mp4", dict(codec="mpeg4", scale=0.5, bitrate=150_000)),  # MPEG-4 Part 2, half size, low rate
    ("liveportrait_d18_face.mp4", dict(codec="libx264", scale=0.5, bitrate=200_000, rate=25)),  # 30 -> 25 fps
    ("tfjs_pose_1.mp4", dict(codec="libvpx-vp9", scale=0.5, bitrate=300_000)),  # VP9 in WebM
    ("stgcn_clean_and_jerk.mp4", dict(codec="libx264", scale=2.0, bitrate=600_000)),  # upscaled
]


def evidence(a: Signature, b: Signature) -> int:
    """What the rule bounds: the largest slice distance once the SPARE_SLICES worst are set aside."""
    return sorted(slice_bits(a, b))[-1 - SPARE_SLICES]


@pytest.mark.parametrize(("name", "variant"), VARIANTS, ids=[f"{n}-{v['codec']}" for n, v in VARIANTS])
def test_a_reencoding_matches_its_original(tmp_path, name, variant):
    copy = reencode(
        SHARED_CLIPS / name, tmp_path / f"copy{'.webm' if 'vpx' in variant['codec'] else '.mp4'}", **variant
    )
    original, again = signature(SHARED_CLIPS / name), signature(copy)
    assert probe(copy).width != probe(SHARED_CLIPS / name).width  # really another encoding
    assert near_duplicate(original, again) is not None, slice_bits(original, again)
    # bench/bench_duplicates.py: re-encodings stay at or under 4 bits, the threshold is 6
    assert evidence(original, again) <= MAX_SLICE_BITS - 2, slice_bits(original, again)


def test_different_real_clips_never_match():
    """Every pair of the 19 real clips, including two takes of one set-up (the two LivePortrait
    face clips) and two tai chi performances, is far above the threshold on the hashes alone."""
    signatures = {p.name: signature(p) for p in sorted(SHARED_CLIPS.glob("*.mp4"))}
    assert len(signatures) == 19
    assert all(len(s.hashes) == SLICES for s in signatures.values())
    closest = min((evidence(signatures[a], signatures[b]), a, b) for a, b in itertools.combinations(signatures, 2))
    assert closest[0] >= MAX_SLICE_BITS + 4, closest
    for a, b in itertools.combinations(signatures, 2):
        assert near_duplicate(signatures[a], signatures[b]) is None, (a, b)
    # the duration check aside: same length forced, the hashes alone still separate them
    d18, d19 = signatures["liveportrait_d18_face.mp4"], signatures["liveportrait_d19_face.mp4"]
    assert near_duplicate(d18, Signature(d18.duration_s, d19.hashes)) is None
    chi, taiji = signatures["stgcn_ta_chi.mp4"], signatures["hybrik_taiji.mp4"]
    assert near_duplicate(chi, Signature(chi.duration_s, taiji.hashes)) is None


# -- takes of one set-up against re-encodings of one take -----------------------------------------

WINDOW_S = 5.2  # a challenge sound's length: every take of it lasts this long


def _frames(src: Path, side: int = 240) -> tuple[list, float]:
    """(time, RGB array at most ``side`` px) of every frame of ``src``, and its frame rate."""
    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        scale = side / max(vin.codec_context.width, vin.codec_context.height)
        w, h = int(vin.codec_context.width * scale) // 2 * 2, int(vin.codec_context.height * scale) // 2 * 2
        return [(f.time, f.to_ndarray(format="rgb24", width=w, height=h)) for f in inp.decode(vin)], float(
            vin.average_rate
        )


def _write(dst: Path, frames: list, start: float, fps: float, codec="libx264", scale=1.0, bitrate=None) -> Path:
    """The frames shown from ``start`` for WINDOW_S seconds at ``fps``, encoded with ``codec``."""
    h, w = frames[0][1].shape[:2]
    w, h = int(w * scale) // 2 * 2, int(h * scale) // 2 * 2
    with av.open(str(dst), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if bitrate:
            stream.bit_rate = bitrate
        stream.options = {"libx264": {"preset": "ultrafast"}, "libx265": QUIET_X265}.get(codec, {})
        i = 0
        for k in range(round(WINDOW_S * fps)):
            while i + 1 < len(frames) and frames[i + 1][0] <= start + k / fps + 1e-9:
                i += 1
            frame = av.VideoFrame.from_ndarray(frames[i][1], format="rgb24").reformat(width=w, height=h)
            frame.pts = k
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


QUIET_X265 = {"preset": "ultrafast", "x265-params": "log-level=none"}
WINDOW_VARIANTS = {  # another codec, bitrate, resolution or frame rate of the same frames
    "mpeg4_half_low_rate": dict(codec="mpeg4", scale=0.5, bitrate=100_000),
    "hevc": dict(codec="libx265", bitrate=150_000),
    "h264_half_fps": dict(fps_factor=0.5),
    "h264_low_rate": dict(scale=0.5, bitrate=40_000),
}


@pytest.fixture(scope="module")
def taiji_windows(tmp_path_factory):
    """Signatures of the back-to-back 5.2 s windows of the real static-camera tai chi clip, and of
    four re-encodings of its first window."""
    out = tmp_path_factory.mktemp("takes")
    frames, fps = _frames(SHARED_CLIPS / "hybrik_taiji.mp4")
    start = frames[0][0]
    takes = [signature(_write(out / f"take{k}.mp4", frames, start + k * WINDOW_S, fps)) for k in range(3)]
    copies = {}
    for name, v in WINDOW_VARIANTS.items():
        v = dict(v)
        rate = fps * v.pop("fps_factor", 1.0)
        copies[name] = signature(_write(out / f"{name}.mp4", frames, start, rate, **v))
    return takes, copies


@pytest.mark.parametrize("variant", list(WINDOW_VARIANTS))
def test_a_reencoded_take_is_caught(taiji_windows, variant):
    takes, copies = taiji_windows
    bits = near_duplicate(takes[0], copies[variant])
    assert bits is not None, slice_bits(takes[0], copies[variant])
    # bench/bench_duplicates.py, every re-encoding of every window of the sample clips: at most
    # 4 bits in every slice but one; the threshold is 6
    assert evidence(takes[0], copies[variant]) <= MAX_SLICE_BITS - 2, slice_bits(takes[0], copies[variant])


def test_back_to_back_takes_of_one_camera_are_distinct(taiji_windows):
    """Same room, same length, different moments (the old rule, a mean of six frames under 10
    bits, dropped such windows): the slices at the same times differ by far more than a
    re-encoding's."""
    takes, _ = taiji_windows
    for a, b in itertools.combinations(takes, 2):
        assert near_duplicate(a, b) is None, slice_bits(a, b)
        # bench/bench_duplicates.py: windows of the moving sample clips are 8 bits or more apart (10 but
        # for two windows of the surveillance clip), re-encodings 4 or less; the threshold is 6
        assert evidence(a, b) >= MAX_SLICE_BITS + 4, slice_bits(a, b)


def _row(video_id: str, create: str) -> dict:
    return {
        "video_id": video_id,
        "challenge": "#c",
        "likes": 10,
        "comments": 1,
        "reposts": 1,
        "create_time": create,
        "crawl_time": "2021-01-10T00:00:00Z",
        "followers": 10,
    }


@pytest.mark.parametrize("reupload_first", [False, True])
def test_ingest_keeps_the_earliest_upload_of_a_reencoded_video(make_raw, tmp_path, reupload_first):
    copy = reencode(SHARED_CLIPS / "stgcn_ta_chi.mp4", tmp_path / "src.mp4", codec="mpeg4", scale=0.5, bitrate=150_000)
    early, late = ("2021-01-01T00:00:00Z", "2021-01-03T00:00:00Z")
    raw = make_raw(
        {
            "orig.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4",
            "reup.mp4": copy.read_bytes(),
            "other.mp4": SHARED_CLIPS / "stgcn_clean_and_jerk.mp4",  # same source, length and framing
            "taiji.mp4": SHARED_CLIPS / "hybrik_taiji.mp4",  # another tai chi performance
        },
        {
            "r.csv": [
                _row("orig", late if reupload_first else early),
                _row("reup", early if reupload_first else late),
                _row("other", "2021-01-02T00:00:00Z"),
                _row("taiji", "2021-01-02T00:00:00Z"),
            ]
        },
    )
    result = prepare_clips(raw, config=IngestConfig())
    kept = sorted(r["video_id"] for r in result.clips)
    dropped = [r for r in result.rejections if r["reason"] == "duplicate_content"]
    survivor, duplicate = ("reup", "orig") if reupload_first else ("orig", "reup")
    assert kept == sorted(["other", "taiji", survivor])
    assert [r["video_id"] for r in dropped] == [duplicate]
    assert f"re-encoding of video {survivor}" in dropped[0]["message"]
    assert all(r["content_signature"].startswith(f"{SIGNATURE_VERSION}:") for r in result.clips)
