"""The learning check (bench/learning_check.py) on real skeletons.

These tests pin what the task guarantees: the follower limbs replay the leader's movement,
mirrored and late; the two score levels are the same window played forwards and backwards, so
they hold the same multiset of frames and the same speeds, and per-frame or pooled statistics
(the per-frame baseline, motion energy) cannot tell them apart; folds hold out whole source
clips. The learning test is fold 0 of the bench at a smaller budget: PSGCN (the small-data
profile, narrower) trained on real skeletons of six clips and scored on three it never saw, next
to the per-frame baseline.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location("learning_check", ROOT / "bench" / "learning_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sources(lc) -> dict[str, np.ndarray]:
    return lc.load_keypoint_sources()


def test_keypoint_sources_are_the_real_files(sources) -> None:
    assert {k: v.shape for k, v in sources.items()} == {
        "tfjs_pose_1:keypoints": (120, 16, 3),
        "tfjs_pose_squats:keypoints": (65, 16, 3),
    }


def test_canon_replays_the_leader_mirrored_and_late(lc, sources) -> None:
    seq = sources["tfjs_pose_1:keypoints"]
    lag, start, frames = 12, 20, 32
    win = lc.canon(seq, start, lag, frames, "left")
    past = seq[start - lag : start - lag + frames]
    # right elbow relative to the right shoulder = the left one's, mirrored, `lag` frames earlier
    rel_follow = win[:, 11, :2] - win[:, 12, :2]
    rel_lead = past[:, 14, :2] - past[:, 13, :2]
    np.testing.assert_allclose(rel_follow, rel_lead * [-1.0, 1.0], atol=1e-5)
    # the leader side, trunk and head are the real frames, untouched
    keep = [3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 2]
    np.testing.assert_array_equal(win[:, keep], seq[start : start + frames][:, keep])
    with pytest.raises(ValueError, match="outside"):
        lc.canon(seq, 5, lag, frames)  # not enough past frames before the window


def test_the_two_levels_share_frames_and_speeds(lc, sources) -> None:
    """Score 1 and score 0 of a window: the same frames (as a multiset), the same sorted speeds
    of every joint, hence identical pooled per-frame features and motion energy."""
    task = lc.Task()
    seq = sources["tfjs_pose_1:keypoints"]
    for reverse_source in (False, True):
        one = lc.lead_window(seq, 30, task, True, reverse_source)
        zero = lc.lead_window(seq, 30, task, False, reverse_source)
        assert np.abs(one - zero).max() > 0.05  # the levels do differ, in order
        key = lambda w: sorted(map(bytes, np.ascontiguousarray(w)))  # noqa: E731 - frames as a multiset
        assert key(one) == key(zero)
        speed = lambda w: np.sort(np.linalg.norm(np.diff(w[..., :2], axis=0), axis=-1), axis=0)  # noqa: E731
        np.testing.assert_allclose(speed(one), speed(zero), atol=1e-6)
        x = np.stack([one, zero]).transpose(0, 3, 1, 2)  # (2, 3, T, 16)
        np.testing.assert_allclose(lc.frame_features(x)[0], lc.frame_features(x)[1], atol=1e-6)
        np.testing.assert_allclose(lc.motion_energy(x)[0], lc.motion_energy(x)[1], atol=1e-6)
    # in score 1 the right wrist (relative to its shoulder) is the mirrored left one 12 frames before
    one = lc.lead_window(seq, 30, task, True)
    past = seq[30 - task.lag : 30 - task.lag + task.frames]
    np.testing.assert_allclose(
        one[:, 10, :2] - one[:, 12, :2], (past[:, 15, :2] - past[:, 13, :2]) * [-1, 1], atol=1e-5
    )


def test_a_flipped_window_has_the_other_side_leading(lc, sources) -> None:
    """The flip swaps the sides: in a flipped score-1 window the *left* limbs replay the right
    ones, mirrored, ``lag`` frames later, as in a score-0 window; so its score is 0."""
    task = lc.Task()
    seq = sources["tfjs_pose_1:keypoints"]
    one = lc.lead_window(seq, 30, task, True)
    flipped = lc.flip(one)
    lag = task.lag
    # left wrist relative to the left shoulder now = the right one's, mirrored, `lag` frames before
    rel_left = flipped[lag:, 15, :2] - flipped[lag:, 13, :2]
    rel_right = flipped[:-lag, 10, :2] - flipped[:-lag, 12, :2]
    np.testing.assert_allclose(rel_left, rel_right * [-1.0, 1.0], atol=1e-4)
    zero = lc.lead_window(seq, 30, task, False)  # the score-0 level: the same relation holds
    np.testing.assert_allclose(
        zero[lag:, 15, :2] - zero[lag:, 13, :2], (zero[:-lag, 10, :2] - zero[:-lag, 12, :2]) * [-1, 1], atol=1e-4
    )
    np.testing.assert_allclose(lc.flip(flipped), one, atol=1e-5)  # a flip undoes itself
    x, y = lc.sample_batch([seq], 256, task, np.random.default_rng(1))
    assert 0.4 < y.mean() < 0.6


def test_a_grafted_limb_moves_as_the_donor_s_and_the_canon_copies_it(lc, sources) -> None:
    seq, donor = sources["tfjs_pose_1:keypoints"][:44], sources["tfjs_pose_squats:keypoints"][:44]
    out = lc.graft(seq, donor, lc.L_ARM)
    # the left elbow and wrist sit where the donor's do, relative to the left shoulder (13)
    for joint in (14, 15):
        np.testing.assert_allclose(
            out[:, joint, :2] - out[:, 13, :2], donor[:, joint, :2] - donor[:, 13, :2], atol=1e-5
        )
    np.testing.assert_array_equal(out[:, [14, 15], 2], donor[:, [14, 15], 2])  # with their confidence
    others = [j for j in range(16) if j not in (14, 15)]
    np.testing.assert_array_equal(out[:, others], seq[:, others])  # the shoulder and the rest: seq's
    assert np.abs(out[:, 15, :2] - seq[:, 15, :2]).max() > 0.1  # the wrist did move elsewhere
    # the canon built on the grafted body: the right elbow replays the donor's left one, 12 frames late
    win = lc.canon(out, 12, 12, 32)
    np.testing.assert_allclose(
        win[:, 11, :2] - win[:, 12, :2], (donor[:32, 14, :2] - donor[:32, 13, :2]) * [-1.0, 1.0], atol=1e-5
    )
    x, y = lc.sample_batch(list(sources.values()), 64, lc.Task(graft=1.0), np.random.default_rng(0))
    assert x.shape == (64, 3, 32, 16) and set(y.tolist()) == {0.0, 1.0}


def test_a_tempo_change_interpolates_between_real_frames(lc, sources) -> None:
    seq = sources["tfjs_pose_1:keypoints"]  # (120, 16, 3)
    np.testing.assert_array_equal(lc.time_warp(seq, 1.0), seq)
    np.testing.assert_allclose(lc.time_warp(seq, 2.0), seq[::2], atol=1e-6)  # twice as fast
    slow = lc.time_warp(seq, 0.5)  # half as fast: the real frames, and midpoints between them
    assert len(slow) == 2 * len(seq) - 1
    np.testing.assert_allclose(slow[::2], seq, atol=1e-6)
    np.testing.assert_allclose(slow[1::2], (seq[:-1] + seq[1:]) / 2, atol=1e-6)


def test_training_batches_hold_both_levels(lc, sources) -> None:
    task = lc.Task()
    x, y = lc.sample_batch(list(sources.values()), 64, task, np.random.default_rng(0))
    assert x.shape == (64, 3, task.frames, 16) and x.dtype == np.float32
    assert set(y.tolist()) == {0.0, 1.0}
    xt, yt, names = lc.test_set({"a": sources["tfjs_pose_squats:keypoints"]}, task)
    starts = len(range(task.lag, 65 - task.frames + 1, task.test_stride))
    assert len(yt) == 4 * starts and yt.mean() == 0.5  # both source directions, both levels


def test_folds_hold_out_whole_clips(lc, sources) -> None:
    assert lc.clip_of("tfjs_pose_1:keypoints") == lc.clip_of("tfjs_pose_1") == "tfjs_pose_1"
    folds = lc.folds_of({"a": 0, "b:keypoints": 0, "b": 0, "c": 0}, 2)
    assert sorted(c for f in folds for c in f) == ["a", "b", "c"]  # b's pose run and keypoints together
    res = lc.run_fold(
        sources,
        ["tfjs_pose_squats"],
        lc.Task(frames=24, lag=8),
        lc.Training(epochs=1, epoch_variants=64, channels=(8, 16, 32), threads=1),
    )
    assert res["test_sources"] == ["tfjs_pose_squats:keypoints"]
    assert res["train_sources"] == ["tfjs_pose_1:keypoints"]
    assert res["n_test"] == len(range(8, 65 - 24 + 1, 4)) * 4
    # the baselines see each pair of levels as one input: exactly no rank correlation
    assert res["per_frame_svr_src"] == pytest.approx(0.0, abs=1e-9)
    assert res["svr_energy_src"] == pytest.approx(0.0, abs=1e-9)
    assert abs(res["chance_src_mean"]) < 3 * res["chance_src_std"]


@pytest.fixture(scope="module")
def pose_sources(lc, tmp_path_factory) -> dict[str, np.ndarray]:
    """BlazePose skeletons of the real clips of the bench (pipeline.modalities.pose) and the keypoint files."""
    return {**lc.extract_sources(tmp_path_factory.mktemp("learning-check")), **lc.load_keypoint_sources()}


# The test's budget: fold 0 of the bench with the small-data profile, PSGCN at half the bench's
# widths (an eighth of the paper's) for 110 epochs of 512 windows: a quarter of the bench's CPU.
TEST_CHANNELS = (8, 16, 32)
TEST_EPOCHS = 110


@pytest.mark.slow
def test_psgcn_learns_who_leads_on_held_out_clips(lc, pose_sources) -> None:
    """Train PSGCN on six real clips, score three clips it never saw (their pose runs and keypoint
    files), next to the two baselines. The bench's budget (widths 16, 32, 64; 160 epochs) costs
    about 11 minutes of one core, so the test trains a narrower PSGCN for fewer epochs: measured
    on this CPU, seed 0 scores 0.838 (0.652 at 80 epochs, 0.698 at 100); both baselines 0.000.
    Seed 2 gets there too (0.64 at 70 epochs); seed 1 is still on the plateau at 120 epochs in
    this narrow network (docs/RESULTS.md "Learning check": every run starts on a plateau where
    PSGCN predicts one value; the bench's wider network leaves it on all three seeds). The test
    pins seed 0: a run with one torch thread is repeatable, and a broken model, loss or graph
    stays on the plateau (SRC near 0, the bound is 0.5)."""
    held = lc.folds_of(pose_sources, 3)[0]
    assert held == ["stgcn_clean_and_jerk", "tfjs_pose_1", "tfjs_pose_squats"]
    cfg = lc.Training(settings="small-data", seed=0, threads=1, channels=TEST_CHANNELS, epochs=TEST_EPOCHS)
    res = lc.run_fold(pose_sources, held, lc.Task(), cfg)
    print({k: res[k] for k in ("psgcn_src", "psgcn_src_per_source", "per_frame_svr_src", "svr_energy_src")})
    assert len(res["train_sources"]) == 6 and not set(map(lc.clip_of, res["train_sources"])) & set(held)
    # with two score levels the best possible SRC is sqrt(3) / 2 = 0.866
    assert res["psgcn_src"] >= 0.5, res["psgcn_src"]
    assert res["per_frame_svr_src"] <= 0.15 and res["svr_energy_src"] <= 0.15
    assert res["psgcn_src"] > res["chance_src_mean"] + 4 * res["chance_src_std"]


def test_a_fold_is_summarised_over_its_seeds(lc) -> None:
    assert lc.seeds_of(0, 3) == [0, 1, 2] and lc.seeds_of(2, 3) == [6, 7, 8]  # disjoint, fixed
    target = [1.0, 0.0, 1.0, 0.0]
    runs = [
        {"fold": 1, "settings": "s", "test_sources": ["a"], "seed": 3, "psgcn_src": 0.2, "psgcn_train_src": 0.01, "pred": [0.9, 0.1, 0.2, 0.8],
         "target": target, "per_frame_svr_src": 0.0, "svr_energy_src": 0.1, "chance_src_mean": 0.0, "chance_src_std": 0.1},
        {"fold": 1, "settings": "s", "test_sources": ["a"], "seed": 4, "psgcn_src": 0.6, "psgcn_train_src": 0.8, "pred": [0.5, 0.4, 0.9, 0.1],
         "target": target, "per_frame_svr_src": 0.0, "svr_energy_src": 0.3, "chance_src_mean": 0.0, "chance_src_std": 0.1},
    ]  # fmt: skip
    out = lc.summarise(runs)
    assert out["seeds"] == [3, 4] and out["psgcn_src_per_seed"] == [0.2, 0.6]
    assert out["psgcn_train_src_per_seed"] == [0.01, 0.8]
    assert out["psgcn_src_mean"] == pytest.approx(0.4)
    assert (out["psgcn_src_min"], out["psgcn_src_max"]) == (0.2, 0.6)
    assert out["svr_energy_src"] == pytest.approx(0.2)
    # mean prediction (0.7, 0.25, 0.55, 0.45): ranks 4, 1, 3, 2 against levels 1, 0, 1, 0, so the
    # two score-1 items hold ranks 4 and 3: Pearson of the ranks with the levels is 2 / sqrt(5)
    assert out["psgcn_ensemble_src"] == pytest.approx(2 / 5**0.5)
