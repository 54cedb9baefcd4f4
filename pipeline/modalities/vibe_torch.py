"""ViBe in torch: :mod:`pipeline.modalities.vibe`'s model on the build's device, all clips of a step at once.

The rules are :mod:`pipeline.modalities.vibe`'s (:data:`pipeline.modalities.vibe.NEIGHBOURS`, :func:`pipeline.modalities.vibe.is_background`,
:func:`pipeline.modalities.vibe.scene_changed`, the update probability ``1 / subsampling``): a pixel is
background when at least ``min_matches`` of its ``n_samples`` samples lie within L1 distance
``3 * radius``; the person mask is excluded from every update and its pixels' samples are drawn
afresh from the frame when it first uncovers them; a background pixel updates one of its own
samples, and one of a random 8-neighbour's, each with probability ``1 / subsampling``; more
than ``reset_share`` of the free pixels in the foreground re-initialises the model.

No host waits. :meth:`ViBeBank.step` advances one frame of every clip of the step with one
fixed sequence of tensor operations per frame size: every decision is made for every pixel with
``where`` and scatters to fixed places (no boolean-mask indexing, no ``nonzero``, no value read on
the host); the frames and masks of a size group go up in one copy (their rows and first-frame
flags in a second, small one), and the foreground masks and reset counts of the whole step come
down in one. A clip's model lives in a row of its frame size's pool; the rows of a step that are
consecutive in the pool (a lone clip, or clips that opened together) are updated in place.

Layout and arithmetic (the CPU pays for every pass, a GPU for every launch): a sample is one
int32, the four bytes R, G, B and one ignored, so the redraws, the initialisation and the
updates move one element per sample; the matching runs on those bytes in uint8 (channel
distances capped at ``3 * radius + 1``, so their sum fits a byte); a pixel's own update and its
propagation are scatters of one value per pixel into a row's flat samples, where the pixels
that do not write aim at a sink column after the samples, so no ``where`` over every sample is
needed. On this CPU the torch ViBe is faster per frame than numpy's (docs/GPU_NODE.md).

Randomness: each frame size has fixed random tables (32-bit integer hashes, :func:`_mix`, of the
bank's seed, the size, the row and the pixel, made with integer ``torch`` operations, so identical
on every device): per pixel, the own update's flag (probability ``1 / subsampling``) and slot, the
propagation's flag, direction and slot, and each sample's picked 8-neighbour (for the
initialisation, redraws and resets). A clip's frame reads them at an offset along the pixels
that is a hash of the clip's seed and frame index (:func:`frame_key`, made on the host), so a
pixel's draws change from frame to frame and a clip's draws depend on nothing else (not its row,
not the clips that share its steps): its foregrounds are bit-identical alone or batched
(``tests/test_vibe.py``). Draws of one frame are independent across pixels; a pixel's draws at two
frames are another pixel's at the offsets' difference, a correlation no rule of ViBe sees. They
are not numpy's draws: the two backends' images differ pixel by pixel while being equally good
(``tests/test_scenic.py`` measures both against a known background and against numpy's own
spread over seeds).

Deterministic writes: a pixel's own update writes only into that pixel. Neighbour propagation can
aim several pixels at one sample of one pixel (two neighbours, or a border pixel whose clamped
target is a pixel another one also picked); the winner is defined, not left to a scatter's order:
the source with the largest pixel index wins (a ``scatter_reduce`` with ``amax`` of the source
index over the target places, which no order changes; the losers aim at the sink).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.modalities.vibe import NEIGHBOURS, ViBeParams, is_background, scene_changed

_M32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # below 2**31: a 32-bit value times it fits int64 without overflow
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
    """The models of the clips of one frame size: rows of ``samples`` (R, N*H*W + 1) int32, each a
    pixel's four bytes R, G, B and one ignored (the last column is a sink that writes which do not
    happen go to, never read), ``untrusted``
    (R, H*W) bool (samples taken under the person mask) and ``resets`` (R,); and the size's fixed
    tables: ``neighbours``, ``padding`` and the random tables ``draws`` and ``picks`` (each twice over
    along the pixels, so that a window of one frame's draws is a slice)."""

    samples: torch.Tensor
    untrusted: torch.Tensor
    resets: torch.Tensor
    neighbours: torch.Tensor  # (H*W, 8) int64: the flat index of each pixel's clamped 8-neighbours
    padding: torch.Tensor  # ((H+2)*(W+2),) int64: the frame's pixel at each place of its edge-padded copy
    draws: torch.Tensor  # (_ROWS, 2*H*W) int16: the updates' draws (module docstring)
    picks: torch.Tensor  # (N, 2*H*W) int32: each sample's picked neighbour, as an offset in the padded frame
    free: list[int] = field(default_factory=list)


# rows of a pool's random table (then one row per sample: the padded offset of its picked neighbour)
_OWN, _OWN_SLOT, _SPREAD, _DIRECTION, _SPREAD_SLOT = range(5)
_ROWS = 5


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
        n = self.params.n_samples
        rgbx = self.pools[clip.size].samples[clip.row, : n * h * w].view(torch.uint8).view(n, h, w, 4)
        return rgbx[..., :3].permute(3, 0, 1, 2)

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
            pool, rows, first = self._rows(size, [slots[i] for i in idx])
            # the group in its rows' order: consecutive rows are a view of the pool, no copy
            by_row = sorted(range(len(idx)), key=rows.__getitem__)
            idx = [idx[k] for k in by_row]
            rows, first = [rows[k] for k in by_row], [first[k] for k in by_row]
            parts.append(self._step_group(size, pool, rows, first, [slots[i] for i in idx], [items[i] for i in idx]))
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
                pool.free.sort()  # the lowest free row: a step's rows stay consecutive where they can
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
        py = (torch.arange(h + 2, device=dev) - 1).clamp(0, h - 1)
        px = (torch.arange(w + 2, device=dev) - 1).clamp(0, w - 1)
        draws, picks = self._tables(h, w)
        pool = _Pool(
            samples=torch.zeros((0, n * h * w + 1), dtype=torch.int32, device=dev),
            untrusted=torch.zeros((0, h * w), dtype=torch.bool, device=dev),
            resets=torch.zeros(0, dtype=torch.int64, device=dev),
            neighbours=ny * w + nx,
            padding=(py[:, None] * w + px[None, :]).reshape(-1),
            draws=draws,
            picks=picks,
        )
        self.pools[size] = pool
        return pool

    def _tables(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The size's random table (module docstring): per pixel column, the own update's flag and
        slot, the propagation's flag, direction and slot, and each sample's picked neighbour as an
        offset in the edge-padded frame; hashes of (seed, size, row, column)."""
        p, dev, hw = self.params, self.device, h * w
        rows = _ROWS + p.n_samples  # the updates' draws, then one row per sample
        counter = torch.arange(rows * hw, device=dev, dtype=torch.int64).view(rows, hw)
        bits = _mix(_mix(counter ^ _mix_int(_mix_int(self.seed) ^ _mix_int(h * 65536 + w))))
        unit = (bits & ((1 << _UNIT_BITS) - 1)) * p.subsampling >> _UNIT_BITS == 0
        slot = ((bits >> _UNIT_BITS) & ((1 << _SLOT_BITS) - 1)) * p.n_samples >> _SLOT_BITS
        offsets = torch.tensor([dy * (w + 2) + dx for dy, dx in NEIGHBOURS], device=dev)
        table = torch.empty((_ROWS, hw), dtype=torch.int16, device=dev)
        table[_OWN], table[_OWN_SLOT] = unit[_OWN], slot[_OWN_SLOT]
        table[_SPREAD], table[_SPREAD_SLOT] = unit[_SPREAD], slot[_SPREAD_SLOT]
        table[_DIRECTION] = bits[_DIRECTION] & 7
        return table.repeat(1, 2), offsets[bits[_ROWS:] & 7].to(torch.int32).repeat(1, 2)

    @staticmethod
    def _grow(pool: _Pool, extra: int) -> None:
        start = len(pool.resets)
        pool.samples = torch.cat([pool.samples, pool.samples.new_zeros((extra, *pool.samples.shape[1:]))])
        pool.untrusted = torch.cat([pool.untrusted, pool.untrusted.new_zeros((extra, *pool.untrusted.shape[1:]))])
        pool.resets = torch.cat([pool.resets, pool.resets.new_zeros(extra)])
        pool.free.extend(range(start, start + extra))

    def _upload(self, items, rows, first) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A size group's frames and masks in one copy: the pixels (g, H*W) int32 (bytes R, G, B and
        the mask) and the masks (g, H*W) bool; its rows and first-frame flags (g,) in another."""
        pixels = np.stack([np.concatenate([f, np.asarray(m, dtype=np.uint8)[..., None]], axis=-1) for f, m in items])
        meta = torch.tensor([rows, [int(f) for f in first]], dtype=torch.int64)
        cuda = self.device.type == "cuda"
        host = torch.from_numpy(pixels)
        if cuda:
            host, meta = host.pin_memory(), meta.pin_memory()
        up = host.to(self.device, non_blocking=cuda).flatten(1, 2)  # (g, H*W, 4) uint8
        meta = meta.to(self.device, non_blocking=cuda)
        return up.view(torch.int32).squeeze(2), up[..., 3].bool(), meta

    def draws(self, size: tuple[int, int], keys: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The random tables' window of each frame key: the updates' draws (g, _ROWS, H*W) int16
        and the picks (g, N, H*W) int32, slices of the size's tables at an offset that is a hash
        of the key (made on the host: no wait)."""
        pool = self.pools.get(size) or self._new_pool(size)
        hw = size[0] * size[1]
        return (
            torch.stack([pool.draws[:, k % hw : k % hw + hw] for k in keys]),
            torch.stack([pool.picks[:, k % hw : k % hw + hw] for k in keys]),
        )

    def _step_group(self, size, pool: _Pool, rows: list[int], first: list[bool], slots: list[int], items):
        """Advance the clips of one frame size (in rows ``rows`` of ``pool``); returns their packed
        output (foreground bytes, then the reset count's 8 bytes, per clip) on the device."""
        p, n = self.params, self.params.n_samples
        keys = []
        for slot in slots:
            clip = self.clips[slot]
            keys.append(frame_key(self.seed, clip.frames))
            clip.frames += 1
        frame, exclude, meta = self._upload(items, rows, first)
        row, is_first = meta[0], meta[1].bool()
        g, hw = exclude.shape
        consecutive = rows == list(range(rows[0], rows[0] + g))  # known on the host: no wait
        if consecutive:  # the pool's rows themselves, updated in place
            store = pool.samples.narrow(0, rows[0], g)
            untrusted = pool.untrusted.narrow(0, rows[0], g)
        else:
            store = pool.samples.index_select(0, row)
            untrusted = pool.untrusted.index_select(0, row)
        samples = store[:, : n * hw].view(g, n, hw)  # (store: the clips' models and the sink)
        draws, picks = self.draws(size, keys)

        # initialisation, redraws and resets all take the same draw from this frame's neighbourhood
        drawn = self._neighbour_values(frame, pool.padding, picks, size)
        redraw = (untrusted & ~exclude) | is_first[:, None]
        torch.where(redraw[:, None], drawn, samples, out=samples)
        untrusted = torch.where(is_first[:, None], exclude, untrusted & exclude)
        background = is_background(self._matches(samples, frame), p)
        free = ~exclude
        reset = scene_changed((~background & free).sum(dim=1), free.sum(dim=1), p) & ~is_first
        untrusted = torch.where(reset[:, None], exclude, untrusted)
        updatable = background & free & ~(reset | is_first)[:, None]
        pixel = torch.arange(hw, device=self.device)
        sink = n * hw
        # a drawn background pixel replaces its own sample: one write per pixel, distinct places
        own = torch.where(updatable & draws[:, _OWN].bool(), draws[:, _OWN_SLOT].long() * hw + pixel, sink)
        store.scatter_(1, own, frame)
        store.scatter_(1, self._propagation(draws, updatable, exclude, pool.neighbours, sink), frame)
        torch.where(reset[:, None, None], drawn, samples, out=samples)

        if consecutive:
            pool.untrusted.narrow(0, rows[0], g).copy_(untrusted)
        else:
            pool.samples.index_copy_(0, row, store)
            pool.untrusted.index_copy_(0, row, untrusted)
        resets = pool.resets.index_select(0, row) + reset.long()
        pool.resets.index_copy_(0, row, resets)
        foreground = (~background & ~(reset | is_first)[:, None]).to(torch.uint8)
        count_bytes = resets.view(torch.uint8).view(g, 8)
        return torch.cat([foreground, count_bytes], dim=1).reshape(-1)

    @staticmethod
    def _neighbour_values(frame, padding, picks, size) -> torch.Tensor:
        """Each sample's value from its picked 8-neighbour: (g, N, HW) int32, one gather from the
        edge-padded frame (the same values as clamping to the border)."""
        g, hw = frame.shape
        n = picks.shape[1]
        h, w = size
        padded = frame.index_select(1, padding)  # (g, (H+2)*(W+2))
        dev = frame.device
        inner = (torch.arange(h, device=dev, dtype=torch.int32)[:, None] + 1) * (w + 2) + 1
        centre = (inner + torch.arange(w, device=dev, dtype=torch.int32)).reshape(-1)  # each pixel's padded place
        clip = torch.arange(g, device=dev, dtype=torch.int32)[:, None, None] * padded.shape[1]
        index = picks.add_(centre).add_(clip)  # (g, N, HW) int32 places in all the padded frames, in place
        return padded.reshape(-1).index_select(0, index.reshape(-1)).view(g, n, hw)

    def _matches(self, samples: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """Samples within L1 distance ``3 * radius`` of each pixel: (g, HW) uint8, in uint8 on the
        four bytes of each value at once: each channel's distance ``max - min`` capped at
        ``3 * radius + 1`` (a capped channel alone puts the sum over the threshold, and three capped
        ones stay below 256), then the sum of the R, G and B bytes."""
        cap = 3 * self.params.radius + 1
        g, n, hw = samples.shape
        s = samples.view(torch.uint8).view(g, n, hw, 4)
        f = frame.view(torch.uint8).view(g, 1, hw, 4)
        d = torch.maximum(s, f).sub_(torch.minimum(s, f)).clamp_max_(cap)
        distance = (d[..., 0] + d[..., 1]).add_(d[..., 2])
        return (distance < cap).view(torch.uint8).sum(dim=1, dtype=torch.uint8)

    def _propagation(self, draws, updatable, exclude, neighbours, sink) -> torch.Tensor:
        """Where each pixel's propagated write goes (flat place in its clip's samples, or ``sink``):
        a drawn background pixel writes its value into sample ``spread_slot`` of its picked
        8-neighbour, unless the person covers that neighbour; of the writes aimed at one place, the
        largest source pixel index wins (module docstring), the others go to the sink."""
        g, hw = updatable.shape
        pixel = torch.arange(hw, device=self.device)
        target = neighbours.reshape(-1)[pixel * 8 + draws[:, _DIRECTION]]  # (g, HW)
        write = updatable & draws[:, _SPREAD].bool() & ~exclude.gather(1, target)
        place = torch.where(write, draws[:, _SPREAD_SLOT].long() * hw + target, sink)
        source = (pixel + 1).to(torch.int32).expand(g, hw)
        best = torch.empty((g, sink + 1), dtype=torch.int32, device=self.device)  # read only where written
        best.scatter_reduce_(1, place, source, reduce="amax", include_self=False)
        return torch.where(best.gather(1, place) == source, place, sink)


class TorchViBe:
    """One clip's ViBe on a shared :class:`ViBeBank` (through the process's batch server), with
    :class:`pipeline.modalities.vibe.ViBe`'s interface: the constructor takes the first frame."""

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
    from pipeline.core.batching import BatchServer, shared_server

    def make():
        bank = ViBeBank(params, seed, device)
        return BatchServer(
            bank.step, bank.open, bank.close, max_batch=max_batch, max_wait_s=max_wait_ms / 1000, name="vibe"
        )

    server = shared_server(("vibe", params, seed, device), make)
    return lambda frame, exclude: TorchViBe(server.open(), frame, exclude)
