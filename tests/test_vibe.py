"""ViBe (pipeline.modalities.vibe): the published rules, vectorised, seeded; person masking; windows of SPEC section 4."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.modalities.vibe import NEIGHBOURS, ViBe, ViBeParams, WindowBackgrounds, write_backgrounds
from pipeline.modalities.vibe_torch import _DIRECTION, ViBeBank, frame_key, vibe_model


class TorchModel:
    """The torch ViBe (pipeline.modalities.vibe_torch) behind numpy ViBe's interface, on its own bank."""

    def __init__(self, first, params: ViBeParams | None = None, seed=0, exclude=None):
        self.bank = ViBeBank(params or ViBeParams(), seed if isinstance(seed, int) else 0, "cpu")
        self.slot = self.bank.open()
        self.resets = 0
        self.apply(first, exclude)

    def apply(self, frame, exclude=None):
        exclude = np.zeros(frame.shape[:2], dtype=bool) if exclude is None else exclude
        foreground, self.resets = self.bank.step([self.slot], [(frame, exclude)])[0]
        return foreground

    @property
    def samples(self) -> np.ndarray:
        return self.bank.samples(self.slot).numpy().copy()


# the behaviour tests hold for both implementations
MODELS = pytest.mark.parametrize("ViBe", [ViBe, TorchModel], ids=["numpy", "torch"])


