"""Action guidance and dance tips on real keypoints and the real clip they belong to."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from models import build_model, feedback
from models.data import skeleton_tensor
from tests import realdata
from tests.support.keypoints import load_keypoint_file

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
            items.append({"pose": x, "pose_mask": m, "challenge": ch})
    tips = feedback.dance_tips(model, items)
    assert sorted(tips) == ["dance", "squats"]
    t = tips["dance"]
    assert t["temporal"].shape == (16, 16) and t["overall"].shape == (16,)
    assert np.allclose(t["overall"], t["temporal"].mean(axis=0))  # every frame valid in both clips
    written = feedback.save_tips(tmp_path, tips)
    assert (tmp_path / "tips_overall.png").stat().st_size > 1000 and len(written) == 3
    assert np.load(tmp_path / "tips_overall.npy").shape == (2, 16)


def test_dance_tips_leave_padding_and_invalid_frames_out() -> None:
    """Paper eq. 9: the average runs over each clip's own valid frames. The same 16 real frames
    alone, padded to 24 with 8 empty frames, or with 4 frames marked invalid, give the tips of
    those valid frames (worked out here from the guidance directly)."""
    model = _model()
    rows = load_keypoint_file(SHARED / "keypoints" / "tfjs_pose_1.json")[10:26]
    x16, m16 = skeleton_tensor(rows, np.ones(16, bool), 16)
    x24, m24 = skeleton_tensor(rows, np.ones(16, bool), 24)  # 8 padded frames at the end
    assert m24.sum() == 16
    alone = feedback.dance_tips(model, [{"pose": x16, "pose_mask": m16, "challenge": "d"}])["d"]
    padded = feedback.dance_tips(model, [{"pose": x24, "pose_mask": m24, "challenge": "d"}])["d"]
    mag = np.linalg.norm(feedback.guidance(model, x16, m16), axis=-1)  # (16, 16)
    np.testing.assert_allclose(alone["overall"], mag.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(padded["overall"], mag.mean(axis=0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(padded["temporal"][:16], mag, rtol=1e-4, atol=1e-7)
    assert not padded["temporal"][16:].any()
    # two clips, the second with frames 0-3 invalid: frame t averages the clips valid at t
    holes = m16.copy()
    holes[:4] = False
    items = [
        {"pose": x16, "pose_mask": m16, "challenge": "d"},
        {"pose": x16 * holes[None, :, None], "pose_mask": holes, "challenge": "d"},
    ]
    both = feedback.dance_tips(model, items)["d"]
    mag2 = np.linalg.norm(feedback.guidance(model, *(items[1][k] for k in ("pose", "pose_mask"))), axis=-1)
    np.testing.assert_allclose(both["temporal"][:4], mag[:4], rtol=1e-5)  # only the first clip there
    np.testing.assert_allclose(both["temporal"][4:], (mag[4:] + mag2[4:]) / 2, rtol=1e-5)
    overall = (mag.mean(axis=0) + mag2[4:].mean(axis=0)) / 2
    np.testing.assert_allclose(both["overall"], overall, rtol=1e-5)
    assert int(both["clips"]) == 2


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> Path:
    return realdata.session_release(tmp_path_factory)


@pytest.mark.parametrize("model", ["psgcn", "multimodal"])
def test_vdv_feedback_from_a_release_checkpoint(model: str, release: Path, tmp_path: Path) -> None:
    """``vdv feedback`` on a PSGCN and on a fused model (through its skeleton stream), trained
    on the packaged release; guidance of a release clip and dance tips per challenge."""
    from cli import main
    from models import load_checkpoint

    run = realdata.train_on_release(release, tmp_path / "run", "--model", model, "--modalities", "pose")
    cid, _, rows, valid = realdata.windows()[3]
    rc = main(
        ["feedback", "--source", str(release), "--checkpoint", str(run / "checkpoint.pt")]
        + ["--out", str(tmp_path / "fb"), "--clip", cid, "--tips"]
    )
    assert rc == 0
    grad = np.load(tmp_path / "fb" / "guidance.npy")
    assert grad.shape == (realdata.WINDOW, 16, 2) and np.abs(grad[valid]).sum() > 0
    fused, _ = load_checkpoint(run / "checkpoint.pt")
    stream = fused.streams["pose"] if model == "multimodal" else fused
    assert feedback.skeleton_model(fused) is (stream if model == "multimodal" else fused)
    expected, _, _ = feedback.clip_guidance(stream, rows, valid)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-9)
    overall = np.load(tmp_path / "fb" / "tips_overall.npy")
    assert overall.shape == (2, 16) and (overall > 0).all()
    assert (tmp_path / "fb" / "tips_challenge-taichi_temporal.png").is_file()
