"""Camera motion and shot cuts on sequences built from real frames (pipeline.motion, pipeline.visual)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.decode import DecodeParams, iter_samples
from pipeline.errors import Reason
from pipeline.motion import hist_distance, pair_motion, prepare
from pipeline.visual import VisualConfig, analyse_frames, rule_camera_motion

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"
CONFIG = VisualConfig()


def frames(name: str, seconds: float, fps: float = 3.0) -> list[tuple[float, np.ndarray]]:
    """The first ``seconds`` of a clip on the screening grid (``fps``, frames shrunk to 640 px)."""
    params = DecodeParams(fps=fps, max_side=CONFIG.max_side, end_s=seconds)
    return [(s.t, s.image) for s in iter_samples(CLIPS / f"{name}.mp4", params)]


def test_known_shift_gives_known_speed():
    """A background shifted by 8 px in 0.5 s: speed = 8 / diagonal / 0.5 (shrunk scale 1)."""
    _, image = frames("hybrik_taiji", 0.4)[0]
    image = cv2.resize(image, (160, 90), interpolation=cv2.INTER_AREA)
    shifted = np.roll(image, 8, axis=1)
    motion = pair_motion(prepare(image[:, 8:-8]), prepare(shifted[:, 8:-8]), 0.5)
    diag = np.hypot(144, 90)
    assert motion.speed == pytest.approx(8 / diag / 0.5, rel=0.1)
    assert motion.points >= 12


def test_people_boxes_are_not_read_as_camera_motion():
    """Only the region outside the given boxes is tracked: moving a pasted patch inside a box is ignored."""
    _, image = frames("hybrik_taiji", 0.4)[0]
    a = image.copy()
    b = image.copy()
    b[100:300, 200:400] = np.roll(image[100:300, 200:400], 30, axis=1)
    motion = pair_motion(prepare(a), prepare(b), 0.5, boxes=[(190, 90, 410, 310)])
    assert motion.speed is not None and motion.speed < 0.005


def test_histogram_distance_is_small_within_a_shot_and_large_across():
    shot = frames("musepose_dance", 2.0)
    other = frames("hybrik_taiji", 1.0)
    within = hist_distance(prepare(shot[0][1]), prepare(shot[-1][1]))
    across = hist_distance(prepare(shot[-1][1]), prepare(other[0][1]))
    assert within < 0.25 < CONFIG.cut_distance < across


@pytest.fixture(scope="module")
def pan_analysis():
    """A camera pan: a window of half the width slides right across 5 s of hybrik_taiji."""
    real = frames("hybrik_taiji", 5.0)
    height, width = real[0][1].shape[:2]
    window = width // 2
    panned = []
    for i, (t, image) in enumerate(real):
        x = round(i * (width - window) / (len(real) - 1))
        panned.append((t, np.ascontiguousarray(image[:, x : x + window])))
    return analyse_frames(panned, CONFIG)


def test_camera_pan_is_rejected(pan_analysis):
    result = rule_camera_motion(pan_analysis, CONFIG)
    assert not result.passed
    assert Reason.CAMERA_MOTION in result.reasons
    assert Reason.SHOT_CUT not in result.reasons
    # window moves 320 px of a 320x360 crop in 5 s: about 0.13 diagonal/s
    assert result.details["median_speed"] > 2 * CONFIG.max_camera_speed


def test_same_frames_without_the_pan_pass():
    real = frames("hybrik_taiji", 5.0)
    width = real[0][1].shape[1]
    fixed = [(t, np.ascontiguousarray(image[:, : width // 2])) for t, image in real]
    result = rule_camera_motion(analyse_frames(fixed, CONFIG), CONFIG)
    assert result.passed, result.details


@pytest.fixture(scope="module")
def cut_analysis():
    """A hard cut: 2 s of stgcn_ta_chi, then 2 s of stgcn_clean_and_jerk (both 340x256)."""
    first = frames("stgcn_ta_chi", 2.0)
    second = frames("stgcn_clean_and_jerk", 2.0)
    joined = first + [(2.0 + t, image) for t, image in second]
    return analyse_frames(joined, CONFIG)


def test_hard_cut_is_rejected(cut_analysis):
    result = rule_camera_motion(cut_analysis, CONFIG)
    assert Reason.SHOT_CUT in result.reasons
    assert result.details["cuts_at_s"] == [pytest.approx(2.0)]


def test_hard_cut_between_different_sizes_is_rejected():
    """Clips of different frame sizes joined (resized to one size, as an editor would)."""
    first = frames("musepose_dance", 1.5)
    height, width = first[0][1].shape[:2]
    second = [(1.5 + t, cv2.resize(image, (width, height))) for t, image in frames("hybrik_taiji", 1.5)]
    result = rule_camera_motion(analyse_frames(first + second, CONFIG), CONFIG)
    assert Reason.SHOT_CUT in result.reasons


def test_real_moving_camera_is_rejected():
    """tuneavideo_man-surfing follows the surfer through the wave: a real camera move."""
    real = frames("tuneavideo_man-surfing", 3.0)
    result = rule_camera_motion(analyse_frames(real, CONFIG), CONFIG)
    assert result.reasons == [Reason.CAMERA_MOTION], result.details