def _scene(h: int = 48, w: int = 64, seed: int = 1) -> np.ndarray:
    """A static background: smooth colour gradients plus mild texture (RGB uint8), like a wall."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    smooth = np.stack([80 + 2 * xs, 90 + 2 * ys, 120 + xs + ys], axis=-1)
    return np.clip(smooth + rng.integers(-4, 5, size=(h, w, 3)), 0, 255).astype(np.uint8)


def _block_mask(shape: tuple[int, int], x: int, y: int = 10, size: int = 12) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y : y + size, x : x + size] = True
    return mask


def _distances(model, colour: np.ndarray) -> np.ndarray:
    """L1 distance of every sample of ``model`` to ``colour`` (3,) or (H, W, 3): (N, H, W)."""
    colour = np.asarray(colour, dtype=int)
    colour = colour.transpose(2, 0, 1)[:, None] if colour.ndim == 3 else colour[:, None, None, None]
    return np.abs(model.samples.astype(int) - colour).sum(0)


def _windows(frames, masks=None, **kwargs) -> list:
    """Every window image of ``frames`` (person ``masks``, None: none) through WindowBackgrounds.push."""
    windows = WindowBackgrounds(**kwargs)
    masks = [None] * len(frames) if masks is None else masks
    out = [windows.push(frame, mask) for frame, mask in zip(frames, masks, strict=True)]
    return [o for o in out if o is not None]


def _with_block(background: np.ndarray, x: int, y: int = 10, size: int = 12) -> np.ndarray:
    frame = background.copy()
    frame[_block_mask(background.shape[:2], x, y, size)] = (250, 10, 10)  # a saturated red "dancer"
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


@MODELS
def test_moving_object_is_foreground_and_left_out_of_the_model(ViBe):
    background = _scene()
    model = ViBe(background, seed=0)
    for step in range(40):
        frame = _with_block(background, x=2 + step)
        mask = model.apply(frame)
    block = _block_mask(mask.shape, 41)
    assert mask[block].all()  # the object is foreground where it stands
    assert mask[~block].mean() < 0.01  # and the static scene is not
    # conservative update: the object's colours never entered the model (the scene's colours all
    # lie farther than 80 from its red, so a sample within the radius of red can only be the object's)
    assert _distances(model, (250, 10, 10)).min() > 3 * 20


@MODELS
def test_background_absorbs_the_scene_at_the_published_rate(ViBe):
    # with subsampling 16 a background pixel replaces one of its samples in about 1/16 of the
    # frames (own update), plus as often through a neighbour: measure that the rate is right
    background = _scene()
    model = ViBe(background, seed=0)
    before = model.samples.copy()
    shifted = np.clip(background.astype(int) + 5, 0, 255).astype(np.uint8)  # still matches (L1 15 <= 60)
    for _ in range(64):
        model.apply(shifted)
    changed = (model.samples != before).any(0).mean()  # share of samples overwritten
    # expected replacements per sample: 2 * 64 / (16 * 20) = 0.4 -> share 1 - exp(-0.4) ~ 0.33
    assert 0.25 < changed < 0.41


@MODELS
def test_a_still_person_under_the_mask_is_never_absorbed(ViBe):
    # without the mask, an object that stands still is absorbed: ViBe calls it background
    background = _scene()
    still = _with_block(background, x=20)
    person = _block_mask(background.shape[:2], 20)
    plain = ViBe(still, ViBeParams(subsampling=1), seed=0)
    for _ in range(30):
        plain.apply(still)
    assert not plain.apply(still)[person].any()
    # with it, the object's pixels keep the scene's samples they were re-drawn from, and no
    # propagation writes the object into them: once it leaves, they match the scene at once
    masked = ViBe(background, ViBeParams(subsampling=1), seed=0)
    for _ in range(30):
        masked.apply(still, exclude=person)
    assert not masked.apply(background)[person].any()


@MODELS
def test_pixels_first_seen_under_the_mask_are_redrawn_when_uncovered(ViBe):
    # the model starts with the person in it (the clip's first frame); when the person leaves,
    # the uncovered pixels take the scene's values instead of leaving a ghost
    background = _scene()
    start = _block_mask(background.shape[:2], 5)
    model = ViBe(_with_block(background, x=5), seed=0, exclude=start)
    ghost = ViBe(_with_block(background, x=5), seed=0)  # the same start without the mask
    moved = _with_block(background, x=40)
    now = _block_mask(background.shape[:2], 40)
    fg = model.apply(moved, exclude=now)
    assert not fg[start].any()  # no ghost where the person was
    inner = _block_mask(background.shape[:2], 6, 11, 10)  # away from the block's edge
    assert ghost.apply(moved)[inner].all()  # plain ViBe's ghost
    # every sample there was re-drawn from the scene (neighbours within L1 30 of each other)
    assert _distances(model, background)[:, start].max() <= 3 * 20


@MODELS
def test_a_global_change_resets_the_model(ViBe):
    background = _scene()
    model = ViBe(background, seed=0)
    other = np.ascontiguousarray(background[::-1, ::-1])  # a camera that turned
    fg = model.apply(other)
    assert model.resets == 1 and not fg.any()
    assert not model.apply(other).any()  # the new scene is the model now
    never = ViBe(background, ViBeParams(reset_share=1.0), seed=0)
    assert never.apply(other).mean() > 0.5 and never.resets == 0


def test_the_torch_bank_steps_clips_independently_and_reproducibly():
    """Two clips stepped together give what each gives alone, and a second run the same."""
    background, other = _scene(), _scene(seed=5)

    def run(clips):
        bank = ViBeBank(ViBeParams(), 0, "cpu")
        slots = [bank.open() for _ in clips]
        out = []
        for step in range(20):
            frames = [(_with_block(b, x=2 + step), np.zeros(b.shape[:2], bool)) for b in clips]
            out.append([fg for fg, _ in bank.step(slots, frames)])
        return out

    together = run([background, other])
    alone = run([background])
    again = run([background, other])
    for t, a, g in zip(together, alone, again, strict=True):
        np.testing.assert_array_equal(t[0], a[0])
        np.testing.assert_array_equal(t[0], g[0])
        np.testing.assert_array_equal(t[1], g[1])


def test_a_clip_is_bit_identical_alone_or_batched_whatever_joins_or_leaves():
    """Draws are keyed on the clip's seed and frame index only: a clip stepped with others of its
    size and of another size, joining later and leaving earlier (so it sits in another row of its
    pool, next to its neighbours' rows or with a gap between them), gives exactly the foregrounds
    and model it gives alone."""
    background, other, small = _scene(), _scene(seed=5), _scene(24, 40, seed=7)

    def run(with_others: bool):
        bank = ViBeBank(ViBeParams(subsampling=2), 3, "cpu")
        early = [bank.open(), bank.open(), bank.open()] if with_others else []  # rows 0, 1 and a small one
        mine, out = None, []
        for step in range(16):
            slots, items = [], []
            if with_others and step < 10:
                slots += [early[0], early[2]] + ([early[1]] if step < 7 else [])
                items += [(_with_block(other, x=step), _block_mask(other.shape[:2], step)), (small, None)]
                items += [(_with_block(other, x=step + 3), None)] if step < 7 else []
            if with_others and step == 7:
                bank.close(early[1])  # from here on rows 0 and 2 step: a gap between them
            if step == 4:
                mine = bank.open()
            if mine is not None:
                slots.append(mine)
                items.append((_with_block(background, x=2 * step), _block_mask(background.shape[:2], 2 * step)))
            items = [(f, np.zeros(f.shape[:2], bool) if m is None else m) for f, m in items]
            if with_others and step == 10:
                for slot in early:
                    bank.close(slot)
            if slots:
                out.append(bank.step(slots, items)[-1][0])
        if with_others:
            assert bank.clips[mine].row == 2
        return out, bank.samples(mine).numpy().copy()

    alone, alone_model = run(False)
    batched, batched_model = run(True)
    assert len(alone) == 12 and len(batched) == 16
    for a, b in zip(alone, batched[4:], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(alone_model, batched_model)
    assert any(f.any() for f in alone)  # the block is found: the comparison is not of empty masks


def test_neighbour_writes_that_collide_have_a_defined_winner():
    """With every pixel propagating into sample 0 (one sample, subsampling 1), pixels aimed at by
    several neighbours (one row: clamped directions pile up) take the value of the largest
    source index among those aiming at them; the others keep their own update."""
    w = 16
    row = np.stack([100 + np.arange(w)] * 3, axis=-1).astype(np.uint8)[None]  # (1, w, 3), neighbours within 3
    bank = ViBeBank(ViBeParams(n_samples=1, min_matches=1, subsampling=1), 11, "cpu")
    slot = bank.open()
    free = np.zeros((1, w), dtype=bool)
    bank.step([slot], [(row, free)])
    direction = bank.draws((1, w), [frame_key(11, 1)])[0][0, _DIRECTION].numpy()
    bank.step([slot], [(row, free)])
    expected = row[0, :, 0].astype(int).copy()  # own update of every pixel
    best = np.full(w, -1)
    for x in range(w):
        dy, dx = NEIGHBOURS[direction[x]]
        target = min(max(x + dx, 0), w - 1)  # the row above and below clamp to this row
        best[target] = max(best[target], x)
    expected[best >= 0] = row[0, best[best >= 0], 0]
    assert (best >= 0).sum() < w  # some pixels receive nothing, others several writes
    np.testing.assert_array_equal(bank.samples(slot).numpy()[0, 0, 0], expected)


def test_window_backgrounds_run_on_the_torch_model():
    """WindowBackgrounds with the torch ViBe (through the process's batch server) keeps the scene."""
    background = _scene()
    windows = WindowBackgrounds(window=24, hop=12, model=vibe_model(ViBeParams(), 0, "cpu"))
    images = [
        windows.push(_with_block(background, x=2 + i), _block_mask(background.shape[:2], 2 + i)) for i in range(24)
    ]
    windows.close()
    last = images[-1]
    assert last is not None and last.end == 23
    assert np.abs(last.image.astype(int) - background.astype(int)).sum(-1).max() <= 3 * 20


def test_window_image_is_the_mean_of_the_uncovered_values():
    rng = np.random.default_rng(3)
    base = _scene(24, 32)
    frames, masks = [], []
    for i in range(60):
        noisy = np.clip(base.astype(int) + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
        frames.append(_with_block(noisy, x=(i % 20), y=6, size=8))
        masks.append(_block_mask(base.shape[:2], i % 20, 6, 8))
    windows = WindowBackgrounds(window=24, hop=12, seed=0)
    got = {}
    foregrounds = []
    for frame, mask in zip(frames, masks, strict=True):
        out = windows.push(frame, mask)
        foregrounds.append(windows.last_foreground.copy())
        if out is not None:
            got[out.end] = out
    assert sorted(got) == [11, 23, 35, 47, 59]  # one window every 12 frames
    # independent reference for the window ending at 47 (frames 24..47): plain per-pixel mean
    stack = np.stack(frames[24:48]).astype(np.float64)
    seen = ~(np.stack(masks[24:48]) | np.stack(foregrounds[24:48]))
    counts = seen.sum(0)
    expected = (stack * seen[..., None]).sum(0) / np.maximum(counts, 1)[..., None]
    image = got[47].image.astype(np.float64)
    assert (counts > 0).mean() > 0.9
    assert np.abs(image - expected)[counts > 0].max() <= 0.5 + 1e-9  # rounding only
    assert got[47].filled_share == pytest.approx((counts == 0).mean())
    # the block never leaves the 8 rows it walks on, and the scene elsewhere is the scene
    rest = np.ones(base.shape[:2], dtype=bool)
    rest[4:16] = False
    assert np.abs(image - base.astype(np.float64))[rest].mean() < 3
    # memory: one model and window / hop block sums, however long the clip
    assert len(windows.blocks) == 2


def test_pixels_covered_all_window_long_are_inpainted_and_counted():
    base = _scene()
    person = _block_mask(base.shape[:2], 20)
    frames = [_with_block(base, x=20)] * 24
    out = _windows(frames, [person] * 24, window=24, hop=12)
    last = out[-1]
    assert last.filled_share == pytest.approx(person.mean())
    # filled from the surroundings: the red block is gone, the colours are the scene's
    diff = np.abs(last.image.astype(int) - base.astype(int)).mean(-1)
    assert diff[person].mean() < 12 and last.image[person][:, 0].max() < 200
    assert diff[~person].max() <= 1


def test_seeded_and_deterministic():
    frames = [_with_block(_scene(), x=2 + i) for i in range(30)]
    a = _windows(frames, seed=5)
    b = _windows(frames, seed=5)
    assert [w.end for w in a] == [11, 23]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
    model_a, model_b = ViBe(frames[0], seed=5), ViBe(frames[0], seed=6)
    assert (model_a.samples != model_b.samples).any()


def test_bad_parameters_and_frames_are_refused():
    with pytest.raises(ValueError):
        ViBeParams(radius=100)
    with pytest.raises(ValueError):
        ViBeParams(min_matches=0)
    with pytest.raises(ValueError):
        ViBeParams(reset_share=0.0)
    with pytest.raises(ValueError):
        WindowBackgrounds(window=6, hop=12)  # shorter than a hop
    with pytest.raises(ValueError):
        WindowBackgrounds(window=30, hop=12)  # not a multiple
    model = ViBe(_scene())
    with pytest.raises(ValueError):
        model.apply(_scene(10, 10))
    with pytest.raises(ValueError):
        model.apply(_scene().astype(np.float32))
    with pytest.raises(ValueError):
        model.apply(_scene(), exclude=np.zeros((3, 3), dtype=bool))


def test_write_backgrounds_png(tmp_path):
    import cv2

    image = _scene()
    paths = write_backgrounds([(0.44, image), (0.92, image)], tmp_path / "bg", "clip")
    assert [p.name for p in paths] == ["clip.0000440ms.png", "clip.0000920ms.png"]
    back = cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, image)


def test_a_window_covered_everywhere_is_recorded_not_a_crash():
    # nothing of the scene was ever background (a person mask over the whole frame): there is
    # nothing to fill from; the image is black and its share says so
    base = _scene()
    everything = np.ones(base.shape[:2], dtype=bool)
    out = _windows([base] * 12, [everything] * 12, window=12, hop=12)
    assert len(out) == 1 and out[0].filled_share == 1.0 and not out[0].image.any()
