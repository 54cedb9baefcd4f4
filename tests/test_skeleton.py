"""The neutral skeleton module (pipeline/modalities/skeleton.py): joints, limbs, estimator mappings."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.modalities import skeleton


def test_limbs_and_edges_name_the_same_mpii_joints():
    assert len(skeleton.MPII_JOINTS) == skeleton.NUM_JOINTS == 16
    assert [skeleton.MPII_JOINTS[i] for i, _ in skeleton.EDGES] == [a for a, _ in skeleton.LIMBS]
    assert [skeleton.MPII_JOINTS[j] for _, j in skeleton.EDGES] == [b for _, b in skeleton.LIMBS]
    # every joint but the direct BlazePose copies is derived, and none is both
    assert set(skeleton.BLAZEPOSE_DIRECT) | set(skeleton.DERIVED_SOURCES) == set(range(16))
    assert not set(skeleton.BLAZEPOSE_DIRECT) & set(skeleton.DERIVED_SOURCES)


def test_coco_mapping_derives_joints_with_lowest_confidence() -> None:
    xy = np.zeros((1, 17, 2), np.float32)
    xy[0, 5] = (10, 0)  # left shoulder
    xy[0, 6] = (0, 0)  # right shoulder
    conf = np.ones((1, 17), np.float32)
    conf[0, 6] = 0.2
    rows = skeleton.coco17_to_mpii(xy, conf).reshape(16, 3)
    assert rows[skeleton.MPII_INDEX["thorax"]].tolist() == pytest.approx([5.0, 0.0, 0.2])
    assert rows[skeleton.MPII_INDEX["r_shoulder"]].tolist() == pytest.approx([0.0, 0.0, 0.2])
