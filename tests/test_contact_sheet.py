"""Contact-sheet thumbnails written by screening: they never change a decision, and a thumbnail
that cannot be written is recorded, not raised."""

from __future__ import annotations

import numpy as np
from conftest import SHARED_CLIPS

from pipeline.screening import visual

CLIP = SHARED_CLIPS / "liveportrait_d18_face.mp4"  # 7 s, one face: upper body not visible


def _without_sheet(results):
    out = []
    for r in results:
        details = {k: v for k, v in r.details.items() if k not in ("contact_sheet", "contact_sheet_error")}
        out.append((r.rule, r.passed, list(r.reasons), details))
    return out


def test_thumbnails_do_not_change_the_rules_and_a_bad_directory_is_recorded(tmp_path):
    config = visual.VisualConfig()
    plain = visual.screen_visual(CLIP, "c" * 64, config)
    with_sheet = visual.screen_visual(CLIP, "c" * 64, config, thumbnails=tmp_path / "thumbs")
    assert _without_sheet(plain) == _without_sheet(with_sheet)
    sheet = next(r for r in with_sheet if r.rule == "one_dancer").details["contact_sheet"]
    # fanned out by clip id (pipeline.core.tables.thumbnail_name): thumbs/cc/cccccccccccccccc.fNN.jpg
    files = sorted(p.relative_to(tmp_path / "thumbs").as_posix() for p in (tmp_path / "thumbs").rglob("*.jpg"))
    assert files == sorted(f["file"] for f in sheet["frames"]) and 2 <= len(files) <= 6
    assert all(f.startswith("cc/cccccccccccccccc.f") for f in files)
    for frame in sheet["frames"]:
        assert max(frame["size"]) <= 256 and frame["size"][1] <= 144
        assert frame["joints"] is None or len(frame["joints"]) == 16
    # the thresholds each rule compared with are recorded beside its measurements
    upper = next(r for r in with_sheet if r.rule == "upper_body_visible")
    assert upper.details["thresholds"]["joint_confidence"] == config.joint_confidence

    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    failed = visual.screen_visual(CLIP, "c" * 64, config, thumbnails=blocked)
    assert _without_sheet(failed) == _without_sheet(plain)
    assert "contact_sheet_error" in next(r for r in failed if r.rule == "one_dancer").details


def test_skeleton_drawing_survives_odd_joints():
    image = np.zeros((60, 40, 3), np.uint8)
    joints = np.full((16, 3), np.nan)
    joints[0] = [10, 20, 0.9]  # drawn
    joints[1] = [1e12, -1e12, 0.9]  # far outside: a limb towards it, no crash
    joints[2] = [30, 30, 0.1]  # below the confidence threshold: not drawn
    visual.draw_skeleton(image, joints, visual.MAIN_COLOUR, 0.5)
    assert tuple(image[20, 10]) == visual.MAIN_COLOUR
    assert tuple(image[30, 30]) == (0, 0, 0)


def test_sheet_includes_the_frame_with_most_people():
    sheet = visual.ContactSheet(count=3)
    for t, counted in enumerate([1, 1, 2, 1, 1, 1, 1, 1, 1]):
        sheet.add(float(t), np.zeros((20, 20, 3), np.uint8), [], counted)
    picks = sheet.chosen()
    assert len(picks) == 3 and 2 in picks and 8 in picks  # the brief second person, and the clip's end
    evenly = visual.ContactSheet(count=3)
    for t in range(9):
        evenly.add(float(t), np.zeros((20, 20, 3), np.uint8), [], 1)
    assert evenly.chosen() == [0, 4, 8]
