"""ViBe background extraction (Barnich and Van Droogenbroeck, IEEE TIP 2011), vectorised.

The scenic stream (SPEC section 4) describes a clip's setting by the *background* of its frames,
so that the dancer does not dominate the scene feature. ViBe models every pixel by a set of
``n_samples`` past values; a new value is background when at least ``min_matches`` samples lie
within ``radius`` of it. The model is updated conservatively (only background values enter
it), memorylessly (a random sample is replaced, so a sample's survival decays exponentially),
with random time subsampling (each background pixel updates with probability
``1 / subsampling``) and with spatial propagation (with the same probability, the value is also
written into a random 8-neighbour's model, which is what dissolves ghosts left by the
initialisation). The model is initialised from a single frame: each sample of a pixel is the
value of a random 8-neighbour in that frame. Published parameters: 20 samples, radius 20,
2 matches, subsampling 16 (the defaults of :class:`ViBeParams`).

Colour: the paper states the rule on grey levels. Here it runs on RGB with the L1 distance and
a threshold of ``3 * radius`` (the mean absolute channel difference at most ``radius``), which
is the published rule when the three channels are equal.

Vectorisation: the model is stored planar, ``(3, n_samples, H, W)`` uint8, so the distance of
every sample of every pixel is three OpenCV ``absdiff`` calls and two saturating adds on
contiguous planes (saturation at 255 cannot change a comparison with ``3 * radius <= 255``).
The updates draw their random decisions for all pixels at once and write with fancy indexing;
there is no Python loop over pixels. Randomness comes from a seeded ``numpy`` generator, so a
run is reproducible.

Windows (SPEC section 4, choice): one background image every ``hop`` = 12 frames of the 25 fps
grid, each from the preceding ``window`` = 120 frames. :func:`window_backgrounds` runs a fresh
ViBe model per window, initialised on the window's first frame and seeded from
``(seed, first frame index)``, so a window's image depends on its own frames only. Windows that
start at the same frame share one model (their frames are the same prefix), so at most
``window / hop`` models are live at a time. Near the clip start, where fewer than ``window``
frames precede a window's end, the window starts at frame 0. The background image is the
per-pixel mean of the model's samples after the window's last frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# 8-connected neighbourhood used by the initialisation and the spatial propagation
_NEIGHBOURS = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)], dtype=np.intp)


@dataclass(frozen=True)
class ViBeParams:
    """ViBe's parameters; the defaults are the published ones (Barnich and Van Droogenbroeck 2011)."""

    n_samples: int = 20  # values kept per pixel
    radius: int = 20  # matching radius on grey levels (colour: L1 distance <= 3 * radius)
    min_matches: int = 2  # "#min": matching samples needed to call a value background
    subsampling: int = 16  # a background pixel updates its model with probability 1/subsampling

    def __post_init__(self):
        if self.n_samples < 1 or self.n_samples > 255:
            raise ValueError(f"n_samples must be in 1..255, got {self.n_samples}")
        if not 0 < 3 * self.radius < 255:
            raise ValueError(f"radius must be in 1..84 (colour threshold 3 * radius below 255), got {self.radius}")
        if not 1 <= self.min_matches <= self.n_samples:
            raise ValueError(f"min_matches must be in 1..n_samples, got {self.min_matches}")
        if self.subsampling < 1:
            raise ValueError(f"subsampling must be >= 1, got {self.subsampling}")


def _planar(frame: np.ndarray) -> np.ndarray:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    return np.ascontiguousarray(frame.transpose(2, 0, 1))


