"""ViBe (pipeline.vibe): the published rules, vectorised, seeded; windows of SPEC section 4."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.vibe import ViBe, ViBeParams, window_backgrounds, window_ends, write_backgrounds


def _scene(h: int = 48, w: int = 64, seed: int = 1) -> np.ndarray:
    """A static background: smooth colour gradients plus mild texture (RGB uint8), like a wall."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    smooth = np.stack([80 + 2 * xs, 90 + 2 * ys, 120 + xs + ys], axis=-1)
    return np.clip(smooth + rng.integers(-4, 5, size=(h, w, 3)), 0, 255).astype(np.uint8)


def _with_block(background: np.ndarray, x: int, y: int = 10, size: int = 12) -> np.ndarray:
    frame = background.copy()
    frame[y : y + size, x : x + size] = (250, 10, 10)  # a saturated red "dancer"
    return frame


def test_matches_count_samples_within_l1_radius():
    rng = np.random.default_rng(0)
    model = ViBe(_scene(9, 7), ViBeParams(), seed=0)
    model.samples = rng.integers(0, 256, size=model.samples.shape, dtype=np.uint8)
    frame = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    # reference: the rule written out per pixel and per sample
    expected = np.zeros((9, 7), dtype=int)
    for y in range(9):
        for x in range(7):
            for i in range(20):
                d = np.abs(model.samples[:, i, y, x].astype(int) - frame[y, x].astype(int)).sum()
                expected[y, x] += d <= 60
    got = model.matches(np.ascontiguousarray(frame.transpose(2, 0, 1)))
    np.testing.assert_array_equal(got, expected)


def test_initialisation_takes_values_from_the_8_neighbourhood():
    first = _scene(12, 10)
    model = ViBe(first, seed=3)
    h, w = first.shape[:2]
    padded = np.pad(first, ((1, 1), (1, 1), (0, 0)), mode="edge")
    neighbours = np.stack(
        [
            padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if (dy, dx) != (0, 0)
        ]
    )  # (8, H, W, 3)
    samples = model.samples.transpose(1, 2, 3, 0)  # (N, H, W, 3)
    found = (samples[:, None] == neighbours[None]).all(-1).any(1)  # each sample equals some neighbour
    assert found.all()
    assert model.samples.shape == (3, 20, h, w)


def test_moving_object_is_foreground_and_left_out_of_the_background():
    background = _scene()
    model = ViBe(background, seed=0)
    for step in range(40):
        frame = _with_block(background, x=2 + step)
        mask = model.apply(frame)
    block = np.zeros(mask.shape, dtype=bool)
    block[10:22, 41:53] = True
    assert mask[block].all()  # the object is foreground where it stands
    assert mask[~block].mean() < 0.01  # and the static scene is not
    # conservative update: the object's colours never entered the model, so the image is the scene
    diff = np.abs(model.background().astype(int) - background.astype(int)).sum(-1)
    assert diff.max() <= 3 * 20


def test_background_absorbs_the_scene_at_the_published_rate():
    # with subsampling 16 a background pixel replaces one of its samples in about 1/16 of the
    # frames (own update), plus as often through a neighbour: measure that the rate is right
    background = _scene()
    model = ViBe(background, seed=0)
    before = model.samples.copy()
    shifted = np.clip(background.astype(int) + 5, 0, 255).astype(np.uint8)  # still matches (L1 15 <= 60)
    frames = 64
    for _ in range(frames):
        model.apply(shifted)
    changed = (model.samples != before).any(0).mean()  # share of samples overwritten
    # expected replacements per sample: 2 * frames / (16 * 20) = 0.4 -> share 1 - exp(-0.4) ~ 0.33
    assert 0.25 < changed < 0.41


def test_seeded_and_deterministic():
    frames = [_with_block(_scene(), x=2 + i) for i in range(30)]
    a = list(window_backgrounds(frames, seed=5))
    b = list(window_backgrounds(frames, seed=5))
    c = list(window_backgrounds(frames, seed=6))
    assert [e for e, _ in a] == [11, 23]
    for (_, x), (_, y) in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any((x != y).any() for (_, x), (_, y) in zip(a, c, strict=True))


def test_each_window_is_a_fresh_model_over_its_own_frames():
    rng = np.random.default_rng(7)
    base = _scene(24, 32)
    frames = [
        np.clip(base.astype(int) + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8) for _ in range(150)
    ]
    got = dict(window_backgrounds(frames, window=120, hop=12, seed=2))
    assert sorted(got) == window_ends(150) == list(range(11, 150, 12))
    # the window ending at 131 covers frames 12..131 and nothing else
    model = ViBe(frames[12], seed=(2, 12))
    for frame in frames[13:132]:
        model.apply(frame)
    np.testing.assert_array_equal(got[131], model.background())
    # a window near the clip start is truncated at frame 0
    model = ViBe(frames[0], seed=(2, 0))
    for frame in frames[1:36]:
        model.apply(frame)
    np.testing.assert_array_equal(got[35], model.background())


def test_bad_parameters_and_frames_are_refused():
    with pytest.raises(ValueError):
        ViBeParams(radius=100)
    with pytest.raises(ValueError):
        ViBeParams(min_matches=0)
    with pytest.raises(ValueError):
        list(window_backgrounds([_scene()], window=6, hop=12))
    model = ViBe(_scene())
    with pytest.raises(ValueError):
        model.apply(_scene(10, 10))
    with pytest.raises(ValueError):
        model.apply(_scene().astype(np.float32))


def test_write_backgrounds_png(tmp_path):
    import cv2

    image = _scene()
    paths = write_backgrounds([(0.44, image), (0.92, image)], tmp_path / "bg", "clip")
    assert [p.name for p in paths] == ["clip.0000440ms.png", "clip.0000920ms.png"]
    back = cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, image)
