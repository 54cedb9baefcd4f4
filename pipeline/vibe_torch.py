"""ViBe in torch: :mod:`pipeline.vibe`'s model on the build's device, all clips of a step at once.

The rules are :mod:`pipeline.vibe`'s (:data:`pipeline.vibe.NEIGHBOURS`, :func:`pipeline.vibe.is_background`,
:func:`pipeline.vibe.scene_changed`, the update probability ``1 / subsampling``): a pixel is
background when at least ``min_matches`` of its ``n_samples`` samples lie within L1 distance
``3 * radius``; the person mask is excluded from every update and its pixels' samples are drawn
afresh from the frame when it first uncovers them; a background pixel updates one of its own
samples, and one of a random 8-neighbour's, each with probability ``1 / subsampling``; more
than ``reset_share`` of the free pixels in the foreground re-initialises the model.

No host waits. :meth:`ViBeBank.step` advances one frame of every clip of the step with one
fixed sequence of tensor operations per frame size: every decision is made densely for every
pixel with ``where`` (no boolean-mask indexing, no ``nonzero``, no value read on the host), the
frames and masks of a size group go up in one copy (their rows, first-frame flags and draw keys in
a second, small one), and the foreground masks and reset counts of the whole step come down in one.
Built for a GPU: the update is dense (every sample of every pixel passes through ``where``), so on
the CPU numpy's sparse :class:`pipeline.vibe.ViBe` is much faster and stays the default there
(docs/GPU_NODE.md). A clip's model lives in a row of its frame size's pool.

Randomness is counter-based: every draw is a 32-bit integer hash (:func:`_mix`, integer ``torch``
operations only, so identical on every device) of the clip's seed and frame index, the pixel
and the draw's number. A clip's draws depend on nothing else (not its row, not the clips that
share its steps), so its foregrounds are bit-identical alone or batched (``tests/test_vibe.py``).
They are not numpy's draws: the two backends' images differ pixel by pixel while being equally
good (``tests/test_scenic.py`` measures both against a known background and with a person
detector).

Deterministic writes: a pixel's own update and the redraws write only into that pixel, so they
are ``where``s. Neighbour propagation can aim several pixels at one sample of one pixel (two
neighbours, or a border pixel whose clamped target is a pixel another one also picked); the
winner is defined, not left to a scatter's order: the source with the largest pixel index wins
(a ``scatter_reduce`` with ``amax`` over ``source index << 24 | RGB``, which no order changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.vibe import NEIGHBOURS, ViBeParams, is_background, scene_changed

_M32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # below 2**31: a 32-bit value times it fits int64 without overflow
_PICK_BITS = 3  # an 8-neighbour pick
_PICKS_PER_HASH = 10  # 10 x 3 bits of one 32-bit hash
_UNIT_BITS = 12  # a uniform draw in [0, 1) with 1/4096 resolution (the update probability)
_SLOT_BITS = 10  # a sample slot: (10 random bits * n_samples) >> 10


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (int64 tensor of values in [0, 2**32) -> same)."""
    x = ((x >> 16) ^ x) * _MIX & _M32
    x = ((x >> 16) ^ x) * _MIX & _M32
    return (x >> 16) ^ x


def _mix_int(x: int) -> int:
    """:func:`_mix` on a Python int (the key of one clip's frame, made on the host)."""
    x &= _M32
    x = ((x >> 16) ^ x) * _MIX & _M32
    x = ((x >> 16) ^ x) * _MIX & _M32
    return (x >> 16) ^ x


def frame_key(seed: int, frame: int) -> int:
    """The key of every draw of one clip's frame: a hash of (seed, frame index)."""
    return _mix_int(_mix_int(seed) ^ _mix_int(frame * 2 + 1))


@dataclass
class _Pool:
    """The models of the clips of one frame size: rows of ``samples`` (R, 3, N, H, W) uint8,
    ``untrusted`` (R, H*W) bool (samples taken under the person mask) and ``resets`` (R,)."""

    samples: torch.Tensor
    untrusted: torch.Tensor
    resets: torch.Tensor
    neighbours: torch.Tensor  # (H*W, 8) int64: the flat index of each pixel's clamped 8-neighbours
    free: list[int] = field(default_factory=list)