class ViBe:
    """One ViBe model over frames of one size. ``apply(frame)`` classifies, then updates."""

    def __init__(self, first_frame: np.ndarray, params: ViBeParams = ViBeParams(), seed: int | Iterable[int] = 0):
        self.params = params
        self.rng = np.random.default_rng(seed)
        planes = _planar(first_frame)
        _, h, w = planes.shape
        self.height, self.width = h, w
        # initialisation from one frame: every sample is a random 8-neighbour's value
        ys, xs = np.mgrid[0:h, 0:w]
        pick = self.rng.integers(0, len(_NEIGHBOURS), size=(params.n_samples, h, w))
        ny = np.clip(ys[None] + _NEIGHBOURS[pick, 0], 0, h - 1)
        nx = np.clip(xs[None] + _NEIGHBOURS[pick, 1], 0, w - 1)
        self.samples = np.ascontiguousarray(planes[:, ny, nx])  # (3, N, H, W) uint8

    def matches(self, planes: np.ndarray) -> np.ndarray:
        """Number of samples within the radius of each pixel of ``planes`` (3, H, W)."""
        n = self.params.n_samples
        _, h, w = planes.shape
        tiled = np.ascontiguousarray(np.broadcast_to(planes[:, None], (3, n, h, w))).reshape(3 * n * h, w)
        diff = cv2.absdiff(self.samples.reshape(3 * n * h, w), tiled).reshape(3, n * h, w)
        l1 = cv2.add(cv2.add(diff[0], diff[1]), diff[2])  # saturates at 255 > 3 * radius
        return (l1 <= 3 * self.params.radius).reshape(n, h, w).sum(0, dtype=np.uint8)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Classify ``frame`` (H, W, 3) uint8 and update the model; returns the foreground mask."""
        planes = _planar(frame)
        if planes.shape[1:] != (self.height, self.width):
            raise ValueError(f"frame size {planes.shape[1:]} differs from the model's {(self.height, self.width)}")
        p = self.params
        background = self.matches(planes) >= p.min_matches
        h, w = background.shape
        # two independent draws per pixel: update its own model, and propagate to a neighbour
        draws = self.rng.integers(0, p.subsampling, size=(2, h, w), dtype=np.uint16)
        ys, xs = np.nonzero(background & (draws[0] == 0))
        slot = self.rng.integers(0, p.n_samples, size=len(ys))
        self.samples[:, slot, ys, xs] = planes[:, ys, xs]
        ys, xs = np.nonzero(background & (draws[1] == 0))
        step = _NEIGHBOURS[self.rng.integers(0, len(_NEIGHBOURS), size=len(ys))]
        ny = np.clip(ys + step[:, 0], 0, h - 1)
        nx = np.clip(xs + step[:, 1], 0, w - 1)
        slot = self.rng.integers(0, p.n_samples, size=len(ys))
        self.samples[:, slot, ny, nx] = planes[:, ys, xs]
        return ~background

    def background(self) -> np.ndarray:
        """Per-pixel mean of the samples (SPEC section 4), (H, W, 3) uint8."""
        mean = self.samples.mean(axis=1, dtype=np.float32)
        return np.ascontiguousarray(np.rint(mean).astype(np.uint8).transpose(1, 2, 0))


def window_ends(n_frames: int, hop: int = 12) -> list[int]:
    """Indices of the frames that close a window: ``hop - 1``, ``2 hop - 1``, ... below ``n_frames``."""
    return list(range(hop - 1, n_frames, hop))


def _window_start(end: int, window: int) -> int:
    return max(0, end - window + 1)


class WindowBackgrounds:
    """The windowed backgrounds of one clip, frame by frame: ``push(frame)`` returns
    ``(end_index, background)`` when the frame closes a window, else None (see module docstring).

    At most ``ceil(window / hop)`` models are held, so memory does not grow with clip length.
    """

    def __init__(self, *, window: int = 120, hop: int = 12, params: ViBeParams = ViBeParams(), seed: int = 0):
        if hop < 1 or window < hop:
            raise ValueError(f"need 1 <= hop <= window, got hop {hop}, window {window}")
        self.window, self.hop, self.params, self.seed = window, hop, params, seed
        self.models: dict[int, ViBe] = {}  # start frame -> model
        self.index = 0

    def push(self, frame: np.ndarray) -> tuple[int, np.ndarray] | None:
        index, window, hop = self.index, self.window, self.hop
        self.index += 1
        # a model starts at frame 0, and at every frame that is the start of a full window
        if index == 0 or (index + window - hop) % hop == 0:
            self.models[index] = ViBe(frame, self.params, seed=(self.seed, index))
        for start, model in self.models.items():
            if start != index:  # the initialisation frame is not classified again
                model.apply(frame)
        out = None
        if (index + 1) % hop == 0:
            out = index, self.models[_window_start(index, window)].background()
        for start in [s for s in self.models if s + window - 1 <= index]:
            del self.models[start]
        return out


def window_backgrounds(
    frames: Iterable[np.ndarray],
    *,
    window: int = 120,
    hop: int = 12,
    params: ViBeParams = ViBeParams(),
    seed: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(end_index, background)`` for every window of ``frames`` (:class:`WindowBackgrounds`)."""
    windows = WindowBackgrounds(window=window, hop=hop, params=params, seed=seed)
    for frame in frames:
        out = windows.push(frame)
        if out is not None:
            yield out


def write_backgrounds(images: Iterable[tuple[float, np.ndarray]], directory: str | Path, stem: str) -> list[Path]:
    """Write ``(time, image)`` pairs as ``<stem>.<ms>.png`` (RGB images) so a user can look at them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for t, image in images:
        path = directory / f"{stem}.{int(round(t * 1000)):07d}ms.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
        written.append(path)
    return written
