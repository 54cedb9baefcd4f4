"""The screening rules that need pixels (docs/BEHAVIOUR.md section 2): one dancer, upper body, camera motion.

``screen_visual(path, clip_id, config)`` decodes a few frames of a clip (``fps`` per second,
at most ``max_frames``: a long clip is sampled more sparsely, so it costs no more than a short
one), analyses each once and returns one :class:`~pipeline.screening.rules.RuleResult` per rule:

- ``one_dancer`` (:mod:`pipeline.screening.people`): ``no_dancer`` when fewer than ``min_person_share``
  of the sampled frames show a person; ``multiple_people`` when at least ``multi_person_share``
  of them show two or more (a second person in a meaningful share of frames, not a passer-by
  in one frame);
- ``upper_body_visible``: on each sampled frame, the main person's MPII head top, upper neck,
  shoulders, elbows and hips (``upper_body_joints``) must all have confidence at least
  ``joint_confidence`` and lie inside the frame; ``upper_body_not_visible`` when fewer than
  ``min_upper_body_share`` of the sampled frames qualify (a frame with nobody does not);
- ``camera_motion`` (:mod:`pipeline.screening.motion`): ``camera_motion`` when more than
  ``max_moving_share`` of the measured frame pairs move faster than ``max_camera_speed`` (share
  of the frame diagonal per second), or when the motion composed over the clip takes the view
  further from the first sampled frame than ``max_composed_scale`` (zoom), ``max_composed_rotation_deg``
  or ``max_composed_shift`` (pan: the frame centre's shift along either axis, as a share of the
  frame's width or height) allow: a slow, steady move adds up;
  ``shot_cut`` when more than ``max_cuts`` pairs have a colour-histogram distance above
  ``cut_distance``.

The same rules run on any sequence of frames (:func:`analyse_frames` then :func:`apply_rules`),
so tests can feed sequences built from real frames. A clip that cannot be decoded, or runs past
``time_budget_s``, gives one failing ``visual_decode`` result with the decoder's reason instead
of an exception, so a batch never stops on one clip. Thresholds were set on the real clips of
``../shared/data`` (see ``tests/test_visual.py``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.blazepose.backends import open_blazepose
from pipeline.blazepose.settings import TrackOptions, TrackSettings, track_settings
from pipeline.core.decode import DecodeParams, claimed_duration, decode_pass
from pipeline.core.errors import ClipError, Reason
from pipeline.core.placement import Placement
from pipeline.modalities.skeleton import LIMBS, MPII_INDEX, blazepose_to_mpii
from pipeline.screening.motion import MotionParams, PairMotion, composed_motion, pair_motion, prepare
from pipeline.screening.people import CountParams, Person, count_people, find_people_many
from pipeline.screening.rules import RuleResult

log = logging.getLogger(__name__)

UPPER_BODY = ("head_top", "upper_neck", "r_shoulder", "l_shoulder", "r_elbow", "l_elbow", "r_hip", "l_hip")


@dataclass(frozen=True)
class VisualConfig:
    """Configuration section ``[visual]``."""

    # sampling: cheap whatever the clip's length
    fps: float = 3.0  # sampled frames per second
    max_frames: int = 24  # a longer clip is sampled at max_frames / duration per second instead
    max_side: int = 640  # frames are shrunk to this longer side before analysis
    time_budget_s: float | None = 120.0  # decoding budget per clip
    # people counting (pipeline.screening.people)
    # (the defaults are CountParams'; pipeline.screening.people documents each)
    max_people: int = CountParams.max_people
    min_landmarks: int = CountParams.min_landmarks  # confident in-frame landmarks that make a person
    landmark_visibility: float = CountParams.landmark_visibility
    box_margin: float = CountParams.box_margin
    tiles: int = CountParams.tiles  # tile grid searched for small people (0 disables)
    tile_size: float = CountParams.tile_size
    tile_mean_visibility: float = CountParams.tile_mean_visibility
    max_masked_share: float = CountParams.max_masked_share
    min_relative_height: float = CountParams.min_relative_height  # spectators, far figures are not counted
    # one dancer
    min_person_share: float = 0.5  # share of sampled frames that must show a person
    multi_person_share: float = 0.25  # share of frames with 2+ people that rejects the clip
    # upper body visible
    upper_body_joints: tuple[str, ...] = UPPER_BODY
    joint_confidence: float = 0.5
    min_upper_body_share: float = 0.5
    # camera motion (pipeline.screening.motion)
    motion_width: int = 160
    min_points: int = 12
    max_camera_speed: float = 0.05  # share of the frame diagonal per second
    max_moving_share: float = 0.3  # share of measured pairs allowed above max_camera_speed
    # the motion composed from the first sampled frame (a slow zoom, pan or roll adds up); the
    # real static-camera clips stay at or under half of each (tests/test_motion.py gives the margins)
    max_composed_scale: float = 0.2  # |scale - 1|: the view zoomed in or out by more than 20 %
    max_composed_rotation_deg: float = 8.0  # the camera rolled by more than 8 degrees
    # the frame centre moved by more than 20 % of the frame's width (a horizontal pan) or height
    # (a vertical one), whatever the frame's shape: under 80 % of the first view left along the pan
    max_composed_shift: float = 0.2
    cut_distance: float = 0.5  # Bhattacharyya distance of hue-saturation histograms
    max_cuts: int = 0

    def __post_init__(self):
        unknown = set(self.upper_body_joints) - set(MPII_INDEX)
        if unknown:
            raise ValueError(f"[visual] upper_body_joints: unknown MPII joints {sorted(unknown)}")
        if self.fps <= 0 or self.max_frames < 2:
            raise ValueError("[visual] needs fps > 0 and max_frames >= 2")
        if self.max_people < 2:
            raise ValueError(
                f"[visual] max_people = {self.max_people} stops counting before a second person, so the "
                "one_dancer rule could never see one (multi_person_share); it needs at least 2"
            )
        for name in ("min_person_share", "multi_person_share", "min_upper_body_share", "max_moving_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"[visual] {name} = {getattr(self, name)} must be a share in [0, 1]")

    def count_params(self) -> CountParams:
        return CountParams(
            max_people=self.max_people,
            min_landmarks=self.min_landmarks,
            landmark_visibility=self.landmark_visibility,
            box_margin=self.box_margin,
            tiles=self.tiles,
            tile_size=self.tile_size,
            tile_mean_visibility=self.tile_mean_visibility,
            max_masked_share=self.max_masked_share,
            min_relative_height=self.min_relative_height,
        )

    def motion_params(self) -> MotionParams:
        return MotionParams(width=self.motion_width, min_points=self.min_points)


@dataclass
class VisualAnalysis:
    """What was seen on the sampled frames; the rules only read this."""

    times: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # people counted per frame
    detections: list[int] = field(default_factory=list)  # people found, small ones included
    tile_counts: list[int] = field(default_factory=list)  # of which found in a tile
    main: list[np.ndarray | None] = field(default_factory=list)  # (16, 3) MPII of the main person
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) analysed
    pairs: list[PairMotion] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return len(self.times)


def analyse_frames(
    frames: Iterable[tuple[float, np.ndarray]],
    config: VisualConfig = VisualConfig(),
    *,
    sheet: ContactSheet | None = None,
    pose: TrackSettings | None = None,
) -> VisualAnalysis:
    """Count people, locate the main person and measure motion on ``(time, RGB frame)`` pairs.

    ``sheet`` (a :class:`ContactSheet`) is shown every analysed frame with the people found on
    it, so that thumbnails come from the frames already decoded, not from a second decode.
    ``pose`` names the BlazePose backend (and its device) the people counter runs on, in static mode.
    """
    count_params, motion_params = config.count_params(), config.motion_params()
    analysis = VisualAnalysis()
    frames = list(frames)  # at most max_frames small frames: their people are found together
    with open_blazepose(_static(pose or TrackSettings())) as estimator:
        found = _people_of(frames, estimator, count_params)
    prev = None  # (time, prepared frame, boxes)
    for (t, image), people in zip(frames, found, strict=True):
        height, width = image.shape[:2]
        analysis.times.append(float(t))
        analysis.counts.append(count_people(people, count_params))
        analysis.detections.append(len(people))
        analysis.tile_counts.append(sum(p.in_tile for p in people))
        analysis.main.append(blazepose_to_mpii(people[0].landmarks) if people else None)
        analysis.sizes.append((width, height))
        if sheet is not None:
            sheet.add(float(t), image, [blazepose_to_mpii(p.landmarks) for p in people], analysis.counts[-1])
        prepared = prepare(image, motion_params)
        boxes = [p.box for p in people]
        if prev is not None:
            analysis.pairs.append(pair_motion(prev[1], prepared, t - prev[0], prev[2] + boxes, motion_params))
        prev = (t, prepared, boxes)
    return analysis


def _people_of(frames: list[tuple[float, np.ndarray]], estimator, params: CountParams) -> list[list[Person]]:
    """The people of each frame, frames of one size searched together (:func:`find_people_many`)."""
    found: list[list[Person] | None] = [None] * len(frames)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, (_, image) in enumerate(frames):
        by_size.setdefault(image.shape[:2], []).append(i)
    for indices in by_size.values():
        for i, people in zip(
            indices, find_people_many([frames[i][1] for i in indices], estimator, params), strict=True
        ):
            found[i] = people
    return found


# -- the rules ---------------------------------------------------------------------------------


def rule_one_dancer(analysis: VisualAnalysis, config: VisualConfig = VisualConfig()) -> RuleResult:
    n = max(analysis.n_frames, 1)
    counts = np.asarray(analysis.counts, dtype=int)
    person_share = float((counts >= 1).sum() / n)
    multi_share = float((counts >= 2).sum() / n)
    reasons = []
    if person_share < config.min_person_share:
        reasons.append(Reason.NO_DANCER)
    elif multi_share >= config.multi_person_share:
        reasons.append(Reason.MULTIPLE_PEOPLE)
    details = {
        "frames": analysis.n_frames,
        "people_per_frame": [int(c) for c in counts],
        "detections_per_frame": [int(c) for c in analysis.detections],
        "found_in_tiles": [int(c) for c in analysis.tile_counts],
        "person_share": round(person_share, 3),
        "multi_person_share": round(multi_share, 3),
        "max_people": int(counts.max()) if len(counts) else 0,
    }
    return RuleResult("one_dancer", not reasons, reasons, details)


def upper_body_frames(analysis: VisualAnalysis, config: VisualConfig = VisualConfig()) -> list[bool]:
    """Per sampled frame: are all ``upper_body_joints`` of the main person confidently in frame?"""
    idx = [MPII_INDEX[j] for j in config.upper_body_joints]
    ok = []
    for joints, (width, height) in zip(analysis.main, analysis.sizes, strict=True):
        if joints is None:
            ok.append(False)
            continue
        j = joints[idx]
        inside = (j[:, 0] >= 0) & (j[:, 0] < width) & (j[:, 1] >= 0) & (j[:, 1] < height)
        ok.append(bool(np.all(inside & (j[:, 2] >= config.joint_confidence))))
    return ok


def rule_upper_body(analysis: VisualAnalysis, config: VisualConfig = VisualConfig()) -> RuleResult:
    ok = upper_body_frames(analysis, config)
    share = float(sum(ok) / max(len(ok), 1))
    idx = [MPII_INDEX[j] for j in config.upper_body_joints]
    seen = [m[idx, 2] for m in analysis.main if m is not None]
    median_conf = (
        {
            j: round(float(v), 3)
            for j, v in zip(config.upper_body_joints, np.median(np.stack(seen), axis=0), strict=True)
        }
        if seen
        else {}
    )
    passed = share >= config.min_upper_body_share
    details = {"frames": len(ok), "visible_share": round(share, 3), "median_confidence": median_conf}
    return RuleResult("upper_body_visible", passed, [] if passed else [Reason.UPPER_BODY_NOT_VISIBLE], details)


def rule_camera_motion(analysis: VisualAnalysis, config: VisualConfig = VisualConfig()) -> RuleResult:
    speeds = [p.speed for p in analysis.pairs if p.speed is not None]
    moving = sum(s > config.max_camera_speed for s in speeds)
    moving_share = moving / len(speeds) if speeds else 0.0
    cuts = [i for i, p in enumerate(analysis.pairs) if p.hist_distance > config.cut_distance]
    composed = composed_motion(analysis.pairs)
    drifted = (
        composed.scale_change > config.max_composed_scale
        or composed.rotation_deg > config.max_composed_rotation_deg
        or composed.shift > config.max_composed_shift
    )
    reasons = []
    if moving_share > config.max_moving_share or drifted:
        reasons.append(Reason.CAMERA_MOTION)
    if len(cuts) > config.max_cuts:
        reasons.append(Reason.SHOT_CUT)
    details = {
        "pairs": len(analysis.pairs),
        "measured_pairs": len(speeds),
        "median_speed": round(float(np.median(speeds)), 4) if speeds else None,
        "max_speed": round(float(max(speeds)), 4) if speeds else None,
        "moving_share": round(moving_share, 3),
        "composed_scale_change": composed.scale_change,
        "composed_rotation_deg": composed.rotation_deg,
        "composed_shift": composed.shift,  # the larger of the two below
        "composed_shift_x": composed.shift_x,
        "composed_shift_y": composed.shift_y,
        "max_hist_distance": round(max((p.hist_distance for p in analysis.pairs), default=0.0), 3),
        "cuts_at_s": [round(analysis.times[i + 1], 2) for i in cuts],
    }
    return RuleResult("camera_motion", not reasons, reasons, details)


RULES = (rule_one_dancer, rule_upper_body, rule_camera_motion)


def apply_rules(analysis: VisualAnalysis, config: VisualConfig = VisualConfig()) -> list[RuleResult]:
    return [rule(analysis, config) for rule in RULES]


# -- contact sheet -----------------------------------------------------------------------------

MAIN_COLOUR = (0, 255, 0)  # RGB: the main person (the one the upper-body rule reads)
OTHER_COLOUR = (255, 0, 255)  # every other person found on the frame
JOINT_RADIUS = 3


def draw_skeleton(image: np.ndarray, joints: np.ndarray, colour: tuple[int, int, int], min_conf: float) -> None:
    """Draw ``(16, 3)`` MPII joints (pixels of ``image``) in place: limbs, then a dot per joint.

    Only joints with confidence >= ``min_conf`` are drawn, and a limb only between two drawn joints.
    """
    import cv2

    drawn = np.isfinite(joints).all(axis=1) & (np.nan_to_num(joints[:, 2], nan=-1.0) >= min_conf)
    bound = 4 * max(image.shape[:2])  # far outside the picture is as good as anywhere outside it
    pts = np.clip(np.round(np.nan_to_num(joints[:, :2])), -bound, bound).astype(int)
    for a, b in LIMBS:
        i, j = MPII_INDEX[a], MPII_INDEX[b]
        if drawn[i] and drawn[j]:
            cv2.line(image, tuple(map(int, pts[i])), tuple(map(int, pts[j])), colour, 1, cv2.LINE_AA)
    for k in np.flatnonzero(drawn):
        cv2.circle(image, tuple(map(int, pts[k])), JOINT_RADIUS, colour, -1, cv2.LINE_8)


@dataclass
class ContactSheet:
    """Thumbnails of a few analysed frames with the detected skeletons drawn.

    :func:`analyse_frames` shows it each analysed frame; it keeps a ``height``-pixel copy of each
    (at most ``max_frames`` of them, a few KiB each) and, at :meth:`write`, saves ``count`` frames
    evenly spread over the clip as JPEG. The main person is drawn in :data:`MAIN_COLOUR`, others
    in :data:`OTHER_COLOUR`; joints below ``min_conf`` are not drawn.
    """

    count: int = 6
    height: int = 144  # thumbnail height in pixels (the report shows them at this height)
    max_width: int = 256  # a wide frame is shrunk further so that it is at most this wide
    min_conf: float = 0.5
    quality: int = 90
    _frames: list[tuple[float, np.ndarray, float, list[np.ndarray], int]] = field(default_factory=list, repr=False)

    def add(self, t: float, image: np.ndarray, people: list[np.ndarray], counted: int | None = None) -> None:
        """Keep a small copy of an analysed frame with the people found on it (``counted``: how
        many of them the people counter counted; all of them when not given)."""
        import cv2

        height, width = image.shape[:2]
        scale = min(1.0, self.height / height, self.max_width / width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else image.copy()
        scaled = [np.column_stack([p[:, :2] * scale, p[:, 2]]) for p in people]
        self._frames.append((t, small, scale, scaled, len(people) if counted is None else int(counted)))

    def chosen(self) -> list[int]:
        """``count`` frames evenly spread over the clip, one of them swapped for the frame with the
        most people counted when the spread misses it, so that a clip rejected for a second
        person shows that person even when the second person is there only briefly."""
        n = len(self._frames)
        if n <= self.count:
            return list(range(n))
        picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, self.count)})
        counts = [frame[4] for frame in self._frames]
        busiest = int(np.argmax(counts))
        if counts[busiest] > max(counts[i] for i in picks):
            nearest = min(range(len(picks)), key=lambda k: abs(picks[k] - busiest))
            picks[nearest] = busiest
        return sorted(set(picks))

    def write(self, directory: str | Path, clip_id: str) -> dict:
        """Write the thumbnails as ``<clip_id[:2]>/<clip_id[:16]>.f<NN>.jpg`` (atomic writes,
        :func:`pipeline.core.tables.thumbnail_name`); return what to record.

        The record lists, per thumbnail, its file, the frame's time and index among the sampled
        frames, the scale from the analysed frame, and the main person's joints in thumbnail
        pixels (``[x, y, confidence]`` per MPII joint, None when nobody was found).
        """
        import cv2

        from pipeline.core.tables import atomic_write, thumbnail_name

        directory = Path(directory)
        frames = []
        for index in self.chosen():
            t, small, scale, people, counted = self._frames[index]
            canvas = np.ascontiguousarray(small)
            for joints in people[1:]:
                draw_skeleton(canvas, joints, OTHER_COLOUR, self.min_conf)
            if people:
                draw_skeleton(canvas, people[0], MAIN_COLOUR, self.min_conf)
            name = thumbnail_name(clip_id, f"f{index:02d}.jpg")
            ok, data = cv2.imencode(
                ".jpg", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality]
            )
            if not ok:
                raise OSError(f"cannot encode thumbnail {name}")
            atomic_write(directory / name, lambda tmp, data=data: tmp.write_bytes(data.tobytes()))
            frames.append(
                {
                    "file": name,
                    "t": round(t, 3),
                    "index": index,
                    "scale": round(scale, 6),
                    "size": [int(canvas.shape[1]), int(canvas.shape[0])],
                    "people": len(people),  # found, small or distant ones included
                    "counted": counted,  # counted by the one-dancer rule
                    "joints": [[round(float(x), 1), round(float(y), 1), round(float(c), 3)] for x, y, c in people[0]]
                    if people
                    else None,
                }
            )
        return {"joint_order": list(MPII_INDEX), "min_conf": self.min_conf, "frames": frames}


def rule_thresholds(config: VisualConfig = VisualConfig()) -> dict[str, dict]:
    """The configured thresholds each pixel rule compares its measurements with."""
    return {
        "one_dancer": {
            "min_person_share": config.min_person_share,
            "multi_person_share": config.multi_person_share,
            "min_relative_height": config.min_relative_height,
        },
        "upper_body_visible": {
            "joints": list(config.upper_body_joints),
            "joint_confidence": config.joint_confidence,
            "min_upper_body_share": config.min_upper_body_share,
        },
        "camera_motion": {
            "max_camera_speed": config.max_camera_speed,
            "max_moving_share": config.max_moving_share,
            "max_composed_scale": config.max_composed_scale,
            "max_composed_rotation_deg": config.max_composed_rotation_deg,
            "max_composed_shift": config.max_composed_shift,
            "cut_distance": config.cut_distance,
            "max_cuts": config.max_cuts,
        },
    }


# -- clips -------------------------------------------------------------------------------------


def counter_settings(config: dict | None = None, placement: Placement | None = None) -> TrackSettings:
    """The people counter's BlazePose in a run of ``placement`` (:mod:`pipeline.core.placement`; None:
    resolved here from the configuration for this machine): static mode, its pose backend, and for
    the torch backend its device, BlazePose precision and the pose section's weights cache, as
    extraction runs them (:func:`pipeline.blazepose.settings.track_settings`)."""
    from pipeline.core.placement import resolve_placement
    from pipeline.modalities import pose
    from pipeline.modalities import registry as modalities

    config = dict(config or {})
    section = pose.MODALITY.section(config.get(pose.MODALITY.name))
    placement = placement or resolve_placement(config, backends=modalities.backend_settings(config))
    return track_settings(TrackOptions(static=True), placement, section.weights_dir)


def _static(pose: TrackSettings) -> TrackSettings:
    """``pose`` in static mode: the counter masks people out and looks again at the same frame."""
    return dataclasses.replace(pose, options=dataclasses.replace(pose.options, static=True))


def counter_record(pose: TrackSettings) -> dict:
    """What the pixel rules' results record of the people counter: backend, device, precision."""
    return {"backend": pose.backend, "device": pose.device, "precision": pose.precision}


