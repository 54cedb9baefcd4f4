"""Counting people in a frame with a single-person pose estimator (SPEC section 2, one dancer).

mediapipe's legacy BlazePose returns one person per image, so it cannot count on its own. The
counter makes it find people one after another:

1. run BlazePose in static mode (its person detector runs on every call) on the whole frame;
2. a detection is a person when at least ``min_landmarks`` of its 33 landmarks lie inside the
   frame with visibility >= ``landmark_visibility``; a face filling the frame still counts as
   a person (the upper-body rule, not this one, rejects it);
3. paint that person's box, grown by ``box_margin`` on each side, black, and run again, up to
   ``max_people`` times or until nobody is found (a clip's frames are searched together,
   :func:`find_people_many`, so that the torch backend runs one forward per round);
4. then search the overlapping tiles of a ``tiles`` x ``tiles`` grid (each ``tile_size`` of
   the frame's sides) of the masked frame the same way. BlazePose's detector sees the image at
   224 px, so a small or distant person (the roof-top dancer of ``sports2d_demo``, the bystander
   at the edge of ``pose2sim_singleperson_cam01``) is only found in a tile. A crop loses the
   context that keeps BlazePose from seeing a body in a blanket or a cat, so a tile detection
   counts only when its mean landmark visibility is at least ``tile_mean_visibility``
   (tuned on the real clips: kitten detections in tiles reach 0.77, people in tiles 0.86
   to 0.99; ``tests/test_people.py`` and ``tests/test_visual.py`` hold the outcomes).

A detection whose box is already ``max_masked_share`` painted over is discarded: BlazePose
sometimes sees a body in the black box it was just shown. :func:`count_people` then counts
only people at least ``min_relative_height`` as tall as the tallest one in the frame, so that
spectators behind a weightlifter (``stgcn_clean_and_jerk``, 0.16 to 0.32 of his height) do not
make a second dancer, while a bystander standing at the side (``pose2sim_singleperson_cam01``,
about 0.57) does.

Boxes are the bounds of the 33 landmarks, grown by ``box_margin`` and clipped to the frame; the first whole-frame detection is the main
person (its landmarks feed the upper-body rule), and every box is used to keep the camera-motion
estimate off the people.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.blazepose.backends import PoseEstimator


@dataclass(frozen=True)
class CountParams:
    """Thresholds of the counter; :class:`pipeline.screening.visual.VisualConfig` holds the configured values."""

    max_people: int = 4  # stop searching a frame after this many
    min_landmarks: int = 8  # in-frame landmarks with visibility >= landmark_visibility
    landmark_visibility: float = 0.5
    box_margin: float = 0.1  # mask grows each side by this share of the box size
    tiles: int = 2  # 0 or 1 disables the tile search
    tile_size: float = 0.6  # share of the frame's width/height that a tile covers
    tile_mean_visibility: float = 0.85  # a tile detection's mean visibility over all 33 landmarks
    max_masked_share: float = 0.4  # a detection whose box is this much painted over is the mask's ghost
    min_relative_height: float = 0.4  # people shorter than this share of the tallest are not counted


@dataclass(frozen=True)
class Person:
    landmarks: np.ndarray  # (33, 3) x, y (pixels of the frame), visibility
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels
    in_tile: bool  # found by the tile search


def _accept(lm: np.ndarray, width: int, height: int, params: CountParams, in_tile: bool, masked_share: float) -> bool:
    if masked_share >= params.max_masked_share:
        return False
    inside = (lm[:, 0] >= 0) & (lm[:, 0] < width) & (lm[:, 1] >= 0) & (lm[:, 1] < height)
    confident = inside & (lm[:, 2] >= params.landmark_visibility)
    if int(confident.sum()) < params.min_landmarks:
        return False
    return not in_tile or float(lm[:, 2].mean()) >= params.tile_mean_visibility


def _box(lm: np.ndarray, width: int, height: int, params: CountParams) -> tuple[int, int, int, int]:
    x0, y0 = lm[:, 0].min(), lm[:, 1].min()
    x1, y1 = lm[:, 0].max(), lm[:, 1].max()
    mx, my = params.box_margin * (x1 - x0), params.box_margin * (y1 - y0)
    return (
        int(np.clip(np.floor(x0 - mx), 0, width)),
        int(np.clip(np.floor(y0 - my), 0, height)),
        int(np.clip(np.ceil(x1 + mx), 0, width)),
        int(np.clip(np.ceil(y1 + my), 0, height)),
    )


def _regions(width: int, height: int, params: CountParams) -> list[tuple[int, int, int, int, bool]]:
    regions = [(0, 0, width, height, False)]
    n = params.tiles
    if n and n > 1:
        tw, th = int(round(width * params.tile_size)), int(round(height * params.tile_size))
        xs = np.linspace(0, width - tw, n).round().astype(int)
        ys = np.linspace(0, height - th, n).round().astype(int)
        regions += [(int(x), int(y), int(x) + tw, int(y) + th, True) for y in ys for x in xs]
    return regions


def find_people(image: np.ndarray, estimator: PoseEstimator, params: CountParams = CountParams()) -> list[Person]:
    """The people in one upright RGB frame; ``estimator`` must run its detector on every call."""
    return find_people_many([image], estimator, params)[0]


def find_people_many(
    images: list[np.ndarray], estimator: PoseEstimator, params: CountParams = CountParams()
) -> list[list[Person]]:
    """:func:`find_people` on frames of one size, each round of the search of every frame at once.

    Round ``k`` of a region asks the estimator about every frame still searching it
    (``estimator.landmarks_many``: one batched forward on the torch backend, one call per frame
    on mediapipe's), so a clip's sampled frames cost a few dozen forwards, not hundreds. Each
    frame's search is the same as alone: a frame leaves a region when nothing is found in it.
    """
    if not images:
        return []
    height, width = images[0].shape[:2]
    if any(im.shape[:2] != (height, width) for im in images):
        raise ValueError("find_people_many needs frames of one size")
    work = [im.copy() for im in images]  # the caller's frames are never painted
    painted = [np.zeros((height, width), dtype=bool) for _ in images]
    people: list[list[Person]] = [[] for _ in images]
    for x0, y0, x1, y1, in_tile in _regions(width, height, params):
        # bounded: a rejected detection is masked too, so each call uncovers something new
        searching = [i for i in range(len(images)) if len(people[i]) < params.max_people]
        for _ in range(params.max_people + 1):
            if not searching:
                break
            found = _landmarks_many(estimator, [work[i][y0:y1, x0:x1] for i in searching])
            still = []
            for i, lm in zip(searching, found, strict=True):
                if lm is None:
                    continue
                lm = lm + np.array([x0, y0, 0.0])
                box = _box(lm, width, height, params)
                region = painted[i][box[1] : box[3], box[0] : box[2]]
                masked_share = float(region.mean()) if region.size else 1.0
                # mask even a rejected detection, else the same thing is found again
                work[i][box[1] : box[3], box[0] : box[2]] = 0
                painted[i][box[1] : box[3], box[0] : box[2]] = True
                if _accept(lm, width, height, params, in_tile, masked_share):
                    people[i].append(Person(lm, box, in_tile))
                if len(people[i]) < params.max_people:
                    still.append(i)
            searching = still
    return people


def _landmarks_many(estimator: PoseEstimator, images: list[np.ndarray]) -> list[np.ndarray | None]:
    many = getattr(estimator, "landmarks_many", None)
    return many(images) if many is not None else [estimator.landmarks(im) for im in images]


def count_people(people: list[Person], params: CountParams = CountParams()) -> int:
    """People at least ``min_relative_height`` as tall as the tallest: a far-away figure, a
    spectator or a face on a poster is part of the scene, not a second performer."""
    if not people:
        return 0
    tallest = max(p.box[3] - p.box[1] for p in people)
    return sum((p.box[3] - p.box[1]) >= params.min_relative_height * tallest for p in people)
