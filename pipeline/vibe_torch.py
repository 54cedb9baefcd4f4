"""ViBe in torch: :mod:`pipeline.vibe`'s model on the build's device, many clips per step.

The rules are :class:`pipeline.vibe.ViBe`'s, on tensors: a pixel is background when at least
``min_matches`` of its ``n_samples`` samples lie within L1 distance ``3 * radius``; the person
mask is excluded from every update and its pixels' samples are drawn afresh from the frame when
it first uncovers them; a background pixel updates one of its own samples, and one of a random
8-neighbour's, each with probability ``1 / subsampling``; more than ``reset_share`` of the free
pixels in the foreground re-initialises the model. Randomness comes from one seeded
``torch.Generator`` per clip, so a clip's backgrounds depend on its frames and seed only, not on
the clips that share its steps; they are not numpy's draws, so the two backends' images differ
pixel by pixel while being equally good (``tests/test_scenic.py`` measures both against a known
background and with a person detector).

:class:`ViBeBank` holds the models of the clips in flight in a process; ``step`` classifies one
frame of each of several clips with one batched distance computation per frame size (the dense
part: every sample of every pixel), then makes each clip's sparse random updates. A clip reaches
it through :class:`TorchViBe`, which :class:`pipeline.vibe.WindowBackgrounds` uses like a
:class:`pipeline.vibe.ViBe` (``vibe_model``). Neighbour propagation writes one direction at a
time in a fixed order, so no two writes of one step land on the same sample at once: a run is
deterministic on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.vibe import ViBeParams

_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


@dataclass
class _Clip:
    generator: torch.Generator
    samples: torch.Tensor | None = None  # (3, n_samples, H, W) uint8
    untrusted: torch.Tensor | None = None  # (H, W) bool: samples taken under the person mask
    resets: int = 0


class ViBeBank:
    """The ViBe models of many clips on one device; ``step`` advances several of them a frame."""

    def __init__(self, params: ViBeParams, seed: int, device: str = "cpu"):
        self.params, self.seed, self.device = params, seed, torch.device(device)
        self.clips: dict[int, _Clip] = {}
        self._next = 0

    def open(self) -> int:
        slot = self._next
        self._next += 1
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed)
        self.clips[slot] = _Clip(generator)
        return slot

    def close(self, slot: int) -> None:
        self.clips.pop(slot, None)

    def step(self, slots: list[int], items: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, int]]:
        """One ``(frame (H, W, 3) uint8, person mask (H, W) bool)`` per slot -> ``(foreground
        (H, W) bool, resets so far)``; a clip's first frame initialises its model (no foreground)."""
        out: list[tuple[np.ndarray, int] | None] = [None] * len(slots)
        groups: dict[tuple[int, int], list[int]] = {}
        frames = [torch.from_numpy(np.ascontiguousarray(f)).to(self.device).permute(2, 0, 1) for f, _ in items]
        masks = [torch.from_numpy(np.ascontiguousarray(m, dtype=bool)).to(self.device) for _, m in items]
        for i, slot in enumerate(slots):
            clip = self.clips[slot]
            if clip.samples is None:
                self._initialise(clip, frames[i], masks[i])
                out[i] = (np.zeros(masks[i].shape, dtype=bool), clip.resets)
            else:
                groups.setdefault(tuple(frames[i].shape[1:]), []).append(i)
        for rows in groups.values():
            background = self._background(
                [self.clips[slots[i]] for i in rows], [frames[i] for i in rows], [masks[i] for i in rows]
            )
            for i, bg in zip(rows, background, strict=True):
                clip = self.clips[slots[i]]
                foreground = self._update(clip, frames[i], masks[i], bg)
                out[i] = (foreground.cpu().numpy(), clip.resets)
        return out

    # -- the model ---------------------------------------------------------------------------

    def _draw(self, clip: _Clip, frame: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Samples for pixels (ys, xs): each a random 8-neighbour's value in ``frame``; (3, N, len)."""
        _, h, w = frame.shape
        n = self.params.n_samples
        pick = torch.randint(0, 8, (n, len(ys)), generator=clip.generator, device=self.device)
        offsets = torch.tensor(_NEIGHBOURS, device=self.device)
        ny = (ys[None] + offsets[pick, 0]).clamp(0, h - 1)
        nx = (xs[None] + offsets[pick, 1]).clamp(0, w - 1)
        return frame[:, ny, nx]

    def _initialise(self, clip: _Clip, frame: torch.Tensor, exclude: torch.Tensor) -> None:
        _, h, w = frame.shape
        ys, xs = torch.meshgrid(torch.arange(h, device=self.device), torch.arange(w, device=self.device), indexing="ij")
        drawn = self._draw(clip, frame, ys.reshape(-1), xs.reshape(-1))
        clip.samples = drawn.reshape(3, self.params.n_samples, h, w).contiguous()
        clip.untrusted = exclude.clone()

    def _background(self, clips: list[_Clip], frames: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        """Background (B, H, W) of each clip's frame, after the uncovered pixels are re-drawn."""
        for clip, frame, exclude in zip(clips, frames, masks, strict=True):
            ys, xs = torch.nonzero(clip.untrusted & ~exclude, as_tuple=True)
            if len(ys):
                clip.samples[:, :, ys, xs] = self._draw(clip, frame, ys, xs)
                clip.untrusted[ys, xs] = False
        samples = torch.stack([c.samples for c in clips]).to(torch.int16)  # (B, 3, N, H, W)
        pixels = torch.stack(frames).to(torch.int16)[:, :, None]  # (B, 3, 1, H, W)
        distance = (samples - pixels).abs().sum(dim=1)  # (B, N, H, W)
        matches = (distance <= 3 * self.params.radius).sum(dim=1)
        return matches >= self.params.min_matches

    def _update(
        self, clip: _Clip, frame: torch.Tensor, exclude: torch.Tensor, background: torch.Tensor
    ) -> torch.Tensor:
        p = self.params
        _, h, w = frame.shape
        free = ~exclude
        if p.reset_share < 1.0 and bool(free.any()):
            if int((~background & free).sum()) > p.reset_share * int(free.sum()):
                self._initialise(clip, frame, exclude)  # the scene itself changed
                clip.resets += 1
                return torch.zeros((h, w), dtype=torch.bool, device=self.device)
        updatable = background & free
        draws = torch.randint(0, p.subsampling, (2, h, w), generator=clip.generator, device=self.device)
        ys, xs = torch.nonzero(updatable & (draws[0] == 0), as_tuple=True)
        slot = torch.randint(0, p.n_samples, (len(ys),), generator=clip.generator, device=self.device)
        clip.samples[:, slot, ys, xs] = frame[:, ys, xs]
        ys, xs = torch.nonzero(updatable & (draws[1] == 0), as_tuple=True)
        direction = torch.randint(0, 8, (len(ys),), generator=clip.generator, device=self.device)
        slot = torch.randint(0, p.n_samples, (len(ys),), generator=clip.generator, device=self.device)
        for d, (dy, dx) in enumerate(_NEIGHBOURS):  # one direction at a time: no colliding writes
            pick = direction == d
            sy, sx, s = ys[pick], xs[pick], slot[pick]
            ny, nx = (sy + dy).clamp(0, h - 1), (sx + dx).clamp(0, w - 1)
            keep = ~exclude[ny, nx]  # never write into a pixel the person covers
            clip.samples[:, s[keep], ny[keep], nx[keep]] = frame[:, sy[keep], sx[keep]]
        return ~background


class TorchViBe:
    """One clip's ViBe on a shared :class:`ViBeBank` (through the process's batch server), with
    :class:`pipeline.vibe.ViBe`'s interface: the constructor takes the first frame."""

    def __init__(self, handle, first_frame: np.ndarray, exclude: np.ndarray | None):
        self.handle = handle
        self.resets = 0
        self.apply(first_frame, exclude)

    def apply(self, frame: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
        if exclude is None:
            exclude = np.zeros(frame.shape[:2], dtype=bool)
        foreground, self.resets = self.handle((frame, exclude))
        return foreground

    def close(self) -> None:
        self.handle.close()


def vibe_model(params: ViBeParams, seed: int, device: str, *, max_batch: int = 64, max_wait_ms: float = 5.0):
    """A factory ``(first frame, exclude) -> TorchViBe`` on the process's bank for these
    parameters, seed and device; clips in flight in the process share its steps."""
    from pipeline.batching import BatchServer, shared_server

    def make():
        bank = ViBeBank(params, seed, device)
        return BatchServer(
            bank.step, bank.open, bank.close, max_batch=max_batch, max_wait_s=max_wait_ms / 1000, name="vibe"
        )

    server = shared_server(("vibe", params, seed, device), make)
    return lambda frame, exclude: TorchViBe(server.open(), frame, exclude)
