"""The streaming decoder of pipeline.core.decode: grid rule, repeats, determinism, rotation, memory."""

from __future__ import annotations

import hashlib
import struct
import threading
import time
import tracemalloc
import types
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.core.decode import DecodeParams, decode_pass, grid_times, iter_samples, stream_info
from pipeline.core.errors import ClipError, Reason
from tests.support.video import write_clip

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"


def test_grid_rule_on_a_30fps_clip():
    """tfjs_pose_1: 120 frames at 30 fps -> 100 samples at 25 fps, each the latest frame at or before t_k."""
    samples = list(iter_samples(CLIPS / "tfjs_pose_1.mp4", DecodeParams(fps=25, max_side=96)))
    assert len(samples) == 100
    times = np.array([s.t for s in samples])
    np.testing.assert_allclose(times, grid_times(4.0, 25))
    np.testing.assert_allclose(times, np.arange(100) / 25)
    for s in samples:
        # frame k sits at k / 30; the chosen one is floor(t * 30)
        assert s.source_t == pytest.approx(np.floor(s.t * 30 + 1e-6) / 30, abs=1e-6)
    # a faster source drops frames: 100 distinct frames of the 120, none repeated
    assert len({round(s.source_t, 6) for s in samples}) == 100


def test_slow_source_repeats_its_latest_frame():
    """tfjs_pose_squats is 5 fps: at 25 fps every source frame appears five times."""
    assert stream_info(CLIPS / "tfjs_pose_squats.mp4").fps == pytest.approx(5.0)
    samples = list(iter_samples(CLIPS / "tfjs_pose_squats.mp4", DecodeParams(fps=25, max_side=64)))
    assert len(samples) == 65 * 5
    by_source: dict[float, list] = {}
    for s in samples:
        by_source.setdefault(round(s.source_t, 6), []).append(s)
    assert len(by_source) == 65
    assert all(len(group) == 5 for group in by_source.values())
    for group in list(by_source.values())[:5]:
        for s in group[1:]:
            np.testing.assert_array_equal(s.image, group[0].image)


def test_same_frames_on_every_run():
    def digest() -> str:
        h = hashlib.sha256()
        for s in iter_samples(CLIPS / "stgcn_ta_chi.mp4", DecodeParams(fps=7, max_side=128)):
            h.update(f"{s.index}:{s.t:.6f}:{s.source_t:.6f}".encode())
            h.update(s.image.tobytes())
        return h.hexdigest()

    assert digest() == digest()


def test_resize_and_window():
    samples = list(
        iter_samples(CLIPS / "musepose_dance.mp4", DecodeParams(fps=2, short_side=90, start_s=1.0, end_s=3.0))
    )
    assert [s.t for s in samples] == [1.0, 1.5, 2.0, 2.5]
    assert samples[0].image.shape == (160, 90, 3)  # portrait 1080x1920 -> 90x160
    assert samples[0].image.dtype == np.uint8


