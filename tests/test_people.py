"""Counting people on single real frames with the iterative masked search of pipeline.screening.people."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.blazepose.backends import BlazePose
from pipeline.blazepose.settings import TrackOptions
from pipeline.core.decode import DecodeParams, iter_samples
from pipeline.screening.people import CountParams, count_people, find_people

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"


def frame_at(name: str, t: float, max_side: int = 640) -> np.ndarray:
    for sample in iter_samples(CLIPS / f"{name}.mp4", DecodeParams(fps=10, max_side=max_side, start_s=t)):
        return sample.image
    raise LookupError(f"{name} has no frame at {t} s")


@pytest.fixture(scope="module")
def estimator():
    with BlazePose(TrackOptions(static=True)) as est:
        yield est


@pytest.mark.parametrize(
    ("clip", "t", "expected"),
    [
        ("mmhuman3d_multi_person_demo", 0.0, 2),  # two people meet
        ("mmhuman3d_multi_person_demo", 2.0, 2),
        ("musepose_dance", 3.0, 1),
        ("hybrik_taiji", 5.0, 1),
        ("intel_car-detection", 5.0, 0),  # parking lot
        ("intel_bottle-detection", 1.0, 0),  # bottles on a table
    ],
)
def test_counts_on_real_frames(estimator, clip, t, expected):
    people = find_people(frame_at(clip, t), estimator)
    assert count_people(people) == expected


def test_two_people_get_disjoint_boxes(estimator):
    people = find_people(frame_at("mmhuman3d_multi_person_demo", 1.0), estimator)
    assert len(people) == 2
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = people[0].box, people[1].box
    overlap = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    assert overlap < 0.2 * min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))


def test_one_person_search_finds_only_the_first(estimator):
    """Without masking and searching again, a single-person estimator sees one of the two."""
    image = frame_at("mmhuman3d_multi_person_demo", 1.0)
    assert len(find_people(image, estimator, CountParams(max_people=1))) == 1


def test_caller_frame_is_not_painted(estimator):
    image = frame_at("mmhuman3d_multi_person_demo", 1.0)
    before = image.copy()
    find_people(image, estimator)
    np.testing.assert_array_equal(image, before)


def test_tiles_find_the_distant_dancer(estimator):
    """sports2d_demo opens with one small person on a roof that only the tile search finds."""
    image = frame_at("sports2d_demo", 0.0)
    assert find_people(image, estimator, CountParams(tiles=0)) == []
    people = find_people(image, estimator)
    assert len(people) == 1 and people[0].in_tile


def test_spectators_are_found_but_not_counted(estimator):
    """stgcn_clean_and_jerk at 0.83 s: a small figure behind the lifter is no second dancer."""
    image = frame_at("stgcn_clean_and_jerk", 0.83)
    people = find_people(image, estimator)
    assert len(people) == 2
    assert count_people(people) == 1
    assert count_people(people, CountParams(min_relative_height=0.1)) == 2
