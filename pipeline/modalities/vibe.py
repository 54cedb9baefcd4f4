"""ViBe background subtraction (Barnich and Van Droogenbroeck, IEEE TIP 2011), vectorised, with
person masking, and the windowed background images of the scenic stream (SPEC section 4).

The scenic stream describes a clip's setting by the *background* of its frames, so that the
dancer, whom the skeletal, holistic and facial streams already describe, is not in it.

ViBe
----
ViBe models every pixel by a set of ``n_samples`` past values; a new value is background when at
least ``min_matches`` samples lie within ``radius`` of it. The model is updated conservatively
(only background values enter it), memorylessly (a random sample is replaced), with random
time subsampling (each background pixel updates with probability ``1 / subsampling``) and with
spatial propagation (with the same probability, the value is also written into a random
8-neighbour's model). The model is initialised from a single frame: each sample of a pixel is
the value of a random 8-neighbour in that frame. Published parameters: 20 samples, radius 20,
2 matches, subsampling 16 (the defaults of :class:`ViBeParams`).

Colour: the paper states the rule on grey levels. Here it runs on RGB with the L1 distance and
a threshold of ``3 * radius`` (the mean absolute channel difference at most ``radius``), which
is the published rule when the three channels are equal.

Person masking (choice, beyond the paper)
-----------------------------------------
ViBe alone cannot remove a dancer who dances on one spot: its model is initialised with the
dancer in it, and a body that moves little matches its own samples and is classified (and
absorbed as) background. Measured on the previous design (a fresh ViBe model per window, image
= mean of the samples): every background image of ``stgcn_ta_chi`` and ``musepose_dance``
showed the dancer as he stood at the window's start, and BlazePose found a person in 45 of 45
of them. So every frame also comes with a *person mask* (:mod:`pipeline.modalities.scenic` computes it),
and ViBe takes it as an exclusion mask:

- a pixel under the person mask is never written into the model (neither its own update nor
  propagation into it), so a dancer who stands still is not absorbed;
- a pixel whose samples were taken while the person mask covered it (at initialisation or at a
  reset) holds the dancer's colours; the first time the mask uncovers it, its samples are drawn
  afresh from that frame's 8-neighbourhood, as at initialisation. This replaces the ghost that
  ViBe would otherwise dissolve slowly by propagation;
- a global change (a camera that moves or cuts, the lights): when more than ``reset_share`` of
  the pixels outside the person mask are foreground, the model is re-initialised on that frame.
  Without it a model that lost the scene would call every later frame foreground.

One model runs over the whole clip, so the classification of a frame does not depend on where
any window starts (the previous design initialised a model on every window's first frame).

Background images of windows (SPEC section 4, choice)
-----------------------------------------------------
One background image every ``hop`` = 12 frames of the 25 fps grid, each from the preceding
``window`` = 120 frames (fewer near the clip start). A pixel of a window's image is the mean of
that pixel's values over the window's frames in which it is *background*: neither ViBe's
foreground mask nor the person mask covers it. Pixels that are covered in every frame of the
window (the dancer stood on them throughout) are filled from their surroundings with
``cv2.inpaint`` (Telea), and the share of such pixels is returned with every image
(:class:`WindowImage.filled_share`). The image therefore depends only on the window's frames and
their masks, not on the dancer's place in the window's first frame.

Memory stays flat in clip length: the frames are summed per block of ``hop`` frames (sum and
count of background values per pixel), and a window is the sum of its ``window / hop`` latest
blocks; so ``window`` must be a multiple of ``hop``.

Vectorisation: the model is stored planar, ``(3, n_samples, H, W)`` uint8, so the distance of
every sample of every pixel is three OpenCV ``absdiff`` calls and two saturating adds on
contiguous planes (saturation at 255 cannot change a comparison with ``3 * radius <= 255``).
The updates draw their random decisions for all pixels at once and write with fancy indexing;
there is no Python loop over pixels. Randomness comes from a seeded ``numpy`` generator, so a
run is reproducible.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# 8-connected neighbourhood used by the initialisation and the spatial propagation (dy, dx)
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_NEIGHBOURS = np.array(NEIGHBOURS, dtype=np.intp)


@dataclass(frozen=True)
class ViBeParams:
    """ViBe's parameters; the defaults are the published ones (Barnich and Van Droogenbroeck 2011)."""

    n_samples: int = 20  # values kept per pixel
    radius: int = 20  # matching radius on grey levels (colour: L1 distance <= 3 * radius)
    min_matches: int = 2  # "#min": matching samples needed to call a value background
    subsampling: int = 16  # a background pixel updates its model with probability 1/subsampling
    # choice (not in the paper): re-initialise when this share of the pixels outside the
    # person mask is foreground (a moving camera, a cut, the lights); 1.0 never resets
    reset_share: float = 0.5

    def __post_init__(self):
        if self.n_samples < 1 or self.n_samples > 255:
            raise ValueError(f"n_samples must be in 1..255, got {self.n_samples}")
        if not 0 < 3 * self.radius < 255:
            raise ValueError(f"radius must be in 1..84 (colour threshold 3 * radius below 255), got {self.radius}")
        if not 1 <= self.min_matches <= self.n_samples:
            raise ValueError(f"min_matches must be in 1..n_samples, got {self.min_matches}")
        if self.subsampling < 1:
            raise ValueError(f"subsampling must be >= 1, got {self.subsampling}")
        if not 0.0 < self.reset_share <= 1.0:
            raise ValueError(f"reset_share must be in (0, 1], got {self.reset_share}")