def _duration(path: str | Path) -> float | None:
    import av

    try:
        with av.open(str(path)) as container:
            return claimed_duration(container, container.streams.video[0])
    except (av.error.FFmpegError, OSError, IndexError):
        return None  # iter_samples reports why the file is bad


def sample_params(
    path: str | Path, config: VisualConfig = VisualConfig(), duration_s: float | None = None
) -> DecodeParams:
    """The sampled grid: ``fps``, or fewer per second so that at most ``max_frames`` come out.

    ``duration_s`` is the probe's (the ``clips`` table); only without it is the file opened to
    read the container's claim.
    """
    fps = config.fps
    duration = duration_s if duration_s is not None else _duration(path)
    if duration and duration * fps > config.max_frames:
        fps = config.max_frames / duration
    return DecodeParams(fps=fps, max_side=config.max_side)


def sample_frames(
    path: str | Path,
    clip_id: str | None = None,
    config: VisualConfig = VisualConfig(),
    params: DecodeParams | None = None,
    stats: dict | None = None,
):
    """Yield ``(time, RGB frame)`` of the clip's sampled frames (at most ``max_frames``).

    ``stats`` (a dict) gets ``decoded_frames``: the frames the codec put out for them."""
    params = params or sample_params(path, config)
    with decode_pass(path, [params], clip_id, budget_s=config.time_budget_s) as one:
        try:
            for _, sample in one:
                if sample.index >= config.max_frames:
                    return
                yield sample.t, sample.image
        finally:
            if stats is not None:
                stats["decoded_frames"] = stats.get("decoded_frames", 0) + one.frames_decoded


