"""Camera motion and shot cuts on sequences built from real frames (pipeline.screening.motion, pipeline.screening.visual)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.decode import DecodeParams, iter_samples
from pipeline.core.errors import Reason
from pipeline.screening.motion import PairMotion, hist_distance, pair_motion, prepare
from pipeline.screening.visual import VisualConfig, analyse_frames, rule_camera_motion, sample_frames
from tests.support.video import write_clip

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


# -- slow moves that add up over the clip ---------------------------------------------------------


@pytest.fixture(scope="module")
def static_frames():
    """hybrik_taiji (static camera) as screening samples it: 24 frames over 17 s."""
    from pipeline.screening.visual import sample_frames

    return list(sample_frames(CLIPS / "hybrik_taiji.mp4", "hybrik_taiji", CONFIG))


def _warp(frames, transform):
    """Apply ``transform(image, progress)`` with progress 0 -> 1 from the first frame to the last."""
    n = len(frames) - 1
    return [(t, np.ascontiguousarray(transform(image, i / n))) for i, (t, image) in enumerate(frames)]


def _zoom(total: float):
    def apply(image, progress):
        h, w = image.shape[:2]
        scale = total**progress  # a steady zoom: the same factor between every pair
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, scale)
        return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)

    return apply


def _pan(share: float):
    def apply(image, progress):
        h, w = image.shape[:2]
        window = round(w * (1 - share))
        x = round(progress * (w - window))
        return image[:, x : x + window]

    return apply


def _roll(degrees: float):
    def apply(image, progress):
        h, w = image.shape[:2]
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees * progress, 1.0)
        return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)

    return apply


SLOW_MOVES = {
    "zoom in 40 %": (_zoom(1.4), "composed_scale_change"),
    "zoom out 30 %": (_zoom(1 / 1.3), "composed_scale_change"),
    "pan 40 % of the width": (_pan(0.4), "composed_shift"),
    "roll 15 degrees": (_roll(15.0), "composed_rotation_deg"),
}
LIMITS = {
    "composed_scale_change": CONFIG.max_composed_scale,
    "composed_shift": CONFIG.max_composed_shift,
    "composed_rotation_deg": CONFIG.max_composed_rotation_deg,
}


@pytest.mark.parametrize("move", list(SLOW_MOVES))
def test_slow_steady_camera_move_is_rejected(static_frames, move):
    transform, measure = SLOW_MOVES[move]
    result = rule_camera_motion(analyse_frames(_warp(static_frames, transform), CONFIG), CONFIG)
    details = result.details
    # slow between samples: the per-pair rule alone would keep the clip ...
    assert details["moving_share"] <= CONFIG.max_moving_share, details
    # ... but composed over the clip it is a camera move
    assert result.reasons == [Reason.CAMERA_MOTION], details
    assert details[measure] > LIMITS[measure], details


def test_small_steady_zoom_within_the_limit_passes(static_frames):
    """A 10 % zoom over 17 s stays under the 20 % limit and is measured as about 10 %."""
    result = rule_camera_motion(analyse_frames(_warp(static_frames, _zoom(1.1)), CONFIG), CONFIG)
    assert result.passed, result.details
    assert result.details["composed_scale_change"] == pytest.approx(0.1, abs=0.02)


# Measured on the 15 real static-camera clips (composed over each clip, default sampling; all
# the sample clips but the moving cameras of tuneavideo_man-surfing, tokenflow_woman-running,
# trackanything_test-sample2_cat and mmhuman3d_single_person_demo): at most 0.018 scale change
# (liveportrait_d18_face), 1.06 degrees (same), and a centre shift of 0.089 of the width
# (controlvideo_moonwalk: a dark stage with few corners; next, 0.028 of the height of
# hybrik_taiji). The four portrait ones (musepose_dance, tfjs_pose_squats,
# mmhuman3d_multi_person_demo, pose2sim_singleperson_cam01) stay under 0.007. Limits: 0.2,
# 8 degrees, 0.2 of the width or height, so the largest static value is 0.45 of its limit (it
# was 0.42 of the limit under the previous pan measure, 0.063 of the diagonal against 0.15).
# The clips checked here include those maxima and a portrait clip of the pan test's length.
STATIC_CAMERA = [
    "hybrik_taiji",
    "musepose_dance",
    "stgcn_ta_chi",
    "stgcn_clean_and_jerk",
    "controlvideo_moonwalk",
    "liveportrait_d18_face",
    "sports2d_demo",
    "intel_bottle-detection",
    "tfjs_pose_squats",
]


@pytest.mark.parametrize("name", STATIC_CAMERA)
def test_real_static_cameras_stay_well_inside_the_composed_limits(name):
    analysis = analyse_frames(sample_frames(CLIPS / f"{name}.mp4", name, CONFIG), CONFIG)
    result = rule_camera_motion(analysis, CONFIG)
    assert Reason.CAMERA_MOTION not in result.reasons, result.details
    for measure, limit in LIMITS.items():
        assert result.details[measure] <= 0.5 * limit, (measure, result.details[measure])


# -- a slow pan in a portrait frame ---------------------------------------------------------------

PORTRAIT_PAN = 0.25  # of the window's width, over the clip's 13 s
PAN_FPS, PAN_FRAMES = 5, 65  # 65 frames at 5 fps: the window's offset is linear in time over 12.8 s


def _diagonal_share(pairs: list[PairMotion]) -> float:
    """The composed pan as the previous rule measured it: the frame centre's furthest shift from
    the first sampled frame as a share of the frame diagonal (it rejected above 0.15)."""
    total, size, worst = np.eye(3), None, 0.0
    for pair in pairs:
        if pair.matrix is None:
            continue
        if size is not None and pair.size != size:
            total = np.eye(3)
        size = pair.size
        total = np.vstack([np.asarray(pair.matrix), [0.0, 0.0, 1.0]]) @ total
        centre = np.array([size[0] / 2, size[1] / 2, 1.0])
        worst = max(worst, float(np.linalg.norm((total @ centre)[:2] - centre[:2]) / np.hypot(*size)))
    return worst


def _portrait_window(images: list[np.ndarray], path: Path) -> Path:
    """A TikTok-shaped clip: a 9:16 window (404 x 720) of 1280 x 720 frames sliding right by
    ``PORTRAIT_PAN`` of its width, one step a frame, encoded with PyAV at ``PAN_FPS``."""
    height = images[0].shape[0]
    window = round(height * 9 / 16) // 2 * 2  # even, for yuv420p
    travel = PORTRAIT_PAN * window
    frames = []
    for i, image in enumerate(images):
        x = round(travel * i / (len(images) - 1))
        frames.append(np.ascontiguousarray(image[:, x : x + window]))
    write_clip(path, frames, fps=PAN_FPS)
    return path


@pytest.fixture(scope="module")
def portrait_pan(tmp_path_factory):
    """The camera pans across a still scene: one real frame of hybrik_taiji, dancer included, seen
    through the sliding window. Everything in view moves together, so the pan the clip holds is
    known exactly, whatever the people counter finds; screened as any clip is (24 samples)."""
    still = next(iter_samples(CLIPS / "hybrik_taiji.mp4", DecodeParams(fps=1.0, start_s=6.0, end_s=7.0))).image
    path = _portrait_window([still] * PAN_FRAMES, tmp_path_factory.mktemp("portrait") / "still_pan.mp4")
    return analyse_frames(sample_frames(path, "still_pan", CONFIG), CONFIG)


def test_slow_pan_in_a_portrait_frame_is_measured_per_axis_and_rejected(portrait_pan):
    """In a 9:16 frame the diagonal is twice the width, so a pan that leaves three quarters of
    the first view measured 0.12 of the diagonal and was kept (limit 0.15); per axis it is a
    quarter of the width, above the limit of a fifth."""
    assert portrait_pan.sizes[0] == (360, 640)  # screened as a portrait clip, longer side 640
    result = rule_camera_motion(portrait_pan, CONFIG)
    details = result.details
    assert details["measured_pairs"] == details["pairs"] == 23, details
    assert details["moving_share"] <= CONFIG.max_moving_share, details  # slow between samples
    # the pan up to the last sample: the window's offset is linear in time over (65 - 1) / 5 s;
    # the decoder's choice of frame for a sample time moves this by at most one step (0.004)
    expected = PORTRAIT_PAN * portrait_pan.times[-1] / ((PAN_FRAMES - 1) / PAN_FPS)
    assert details["composed_shift_x"] == pytest.approx(expected, abs=0.01), details
    assert details["composed_shift_y"] < 0.01, details
    assert details["composed_scale_change"] < 0.01 and details["composed_rotation_deg"] < 0.5, details
    assert _diagonal_share(portrait_pan.pairs) <= 0.13  # the previous measure kept it
    assert details["composed_shift"] == details["composed_shift_x"] > CONFIG.max_composed_shift
    assert result.reasons == [Reason.CAMERA_MOTION], details


def test_slow_pan_over_a_dancing_scene_is_rejected(tmp_path):
    """The same pan over the moving video: the dancer's own motion is kept out of the estimate
    only where the people counter finds him, and what it finds can differ between machines, so
    only the rejection is checked here. Measured: 0.263 and 0.283 of the width on two machines,
    0.25-0.27 with the people's boxes moved by up to 3 px (limit 0.2)."""
    real = [s.image for s in iter_samples(CLIPS / "hybrik_taiji.mp4", DecodeParams(fps=PAN_FPS, end_s=13.0))]
    assert len(real) == PAN_FRAMES
    path = _portrait_window(real, tmp_path / "portrait_pan.mp4")
    result = rule_camera_motion(analyse_frames(sample_frames(path, "portrait_pan", CONFIG), CONFIG), CONFIG)
    assert result.reasons == [Reason.CAMERA_MOTION], result.details
