"""Action guidance and dance tips on real keypoints and the real clip they belong to."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch

from models import build_model, feedback
from models.data import load_keypoint_file, skeleton_tensor

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _model():
    torch.manual_seed(0)
    return build_model("psgcn", channels=(16, 32, 64), dropout=0.0).eval()


def test_guidance_is_the_gradient_of_the_score() -> None:
    model = _model().double()  # double precision for a tight finite-difference check
    rows = load_keypoint_file(SHARED / "keypoints" / "tfjs_pose_1.json")
    x, mask = skeleton_tensor(rows, np.ones(len(rows), bool), 24)
    x = x.astype(np.float64)
    g = feedback.guidance(model, x, mask)
    assert g.shape == (24, 16, 2) and np.abs(g).sum() > 0
    # central finite difference on one joint coordinate matches the analytic gradient
    t, v, c, eps = 5, 10, 0, 1e-6
    plus, minus = x.copy(), x.copy()
    plus[c, t, v] += eps
    minus[c, t, v] -= eps
    with torch.no_grad():
        s = [float(model(torch.from_numpy(a)[None], torch.from_numpy(mask)[None]).score) for a in (plus, minus)]
    assert np.isclose((s[0] - s[1]) / (2 * eps), g[t, v, c], rtol=1e-3, atol=1e-8)


def test_guidance_saved_and_drawn_on_the_real_clip(tmp_path: Path) -> None:
    model = _model()
    rows = load_keypoint_file(SHARED / "keypoints" / "tfjs_pose_1.json")[:30]  # 1 s at 30 fps
    grad, joints, scale = feedback.clip_guidance(model, rows, np.ones(len(rows), bool))
    assert grad.shape == (30, 16, 2) and scale > 10  # pixels per torso length
    feedback.save_guidance(tmp_path, grad, joints, fps=30.0)
    assert np.array_equal(np.load(tmp_path / "guidance.npy"), grad)
    table = pq.read_table(tmp_path / "guidance.parquet")
    assert table.num_rows == 30 * 16 and table.column("joint")[9].as_py() == "head-top"
    out = feedback.render(SHARED / "clips" / "tfjs_pose_1.mp4", tmp_path, grad, joints, 30.0, frames=(0, 12))
    assert out["frames"] == 30 and len(out["pngs"]) == 2
    img = cv2.imread(out["pngs"][1])
    assert img.shape == (576, 576, 3)
    # the arrows are drawn in red (BGR (0, 0, 255)): present on the frame
    assert ((img[..., 2] > 200) & (img[..., 0] < 60) & (img[..., 1] < 60)).sum() > 20
    import av

    with av.open(out["mp4"]) as c:
        assert sum(1 for _ in c.decode(video=0)) == 30


def test_dance_tips_per_challenge(tmp_path: Path) -> None:
    model = _model()
    items = []
    for name, ch in (("tfjs_pose_1.json", "dance"), ("tfjs_pose_squats.full.json", "squats")):
        rows = load_keypoint_file(SHARED / "keypoints" / name)
        for start in (0, 20):
            x, m = skeleton_tensor(rows[start : start + 40], np.ones(40, bool), 16)
            items.append({"skeletal": x, "skeletal_mask": m, "challenge": ch})
    tips = feedback.dance_tips(model, items)
    assert sorted(tips) == ["dance", "squats"]
    t = tips["dance"]
    assert t["temporal"].shape == (16, 16) and t["overall"].shape == (16,)
    assert np.allclose(t["overall"], t["temporal"].mean(axis=0))
    written = feedback.save_tips(tmp_path, tips)
    assert (tmp_path / "tips_overall.png").stat().st_size > 1000 and len(written) == 3
    assert np.load(tmp_path / "tips_overall.npy").shape == (2, 16)