class SampledFrames:
    """The sampled frames of a clip, collected from a decode pass that serves other grids too
    (the node build's one pass, :mod:`pipeline.extraction.onepass`): :meth:`push` each sample of
    :attr:`params`' grid, then :func:`judge_frames` on :attr:`frames`. The frames are the ones
    :func:`sample_frames` yields: a grid's samples do not depend on the other grids of a pass."""

    def __init__(self, path: str | Path, config: VisualConfig = VisualConfig(), duration_s: float | None = None):
        self.config = config
        self.params = sample_params(path, config, duration_s)
        self.frames: list[tuple[float, np.ndarray]] = []

    def push(self, sample) -> None:
        if sample.index < self.config.max_frames:
            self.frames.append((sample.t, sample.image))


def screen_visual(
    path: str | Path,
    clip_id: str,
    config: VisualConfig = VisualConfig(),
    *,
    duration_s: float | None = None,
    thumbnails: str | Path | None = None,
    pose: TrackSettings | None = None,
    stats: dict | None = None,
) -> list[RuleResult]:
    """Run every pixel rule on one clip; never raises for a bad clip (see the module docstring).

    ``pose``: the BlazePose backend of the people counter (:func:`counter_settings`; default mediapipe).

    ``duration_s`` (the probe's) spares an open of the file to size the sampling grid.
    ``stats`` (a dict) gets ``decoded_frames``, the frames decoded to sample the clip.
    Each result's details carry the rule's configured ``thresholds`` beside what it measured.
    ``thumbnails`` (a directory): a :class:`ContactSheet` of the analysed frames is written there
    and described under ``contact_sheet`` in the ``one_dancer`` details (file names, the main
    person's joints in thumbnail pixels). A thumbnail that cannot be written is logged and
    recorded as ``contact_sheet_error``; it never changes the decision.
    """
    params = sample_params(path, config, duration_s)
    try:
        frames = list(sample_frames(path, clip_id, config, params, stats))
    except ClipError as err:
        return [RuleResult("visual_decode", False, [err.reason], {"message": err.message})]
    return judge_frames(frames, clip_id, config, params, thumbnails=thumbnails, pose=pose)