@dataclass
class _Clip:
    frames: int = 0  # frames seen (the next frame's index)
    size: tuple[int, int] | None = None
    row: int = -1
    resets: int = 0  # as of the last step


class ViBeBank:
    """The ViBe models of many clips on one device; ``step`` advances several of them a frame."""

    def __init__(self, params: ViBeParams, seed: int, device: str = "cpu"):
        self.params, self.seed, self.device = params, seed, torch.device(device)
        self.clips: dict[int, _Clip] = {}
        self.pools: dict[tuple[int, int], _Pool] = {}
        self._next = 0

    def open(self) -> int:
        slot = self._next
        self._next += 1
        self.clips[slot] = _Clip()
        return slot

    def close(self, slot: int) -> None:
        clip = self.clips.pop(slot, None)
        if clip is not None and clip.size is not None:
            self.pools[clip.size].free.append(clip.row)

    def samples(self, slot: int) -> torch.Tensor:
        """One clip's model (3, N, H, W) uint8 (a view of its pool's row)."""
        clip = self.clips[slot]
        h, w = clip.size
        return self.pools[clip.size].samples[clip.row].view(3, self.params.n_samples, h, w)

    # -- one step ----------------------------------------------------------------------------

    def step(self, slots: list[int], items: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, int]]:
        """One ``(frame (H, W, 3) uint8, person mask (H, W) bool)`` per slot -> ``(foreground
        (H, W) bool, resets so far)``; a clip's first frame initialises its model (no foreground)."""
        if len(set(slots)) != len(slots):
            raise ValueError("a slot appears twice in one step")
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (frame, _) in enumerate(items):
            groups.setdefault(tuple(frame.shape[:2]), []).append(i)
        order, parts = [], []
        for size, idx in groups.items():
            parts.append(self._step_group(size, [slots[i] for i in idx], [items[i] for i in idx]))
            order.extend(idx)
        packed = torch.cat(parts).cpu().numpy()  # the step's one download
        out: list[tuple[np.ndarray, int] | None] = [None] * len(slots)
        at = 0
        for i in order:
            h, w = items[i][0].shape[:2]
            foreground = packed[at : at + h * w].view(bool).reshape(h, w)
            resets = int(packed[at + h * w : at + h * w + 8].view(np.int64)[0])
            at += h * w + 8
            self.clips[slots[i]].resets = resets
            out[i] = (foreground, resets)
        return out

    def _rows(self, size: tuple[int, int], slots: list[int]) -> tuple[_Pool, list[int], list[bool]]:
        """The pool of ``size`` and each clip's row in it (new clips take a free row)."""
        pool = self.pools.get(size) or self._new_pool(size)
        rows, first = [], []
        for slot in slots:
            clip = self.clips[slot]
            if clip.size is None:
                if not pool.free:
                    self._grow(pool, max(8, len(pool.resets)))
                clip.size, clip.row = size, pool.free.pop(0)
            elif clip.size != size:
                raise ValueError(f"frame size {size} differs from the model's {clip.size}")
            rows.append(clip.row)
            first.append(clip.frames == 0)
        return pool, rows, first

    def _new_pool(self, size: tuple[int, int]) -> _Pool:
        h, w = size
        n, dev = self.params.n_samples, self.device
        ys, xs = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        offsets = torch.tensor(NEIGHBOURS, device=dev)
        ny = (ys.reshape(-1, 1) + offsets[:, 0]).clamp(0, h - 1)
        nx = (xs.reshape(-1, 1) + offsets[:, 1]).clamp(0, w - 1)
        pool = _Pool(
            samples=torch.zeros((0, 3 * n, h * w), dtype=torch.uint8, device=dev),
            untrusted=torch.zeros((0, h * w), dtype=torch.bool, device=dev),
            resets=torch.zeros(0, dtype=torch.int64, device=dev),
            neighbours=ny * w + nx,
        )
        self.pools[size] = pool
        return pool

    @staticmethod
    def _grow(pool: _Pool, extra: int) -> None:
        start = len(pool.resets)
        pool.samples = torch.cat([pool.samples, pool.samples.new_zeros((extra, *pool.samples.shape[1:]))])
        pool.untrusted = torch.cat([pool.untrusted, pool.untrusted.new_zeros((extra, *pool.untrusted.shape[1:]))])
        pool.resets = torch.cat([pool.resets, pool.resets.new_zeros(extra)])
        pool.free.extend(range(start, start + extra))

    def _upload(self, items, rows, first, keys) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A size group's frames (g, 3, H*W) uint8 and masks (g, H*W) bool in one copy, and its
        rows, first-frame flags and draw keys (g,) in another."""
        pixels = np.stack([np.concatenate([f, np.asarray(m, dtype=np.uint8)[..., None]], axis=-1) for f, m in items])
        meta = torch.tensor([rows, [int(f) for f in first], keys], dtype=torch.int64)
        cuda = self.device.type == "cuda"
        host = torch.from_numpy(pixels)
        if cuda:
            host, meta = host.pin_memory(), meta.pin_memory()
        up = host.to(self.device, non_blocking=cuda).flatten(1, 2).transpose(1, 2)  # (g, 4, H*W)
        meta = meta.to(self.device, non_blocking=cuda)
        return up[:, :3], up[:, 3].bool(), meta

    def _step_group(self, size: tuple[int, int], slots: list[int], items) -> torch.Tensor:
        """Advance the clips of one frame size; returns their packed output (foreground bytes, then
        the reset count's 8 bytes, per clip) on the device."""
        p = self.params
        pool, rows, first = self._rows(size, slots)
        keys = []
        for slot in slots:
            clip = self.clips[slot]
            keys.append(frame_key(self.seed, clip.frames))
            clip.frames += 1
        frame, exclude, meta = self._upload(items, rows, first, keys)
        row, is_first, key = meta[0], meta[1].bool(), meta[2]
        g, hw = exclude.shape
        n = p.n_samples
        samples = pool.samples.index_select(0, row).view(g, 3, n, hw)
        untrusted = pool.untrusted.index_select(0, row)
        draws = self._draws(key, hw)

        # initialisation, redraws and resets all take the same draw from this frame's neighbourhood
        drawn = self._neighbour_values(frame, pool.neighbours, draws["picks"])
        redraw = (untrusted & ~exclude) | is_first[:, None]
        samples = torch.where(redraw[:, None, None], drawn, samples)
        untrusted = torch.where(is_first[:, None], exclude, untrusted & exclude)
        background = is_background(self._matches(samples, frame), p)
        free = ~exclude
        reset = scene_changed((~background & free).sum(dim=1), free.sum(dim=1), p) & ~is_first
        samples = torch.where(reset[:, None, None, None], drawn, samples)
        untrusted = torch.where(reset[:, None], exclude, untrusted)
        updatable = background & free & ~(reset | is_first)[:, None]
        samples = self._own_update(samples, frame, updatable & draws["own"], draws["own_slot"])
        samples = self._propagate(samples, frame, exclude, updatable & draws["spread"], draws, pool.neighbours)

        pool.samples.index_copy_(0, row, samples.view(g, 3 * n, hw))
        pool.untrusted.index_copy_(0, row, untrusted)
        resets = pool.resets.index_select(0, row) + reset.long()
        pool.resets.index_copy_(0, row, resets)
        foreground = (~background & ~(reset | is_first)[:, None]).to(torch.uint8)
        count_bytes = resets.view(torch.uint8).view(g, 8)
        return torch.cat([foreground, count_bytes], dim=1).reshape(-1)

    def _draws(self, key: torch.Tensor, hw: int) -> dict[str, torch.Tensor]:
        """Every random decision of a frame, per clip and pixel, from hashes of (key, pixel, draw)."""
        p = self.params
        pick_hashes = -(-p.n_samples // _PICKS_PER_HASH)
        per_pixel = pick_hashes + 2
        counter = torch.arange(hw, device=self.device, dtype=torch.int64)[None, :, None] * per_pixel
        counter = counter + torch.arange(per_pixel, device=self.device, dtype=torch.int64)
        h = _mix(_mix(counter ^ key[:, None, None])).permute(2, 0, 1).contiguous()  # (per_pixel, g, HW)
        picks = torch.stack(  # (g, N, HW) uint8, one sample at a time (an int64 (g, N, HW) is large)
            [
                ((h[i // _PICKS_PER_HASH] >> (_PICK_BITS * (i % _PICKS_PER_HASH))) & 7).to(torch.uint8)
                for i in range(p.n_samples)
            ],
            dim=1,
        )
        unit = (1 << _UNIT_BITS) - 1
        slot = (1 << _SLOT_BITS) - 1
        own, spread = h[pick_hashes], h[pick_hashes + 1]
        return {
            "picks": picks,
            "own": ((own & unit) * p.subsampling) >> _UNIT_BITS == 0,
            "own_slot": (((own >> _UNIT_BITS) & slot) * p.n_samples) >> _SLOT_BITS,
            "spread": ((spread & unit) * p.subsampling) >> _UNIT_BITS == 0,
            "direction": (spread >> _UNIT_BITS) & 7,
            "spread_slot": (((spread >> (_UNIT_BITS + _PICK_BITS)) & slot) * p.n_samples) >> _SLOT_BITS,
        }

    @staticmethod
    def _neighbour_values(frame: torch.Tensor, neighbours: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
        """Each sample's value from its picked 8-neighbour: (g, 3, N, HW) uint8, one gather."""
        g, _, hw = frame.shape
        n = picks.shape[1]
        index = neighbours.reshape(-1)[torch.arange(hw, device=frame.device) * 8 + picks]  # (g, N, HW) int64
        return frame[:, :, None, :].expand(g, 3, n, hw).gather(3, index[:, None].expand(g, 3, n, hw))

    def _matches(self, samples: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """Samples within L1 distance ``3 * radius`` of each pixel: (g, HW), channel by channel."""
        distance = None
        for c in range(3):
            d = (samples[:, c].to(torch.int16) - frame[:, c, None].to(torch.int16)).abs_()
            distance = d if distance is None else distance.add_(d)
        return (distance <= 3 * self.params.radius).sum(dim=1)

    def _own_update(self, samples, frame, write, slot) -> torch.Tensor:
        """A drawn background pixel replaces its sample ``slot`` by its value."""
        n = self.params.n_samples
        hit = (torch.arange(n, device=self.device)[None, :, None] == slot[:, None, :]) & write[:, None, :]
        return torch.where(hit[:, None], frame[:, :, None, :], samples)

    def _propagate(self, samples, frame, exclude, write, draws, neighbours) -> torch.Tensor:
        """A drawn background pixel writes its value into sample ``spread_slot`` of its picked
        8-neighbour, unless the person covers that neighbour; colliding writes: the largest source
        pixel index wins (module docstring)."""
        g, _, n, hw = samples.shape
        pixel = torch.arange(hw, device=self.device)
        target = neighbours.reshape(-1)[pixel * 8 + draws["direction"]]  # (g, HW)
        rgb = frame.long()
        value = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        key = torch.where(write, ((pixel + 1) << 24) | value, torch.zeros_like(value))
        best = torch.zeros((g, n * hw), dtype=torch.int64, device=self.device)
        best.scatter_reduce_(1, draws["spread_slot"] * hw + target, key, reduce="amax")
        best = best.view(g, n, hw)
        hit = (best > 0) & ~exclude[:, None, :]
        written = torch.stack([(best >> 16) & 255, (best >> 8) & 255, best & 255], dim=1).to(torch.uint8)
        return torch.where(hit[:, None], written, samples)


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