# -- the rules, shared by this model and pipeline.modalities.vibe_torch's (numpy arrays or torch tensors) --


def is_background(matches, params: ViBeParams):
    """ViBe's classification: a value is background when at least ``min_matches`` of its samples
    lie within L1 distance ``3 * radius`` (``matches`` counts them, per pixel)."""
    return matches >= params.min_matches


def scene_changed(foreground_free, free, params: ViBeParams):
    """The reset rule (module docstring): more than ``reset_share`` of the ``free`` pixels (outside
    the person mask; counts per model) are foreground. Compared in float64 on both backends."""
    if params.reset_share >= 1.0:
        return free < 0  # never (all False, of the counts' kind)
    if hasattr(free, "double"):  # torch
        return (free > 0) & (foreground_free.double() > params.reset_share * free.double())
    return (free > 0) & (np.float64(foreground_free) > params.reset_share * np.float64(free))


def _planar(frame: np.ndarray) -> np.ndarray:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    return np.ascontiguousarray(frame.transpose(2, 0, 1))


def _exclusion(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.zeros(shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"mask size {mask.shape} differs from the frame's {shape}")
    return mask


class ViBe:
    """One ViBe model over frames of one size. ``apply(frame, exclude)`` classifies, then updates.

    ``exclude`` (H, W) bool is the person mask: those pixels never enter the model, and pixels
    whose samples were taken under it are re-drawn when it first uncovers them (module docstring).
    """

    def __init__(
        self,
        first_frame: np.ndarray,
        params: ViBeParams = ViBeParams(),
        seed: int | Iterable[int] = 0,
        exclude: np.ndarray | None = None,
    ):
        self.params = params
        self.rng = np.random.default_rng(seed)
        planes = _planar(first_frame)
        _, h, w = planes.shape
        self.height, self.width = h, w
        self.samples = np.empty((3, params.n_samples, h, w), dtype=np.uint8)
        self.resets = 0
        self._initialise(planes, _exclusion(exclude, (h, w)))

    def _draw(self, planes: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Samples for pixels (ys, xs): each a random 8-neighbour's value in ``planes``; (3, N, len)."""
        h, w = self.height, self.width
        pick = self.rng.integers(0, len(_NEIGHBOURS), size=(self.params.n_samples, len(ys)))
        ny = np.clip(ys[None] + _NEIGHBOURS[pick, 0], 0, h - 1)
        nx = np.clip(xs[None] + _NEIGHBOURS[pick, 1], 0, w - 1)
        return planes[:, ny, nx]

    def _initialise(self, planes: np.ndarray, exclude: np.ndarray) -> None:
        ys, xs = np.mgrid[0 : self.height, 0 : self.width]
        self.samples[:] = self._draw(planes, ys.ravel(), xs.ravel()).reshape(self.samples.shape)
        self.untrusted = exclude.copy()  # samples taken under the person mask

    def matches(self, planes: np.ndarray) -> np.ndarray:
        """Number of samples within the radius of each pixel of ``planes`` (3, H, W)."""
        n = self.params.n_samples
        _, h, w = planes.shape
        tiled = np.ascontiguousarray(np.broadcast_to(planes[:, None], (3, n, h, w))).reshape(3 * n * h, w)
        diff = cv2.absdiff(self.samples.reshape(3 * n * h, w), tiled).reshape(3, n * h, w)
        l1 = cv2.add(cv2.add(diff[0], diff[1]), diff[2])  # saturates at 255 > 3 * radius
        return (l1 <= 3 * self.params.radius).reshape(n, h, w).sum(0, dtype=np.uint8)

    def apply(self, frame: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
        """Classify ``frame`` (H, W, 3) uint8 and update the model; returns the foreground mask."""
        planes = _planar(frame)
        if planes.shape[1:] != (self.height, self.width):
            raise ValueError(f"frame size {planes.shape[1:]} differs from the model's {(self.height, self.width)}")
        p = self.params
        h, w = self.height, self.width
        exclude = _exclusion(exclude, (h, w))
        # pixels seen for the first time without the person: samples drawn afresh from this frame
        ys, xs = np.nonzero(self.untrusted & ~exclude)
        if len(ys):
            self.samples[:, :, ys, xs] = self._draw(planes, ys, xs)
            self.untrusted[ys, xs] = False
        background = is_background(self.matches(planes), p)
        free = ~exclude
        if scene_changed((~background & free).sum(), free.sum(), p):
            # the scene itself changed: start over on this frame (module docstring)
            self._initialise(planes, exclude)
            self.resets += 1
            return np.zeros((h, w), dtype=bool)
        updatable = background & free
        # two independent draws per pixel: update its own model, and propagate to a neighbour
        draws = self.rng.integers(0, p.subsampling, size=(2, h, w), dtype=np.uint16)
        ys, xs = np.nonzero(updatable & (draws[0] == 0))
        slot = self.rng.integers(0, p.n_samples, size=len(ys))
        self.samples[:, slot, ys, xs] = planes[:, ys, xs]
        ys, xs = np.nonzero(updatable & (draws[1] == 0))
        step = _NEIGHBOURS[self.rng.integers(0, len(_NEIGHBOURS), size=len(ys))]
        ny = np.clip(ys + step[:, 0], 0, h - 1)
        nx = np.clip(xs + step[:, 1], 0, w - 1)
        keep = ~exclude[ny, nx]  # never write into a pixel the person covers
        ys, xs, ny, nx = ys[keep], xs[keep], ny[keep], nx[keep]
        slot = self.rng.integers(0, p.n_samples, size=len(ys))
        self.samples[:, slot, ny, nx] = planes[:, ys, xs]
        return ~background


@dataclass(frozen=True)
class WindowImage:
    """The background image of the window that ends at frame ``end``."""

    end: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    filled_share: float  # share of pixels covered in every frame of the window, filled by inpainting


class WindowBackgrounds:
    """The windowed background images of one clip, frame by frame (see the module docstring).

    ``push(frame, person)`` returns a :class:`WindowImage` when the frame closes a window, else
    None. ``person`` is the frame's person mask ((H, W) bool, None: nobody). ``inpaint_radius``
    is ``cv2.inpaint``'s neighbourhood in pixels. ``model`` makes the ViBe model from the first
    frame and its mask (default: :class:`ViBe`; :func:`pipeline.modalities.vibe_torch.vibe_model` on a
    device). Memory: one ViBe model and ``window / hop`` block sums, whatever the clip's length.
    """

    def __init__(
        self,
        *,
        window: int = 120,
        hop: int = 12,
        params: ViBeParams = ViBeParams(),
        seed: int = 0,
        inpaint_radius: int = 5,
        model=None,
    ):
        if hop < 1 or window < hop or window % hop:
            raise ValueError(f"need 1 <= hop <= window with window a multiple of hop, got hop {hop}, window {window}")
        if inpaint_radius < 1:
            raise ValueError(f"inpaint_radius must be at least 1, got {inpaint_radius}")
        self.window, self.hop, self.params, self.seed = window, hop, params, seed
        self.inpaint_radius = inpaint_radius
        # (first frame, person mask) -> a ViBe model: numpy's by default, or the torch one on a
        # device (pipeline.modalities.vibe_torch.vibe_model); both classify with apply(frame, exclude)
        self.make_model = model or (lambda frame, exclude: ViBe(frame, self.params, seed=self.seed, exclude=exclude))
        self.model = None
        self.index = 0
        self.blocks: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self.block: tuple[np.ndarray, np.ndarray] | None = None  # (sum (H, W, 3) uint32, count (H, W) uint16)
        self.total: tuple[np.ndarray, np.ndarray] | None = None
        self.last_foreground: np.ndarray | None = None  # ViBe's mask of the latest frame

    @property
    def resets(self) -> int:
        return 0 if self.model is None else self.model.resets

    def push(self, frame: np.ndarray, person: np.ndarray | None = None) -> WindowImage | None:
        h, w = frame.shape[:2]
        person = _exclusion(person, (h, w))
        if self.model is None:
            self.model = self.make_model(frame, person)
            foreground = np.zeros((h, w), dtype=bool)  # the initialisation frame is not classified
            self.total = (np.zeros((h, w, 3), np.uint32), np.zeros((h, w), np.uint32))
        else:
            foreground = self.model.apply(frame, exclude=person)
        self.last_foreground = foreground
        seen = ~(foreground | person)
        if self.block is None:
            self.block = (np.zeros((h, w, 3), np.uint32), np.zeros((h, w), np.uint32))
        sums, counts = self.block
        sums += frame * seen[..., None]
        counts += seen
        index = self.index
        self.index += 1
        if (index + 1) % self.hop:
            return None
        # the block closes: add it to the running window, drop the block that left the window
        self.blocks.append(self.block)
        self.total[0][:] += sums
        self.total[1][:] += counts
        self.block = None
        if len(self.blocks) > self.window // self.hop:
            old_sums, old_counts = self.blocks.popleft()
            self.total[0][:] -= old_sums
            self.total[1][:] -= old_counts
        return WindowImage(index, *self._image())

    def close(self) -> None:
        """Release the model's place on its device's bank (the torch one); its counts stay readable."""
        if self.model is not None and hasattr(self.model, "close"):
            self.model.close()

    def _image(self) -> tuple[np.ndarray, float]:
        sums, counts = self.total
        holes = counts == 0
        mean = sums / np.maximum(counts, 1)[..., None].astype(np.float32)
        image = np.rint(mean).astype(np.uint8)
        share = float(holes.mean())
        if share == 1.0:
            # nothing of the scene was background in the whole window (e.g. ViBe reset on every
            # frame): there is nothing to fill from, and the image is left black
            return image, share
        if share > 0.0:
            image = cv2.inpaint(image, holes.astype(np.uint8), self.inpaint_radius, cv2.INPAINT_TELEA)
        return np.ascontiguousarray(image), share


def write_backgrounds(images: Iterable[tuple[float, np.ndarray]], directory: str | Path, stem: str) -> list[Path]:
    """Write ``(time, image)`` pairs as ``<stem>.<ms>ms.png`` (RGB images) so a user can look at them."""
    from pipeline.core.tables import atomic_write

    directory = Path(directory)
    written = []
    for t, image in images:
        path = directory / f"{stem}.{int(round(t * 1000)):07d}ms.png"
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"could not encode {path}")
        data = png.tobytes()
        written.append(atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data)))
    return written