def judge_frames(
    frames: list[tuple[float, np.ndarray]],
    clip_id: str,
    config: VisualConfig,
    params: DecodeParams,
    *,
    thumbnails: str | Path | None = None,
    pose: TrackSettings | None = None,
    error: ClipError | None = None,
) -> list[RuleResult]:
    """Every pixel rule on a clip's sampled ``frames`` (on the grid ``params``), as
    :func:`screen_visual` runs them; ``error``: the decoder's, when the decode failed."""
    if error is not None:
        return [RuleResult("visual_decode", False, [error.reason], {"message": error.message})]
    sheet = ContactSheet(min_conf=config.joint_confidence) if thumbnails is not None else None
    try:
        analysis = analyse_frames(frames, config, sheet=sheet, pose=pose)
    except ClipError as err:
        return [RuleResult("visual_decode", False, [err.reason], {"message": err.message})]
    if analysis.n_frames == 0:
        return [RuleResult("visual_decode", False, [Reason.ZERO_FRAMES], {"message": "no frame sampled"})]
    results = apply_rules(analysis, config)
    thresholds = rule_thresholds(config)
    for result in results:
        result.details["sampled_fps"] = round(params.fps, 4)
        result.details["thresholds"] = thresholds.get(result.rule, {})
        if result.rule == "one_dancer":
            result.details["people_counter"] = counter_record(pose or TrackSettings())
    if sheet is not None:
        target = next(r for r in results if r.rule == "one_dancer")
        try:
            target.details["contact_sheet"] = sheet.write(thumbnails, clip_id)
        except Exception as err:  # noqa: BLE001 - a picture for people never changes the decision
            log.warning("%s: contact sheet not written: %s", clip_id[:12], err)
            target.details["contact_sheet_error"] = str(err)
    return results


__all__ = [
    "ContactSheet",
    "SampledFrames",
    "VisualConfig",
    "VisualAnalysis",
    "analyse_frames",
    "apply_rules",
    "counter_settings",
    "draw_skeleton",
    "judge_frames",
    "rule_camera_motion",
    "rule_one_dancer",
    "rule_thresholds",
    "rule_upper_body",
    "sample_frames",
    "screen_visual",
]