def _set_display_matrix(path: Path, a: int, b: int, c: int, d: int) -> None:
    """Write a rotation into the video track's ``tkhd`` matrix, as phones do for portrait video."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    version = data[at + 4]
    offset = at + 4 + (84 - 36 - 8 if version == 0 else 96 - 36 - 8)  # matrix precedes width, height
    matrix = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    data[offset : offset + 36] = matrix
    path.write_bytes(bytes(data))


def test_rotation_metadata_is_honoured(tmp_path):
    """A landscape 64x32 coding with a 90 degree display matrix decodes as an upright 32x64 portrait."""
    image = np.zeros((32, 64, 3), dtype=np.uint8)
    image[:, :16] = 255  # white band on the left of the coded picture
    path = tmp_path / "rotated.mp4"
    write_clip(path, [image] * 5)
    one = 1 << 16
    _set_display_matrix(path, 0, one, -one, 0)  # ISO/IEC 14496-12: 90 degrees clockwise
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert frame.rotation != 0, "the patched display matrix was not picked up"
    sample = next(iter_samples(path, DecodeParams(fps=10)))
    assert sample.image.shape == (64, 32, 3)
    # turned clockwise: the coded left band is now the top band
    assert sample.image[:12].mean() > 200 and sample.image[20:].mean() < 40


def test_unrotated_clip_is_left_alone(tmp_path):
    image = np.zeros((32, 64, 3), dtype=np.uint8)
    image[:, :16] = 255
    path = tmp_path / "plain.mp4"
    write_clip(path, [image] * 3)
    sample = next(iter_samples(path, DecodeParams(fps=10)))
    assert sample.image.shape == (32, 64, 3)
    assert sample.image[:, :12].mean() > 200


def test_memory_does_not_grow_with_clip_length():
    """139 s of video streams through with a peak far below what holding its samples would take."""
    params = DecodeParams(fps=5, max_side=320)
    tracemalloc.start()
    try:
        n = 0
        total = 0
        for s in iter_samples(CLIPS / "intel_one-by-one-person-detection.mp4", params):
            n += 1
            total += s.image.nbytes
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == pytest.approx(139.4 * 5, abs=2)
    assert total > 100e6  # ~120 MB of samples went through
    assert peak < 5e6, f"peak {peak / 1e6:.1f} MB"


def test_not_a_video_is_a_clip_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("no video here")
    with pytest.raises(ClipError) as err:
        list(iter_samples(bad, clip_id="abc"))
    assert err.value.reason == Reason.NOT_A_VIDEO and err.value.clip_id == "abc"


def test_one_pass_serves_every_grid_as_if_it_were_alone():
    """Each grid of a shared pass gets exactly the samples (times and pixels) it gets alone, so
    which modalities share a pass never changes a feature."""
    path = CLIPS / "tfjs_pose_1.mp4"
    grids = [
        DecodeParams(fps=25, max_side=640),  # pose
        DecodeParams(fps=25, short_side=256),  # holistic
        DecodeParams(fps=3, max_side=1280),  # facial
        DecodeParams(fps=25, short_side=160, end_s=2.0),  # scenic, a shorter window
    ]
    got: dict[int, list] = {i: [] for i in range(len(grids))}
    with decode_pass(path, grids) as one:
        for grid, sample in one:
            got[grid].append(sample)
        info = one.info
    assert (info.width, info.height) == (stream_info(path).width, stream_info(path).height)
    for i, params in enumerate(grids):
        alone = list(iter_samples(path, params))
        assert len(alone) == len(got[i]) > 0
        for a, b in zip(alone, got[i], strict=True):
            assert (a.index, a.t, a.source_t) == (b.index, b.t, b.source_t)
            np.testing.assert_array_equal(a.image, b.image)
    assert len(got[3]) == 50 and len(got[2]) == 12


def test_budget_counts_decoder_time_not_the_consumer():
    """A consumer far slower than the budget (a model) does not time the clip out."""
    path = CLIPS / "stgcn_ta_chi.mp4"
    n = 0
    started = time.monotonic()
    with decode_pass(path, [DecodeParams(fps=5, max_side=64)], "slow", budget_s=0.5) as one:
        for _ in one:
            time.sleep(0.05)
            n += 1
        spent = one.decoder_seconds()
    assert n == 51  # 10.04 s at 5 fps
    assert time.monotonic() - started > 2.0 > 0.5  # the consumer's time ran far past the budget
    assert spent < 0.5


class _BlockingContainer:
    """A container whose decoder never returns a frame (a hung demuxer or codec)."""

    def __init__(self, release: threading.Event):
        self.release = release
        self.streams = types.SimpleNamespace(video=[types.SimpleNamespace(thread_type=None, average_rate=25)])

    def decode(self, stream):
        self.release.wait(60)
        return iter(())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_decoder_that_blocks_is_given_up_and_the_clip_rejected(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr("av.open", lambda *a, **k: _BlockingContainer(release))
    started = time.monotonic()
    try:
        with pytest.raises(ClipError) as err:
            list(iter_samples(CLIPS / "stgcn_ta_chi.mp4", DecodeParams(fps=5), "hung", budget_s=0.3))
    finally:
        release.set()
    assert err.value.reason == Reason.DECODE_TIMEOUT and err.value.clip_id == "hung"
    assert time.monotonic() - started < 30  # given up, not waited out
