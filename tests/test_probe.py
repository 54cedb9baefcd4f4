"""Probing real clips, broken files, and the enforced per-clip time budget."""

from __future__ import annotations

import os
import time

import pytest
from conftest import SHARED_CLIPS

from pipeline.core.errors import ClipError, Reason
from pipeline.ingest.probe import ProbeWorker, probe


def test_probe_real_clip_exact_figures():
    result = probe(SHARED_CLIPS / "stgcn_ta_chi.mp4")
    assert result.frame_count == 300
    assert (result.width, result.height, result.rotation) == (340, 256, 0)
    assert result.avg_fps == pytest.approx(30000 / 1001)
    assert result.container_duration_s == pytest.approx(10.01)
    # first frame to the end of the last one: 300 frames of 1001/30000 s each (the two frames
    # flushed out of the decoder at the end count too)
    assert result.duration_s == pytest.approx(300 * 1001 / 30000, abs=1e-6)
    assert (result.video_codec, result.has_audio, result.audio_codec) == ("h264", False, None)


def test_probe_portrait_clip_with_audio_and_vp9():
    dance = probe(SHARED_CLIPS / "musepose_dance.mp4")
    assert (dance.width, dance.height, dance.frame_count, dance.avg_fps) == (1080, 1920, 288, 24.0)
    assert (dance.has_audio, dance.audio_codec) == (True, "aac")
    vp9 = probe(SHARED_CLIPS / "sports2d_demo.mp4")
    assert (vp9.video_codec, vp9.frame_count, vp9.width, vp9.height) == ("vp9", 230, 1768, 994)


def _cut(tmp_path, name: str, fraction: float):
    data = (SHARED_CLIPS / name).read_bytes()
    target = tmp_path / f"cut_{name}"
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def test_clip_cut_mid_stream_is_truncated(tmp_path):
    # this clip has its index ('moov') first, so a cut copy still claims the full 5.04 s
    with pytest.raises(ClipError) as info:
        probe(_cut(tmp_path, "trackanything_test-sample2_cat.mp4", 0.6), clip_id="abc")
    assert info.value.reason is Reason.TRUNCATED and info.value.clip_id == "abc"
    assert "of 5.04 s claimed" in info.value.message
    # a cut near the end stays above 90 % of the claim and is accepted
    near_end = probe(_cut(tmp_path, "trackanything_test-sample2_cat.mp4", 0.995))
    assert near_end.duration_s >= 0.9 * near_end.container_duration_s


def test_clip_cut_before_its_trailing_index_is_unreadable(tmp_path):
    # 'moov' at the end: the cut copy has an MP4 header but no index at all
    with pytest.raises(ClipError) as info:
        probe(_cut(tmp_path, "stgcn_ta_chi.mp4", 0.5))
    assert info.value.reason is Reason.UNREADABLE


def test_zero_byte_and_text_files_are_not_videos(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    for path in (empty, text):
        with pytest.raises(ClipError) as info:
            probe(path)
        assert info.value.reason is Reason.NOT_A_VIDEO


def test_audio_only_file_is_not_a_video(tmp_path):
    import av
    import numpy as np

    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 8) * 1000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(ClipError) as info:
        probe(path)
    assert info.value.reason is Reason.NOT_A_VIDEO and "no video stream" in info.value.message


def test_worker_kills_a_probe_that_hangs_and_goes_on(tmp_path):
    # opening a FIFO with no writer blocks forever: a real pathological input
    fifo = tmp_path / "hangs.mp4"
    os.mkfifo(fifo)
    with ProbeWorker(budget_s=2.0) as worker:
        start = time.monotonic()
        with pytest.raises(ClipError) as info:
            worker.probe(fifo, clip_id="c0")
        elapsed = time.monotonic() - start
        assert info.value.reason is Reason.DECODE_TIMEOUT and info.value.clip_id == "c0"
        assert 2.0 <= elapsed < 15.0
        # a fresh worker serves the next clip (its own budget generous: the machine may be loaded)
        assert worker.probe(SHARED_CLIPS / "tfjs_pose_1.mp4", budget_s=120.0).frame_count == 120
        with pytest.raises(ClipError) as info:
            worker.probe(tmp_path / "missing.mp4")
        assert info.value.reason is Reason.NOT_A_VIDEO


# -- exact durations ----------------------------------------------------------------------------


def _encode(path, frames: int, *, rate=25, bframes: int = 3, size=(160, 120), codec="libx264"):
    """A clip of exactly ``frames`` frames at ``rate`` (libx264 with B-frames), a bar moving on it."""
    from fractions import Fraction

    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(rate))
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        if codec == "libx264":
            stream.options = {"bf": str(bframes), "g": "48"}
        for i in range(frames):
            image = np.full((size[1], size[0], 3), 30, np.uint8)
            image[:, (i * 5) % size[0] : (i * 5) % size[0] + 12] = 220
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize(
    ("frames", "rate", "bframes", "expected"),
    [
        (125, 25, 3, 5.0),  # exactly 5 s: must pass the 5 s minimum
        (5, 25, 3, 0.2),  # five frames, all B-frame delayed: whole, not truncated
        (150, "30000/1001", 3, 150 * 1001 / 30000),  # NTSC rate
        (125, 25, 0, 5.0),  # no B-frames
    ],
)
def test_duration_is_exact_with_b_frames(tmp_path, frames, rate, bframes, expected):
    from fractions import Fraction

    from pipeline.screening.stage import ScreenConfig, duration_rule

    path = _encode(tmp_path / "clip.mp4", frames, rate=Fraction(rate), bframes=bframes)
    result = probe(path)
    assert result.frame_count == frames
    assert result.duration_s == pytest.approx(expected, abs=1e-6)
    assert duration_rule({"duration_s": result.duration_s}, ScreenConfig()).passed == (expected >= 5.0)


def test_real_clips_measure_their_decoded_frames():
    """Constant-rate real clips: the probe's duration equals the frames a full decode yields
    times the frame duration (counted independently of any timestamp)."""
    import av

    for name in (
        "stgcn_ta_chi.mp4",
        "tfjs_pose_1.mp4",
        "liveportrait_d19_face.mp4",
        "controlvideo_moonwalk.mp4",
        "mmhuman3d_single_person_demo.mp4",
        "trackanything_test-sample2_cat.mp4",
    ):
        with av.open(str(SHARED_CLIPS / name)) as container:
            stream = container.streams.video[0]
            decoded = sum(1 for _ in container.decode(stream))
            rate = float(stream.average_rate)
        result = probe(SHARED_CLIPS / name)
        assert result.duration_s == pytest.approx(decoded / rate, abs=1e-3), name


def test_probe_opens_the_clip_once(monkeypatch):
    """Duration, checks and content signature come from one open and one demux pass."""
    import av

    opened = []
    real_open = av.open

    def counting_open(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    result = probe(SHARED_CLIPS / "tfjs_pose_1.mp4")
    assert len(opened) == 1 and result.content_signature
