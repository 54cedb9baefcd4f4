"""Streaming video decoding on constant time grids, one pass per clip.

Sampling rule
-------------
Grid times are ``t_k = k / fps`` for ``k = 0, 1, ...`` measured from the first decoded frame's
presentation time, while ``t_k`` is before the end of the stream (last frame's time plus one
frame duration). Sample ``k`` is the *latest* decoded frame whose time is at or before ``t_k``.
A source slower than the target therefore repeats its latest frame; a faster one drops frames;
a variable-frame-rate source is handled by its real timestamps. The rule depends only on the
stream's timestamps, so every run picks the same frames.

One pass, many grids
--------------------
:func:`decode_pass` opens a clip once and serves any number of grids (:class:`DecodeParams`:
rate, size, time window) from that single decode: each decoded frame is converted, by swscale
straight from the decoded picture, to the size of every grid that samples it. A grid's samples
are therefore the same whichever other grids share the pass, which is what keeps every
modality's features, and so its shard identity, independent of what ran beside it.
:func:`iter_samples` is the one-grid case. Only the current and previous decoded frame are held
(plus a short bounded queue of converted samples), so memory does not grow with clip length.

Frames are rotated upright from the stream's display matrix and converted to RGB ``uint8``.
The pass also reports the clip's upright native size and declared rate
(:class:`StreamInfo`), taken from the same open.

The decode budget
-----------------
Decoding runs in a thread of its own that feeds a bounded queue, so it overlaps with the
models that consume the samples. ``budget_s`` bounds the time spent *inside the decoder*
(demuxing, decoding and converting frames), not the consumers' time: a slow model never makes
a clip time out, while a decoder that stalls or spins is given up on once its own time passes
the budget, and the clip is rejected ``decode_timeout``. A decoder stuck inside a native call
cannot be interrupted from Python; its thread is left to finish on its own (it is a daemon
thread and holds only this clip's file).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.errors import ClipError, Reason

if TYPE_CHECKING:
    import av

QUEUE_SIZE = 16  # converted samples the decoder may run ahead of the consumers
HELD_FRAMES = 2  # decoded pictures the pass holds: the previous and the current frame
# pictures a codec may hold inside FFmpeg (an estimate, not counted here): H.264's 16 reference
# frames and one per frame thread (thread_type AUTO: about one per core, 17 on 16 cores)
CODEC_FRAMES = 33
_POLL_S = 0.05  # how often a waiting consumer checks the decoder's clock


@dataclass(frozen=True)
class Sample:
    """One grid sample: ``index`` k, grid time ``t`` (s), the source frame's time and image."""

    index: int
    t: float
    source_t: float
    image: np.ndarray  # (H, W, 3) uint8 RGB, upright


@dataclass(frozen=True)
class DecodeParams:
    """How a grid's frames are picked and shaped; recorded in every feature row's provenance."""

    fps: float = 25.0  # target rate of the time grid
    short_side: int | None = None  # resize so the shorter side has this many pixels
    max_side: int | None = None  # or: shrink so the longer side is at most this (never enlarge)
    start_s: float = 0.0  # first grid time to yield
    end_s: float | None = None  # stop before this grid time

    def __post_init__(self):
        if not self.fps > 0:
            raise ValueError(f"grid rate must be positive, got fps = {self.fps}")

    def as_dict(self) -> dict:
        return {"fps": self.fps, "short_side": self.short_side, "max_side": self.max_side}


def check_grid(section: str, *, fps: float, end_s: float | None = None, **sizes: int | None) -> None:
    """Refuse grid settings no clip can be sampled on, naming ``[section]`` and the key.

    Each modality's configuration calls it from ``__post_init__``, so that ``[pose] fps = -25``
    is a configuration error when the file is read (one line, exit code 2), not an error of
    :class:`DecodeParams` in every clip's task inside a build. ``sizes``: pixel sizes by key
    (``max_side``, ``short_side``, ...), None where unset.
    """
    if not fps > 0:
        raise ValueError(f"[{section}] fps = {fps} must be positive (samples per second of the time grid)")
    if end_s is not None and not end_s > 0:
        raise ValueError(f"[{section}] end_s = {end_s} must be positive (seconds of the clip), or left out")
    for key, value in sizes.items():
        if value is not None and value < 1:
            raise ValueError(f"[{section}] {key} = {value} must be at least 1 (pixels)")


@dataclass(frozen=True)
class StreamInfo:
    """What every feature row records about its source: upright native size and declared rate."""

    width: int
    height: int
    fps: float | None  # the container's average frame rate; None when it declares none


def claimed_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Seconds the container claims for ``stream``: the stream's own duration, else the file's."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base
    return None


def clockwise_rotation(frame: av.VideoFrame) -> int:
    """Degrees clockwise that make ``frame`` upright (0, 90, 180 or 270).

    ``frame.rotation`` is FFmpeg's display-matrix angle, counter-clockwise; the player turns the
    picture by its negation, as ``ffmpeg``'s autorotate does.
    """
    return int(round(-frame.rotation)) % 360


def target_size(width: int, height: int, params: DecodeParams) -> tuple[int, int]:
    """Output (width, height) of the *coded* frame that gives the requested upright size."""
    scale = 1.0
    if params.short_side:
        scale = params.short_side / min(width, height)
    if params.max_side and max(width, height) * scale > params.max_side:
        scale = params.max_side / max(width, height)
    if scale == 1.0:
        return width, height
    # even sizes keep swscale's chroma handling exact
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _to_rgb(frame: av.VideoFrame, params: DecodeParams) -> np.ndarray:
    width, height = target_size(frame.width, frame.height, params)
    if (width, height) != (frame.width, frame.height):
        image = frame.to_ndarray(format="rgb24", width=width, height=height)
    else:
        image = frame.to_ndarray(format="rgb24")
    k = clockwise_rotation(frame) // 90
    if k:
        image = np.ascontiguousarray(np.rot90(image, -k))
    return image


class _Grid:
    """One grid's position in the pass: which grid time comes next, and whether it is done."""

    def __init__(self, params: DecodeParams):
        self.params = params
        self.period = 1.0 / params.fps
        self.k = max(0, math.ceil(params.start_s * params.fps - 1e-9))
        self.done = False

    def due(self, before: float) -> Iterator[float]:
        """Grid times strictly before ``before`` (s from the first frame) not yet served."""
        while not self.done and self.k * self.period < before - 1e-9:
            t = self.k * self.period
            if self.params.end_s is not None and t >= self.params.end_s:
                self.done = True
                return
            yield t
            self.k += 1


class _Decoder(threading.Thread):
    """Decodes one clip for several grids into a bounded queue of ``(grid, Sample)`` items.

    ``busy_s()`` is the time spent inside the decoder so far (the budget's clock); it excludes
    the time spent waiting for the consumers to take samples off the queue.
    """

    def __init__(self, path: str | Path, grids: Sequence[DecodeParams], clip_id: str | None):
        super().__init__(name=f"vdv-decode-{Path(path).name}", daemon=True)
        self.path, self.clip_id = str(path), clip_id
        self.grids = [_Grid(p) for p in grids]
        self.items: queue.Queue = queue.Queue(QUEUE_SIZE)
        self.stop = threading.Event()
        self.info: StreamInfo | None = None
        self.frames_decoded = 0  # frames out of the codec, every one (sampled or not)
        self._busy = 0.0
        self._since: float | None = None  # start of the decoder call in progress
        self._lock = threading.Lock()

    def busy_s(self) -> float:
        with self._lock:
            running = 0.0 if self._since is None else time.monotonic() - self._since
            return self._busy + running

    def _enter(self) -> None:
        with self._lock:
            self._since = time.monotonic()

    def _leave(self) -> None:
        with self._lock:
            if self._since is not None:
                self._busy += time.monotonic() - self._since
            self._since = None

    def _put(self, item) -> bool:
        """Hand ``item`` to the consumers; the wait for room in the queue is not decoder time."""
        self._leave()
        try:
            while not self.stop.is_set():
                try:
                    self.items.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            self._enter()

    def _emit(self, prev: tuple[float, av.VideoFrame], before: float) -> bool:
        for i, grid in enumerate(self.grids):
            for t in grid.due(before):
                image = _to_rgb(prev[1], grid.params)
                if not self._put((i, Sample(grid.k, t, prev[0], image))):
                    return False
        return not all(g.done for g in self.grids)

    def run(self) -> None:
        # the clock runs for everything this thread does except waiting to hand samples over
        self._enter()
        try:
            self._decode()
        except ClipError as err:
            self._put(err)
        except Exception as err:  # noqa: BLE001 - handed to the consumer, which owns error policy
            self._put(err)
        finally:
            self._put(None)
            self._leave()

    def _decode(self) -> None:
        import av  # PyAV: imported by the decoding thread, not by the readers of the grid's types

        path, clip_id = self.path, self.clip_id
        try:
            container = av.open(path)
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
            raise ClipError(clip_id, Reason.NOT_A_VIDEO, f"cannot open {path}: {err}") from err
        with container:
            if not container.streams.video:
                raise ClipError(clip_id, Reason.NOT_A_VIDEO, f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate) if stream.average_rate else None
            frames = container.decode(stream)
            t0 = None
            prev = None  # (time, frame) of the latest frame at or before the next grid time
            frame_dt = 1.0 / rate if rate else 1.0 / max(g.params.fps for g in self.grids)
            while not self.stop.is_set():
                try:
                    frame = next(frames, None)
                except av.error.FFmpegError as err:
                    if prev is None:
                        raise ClipError(clip_id, Reason.UNREADABLE, f"cannot decode {path}: {err}") from err
                    break  # a corrupt tail: serve what decoded; ingest's truncation rule judges the clip
                if frame is None:
                    break
                self.frames_decoded += 1
                if frame.time is None:
                    continue
                if t0 is None:
                    t0 = frame.time
                    upright = clockwise_rotation(frame) in (90, 270)
                    self.info = StreamInfo(
                        frame.height if upright else frame.width, frame.width if upright else frame.height, rate
                    )
                ft = frame.time - t0
                if prev is not None and ft > prev[0]:
                    frame_dt = ft - prev[0]
                # every grid time before this frame is served by the previous frame
                if prev is not None and not self._emit(prev, ft):
                    return
                prev = (ft, frame)
            if self.stop.is_set():
                return
            if prev is None:
                raise ClipError(clip_id, Reason.ZERO_FRAMES, f"{path} decoded no frame")
            self._emit(prev, prev[0] + frame_dt)


class DecodePass:
    """One decode of ``path`` serving ``grids``; iterate for ``(grid index, Sample)`` in order.

    Use as a context manager (or exhaust it): leaving early stops the decoder. Raises
    :class:`ClipError` for a file that cannot be opened or decoded, has no video stream,
    yields no frame, or whose decoding takes more than ``budget_s`` seconds of decoder time.
    ``info`` is the clip's :class:`StreamInfo` once the first frame has decoded.
    """

    def __init__(
        self,
        path: str | Path,
        grids: Sequence[DecodeParams],
        clip_id: str | None = None,
        *,
        budget_s: float | None = None,
    ):
        if not grids:
            raise ValueError("a decode pass needs at least one grid")
        self.path, self.clip_id, self.budget_s = path, clip_id, budget_s
        self._decoder = _Decoder(path, grids, clip_id)

    @property
    def info(self) -> StreamInfo | None:
        return self._decoder.info

    def decoder_seconds(self) -> float:
        """Time spent inside the decoder so far (what the budget counts)."""
        return self._decoder.busy_s()

    @property
    def frames_decoded(self) -> int:
        """Frames the codec has put out in this pass so far, sampled by a grid or not: the cost of
        the pass (a clip decoded whole is its frame count; the build report's "decoded frames per
        kept clip" adds up every pass a clip had)."""
        return self._decoder.frames_decoded

    def __enter__(self) -> DecodePass:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._decoder.stop.set()

    def _over_budget(self) -> bool:
        return self.budget_s is not None and self._decoder.busy_s() > self.budget_s

    def __iter__(self) -> Iterator[tuple[int, Sample]]:
        decoder = self._decoder
        decoder.start()
        try:
            while True:
                try:
                    item = decoder.items.get(timeout=_POLL_S)
                except queue.Empty:
                    if self._over_budget():
                        raise ClipError(
                            self.clip_id,
                            Reason.DECODE_TIMEOUT,
                            f"decoding {self.path} took more than its {self.budget_s:g} s budget",
                        ) from None
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                if self._over_budget():
                    raise ClipError(
                        self.clip_id,
                        Reason.DECODE_TIMEOUT,
                        f"decoding {self.path} took more than its {self.budget_s:g} s budget",
                    )
                yield item
        finally:
            self.close()


def decode_pass(
    path: str | Path, grids: Sequence[DecodeParams], clip_id: str | None = None, *, budget_s: float | None = None
) -> DecodePass:
    """One decode of ``path`` for every grid of ``grids`` (see :class:`DecodePass`)."""
    return DecodePass(path, grids, clip_id, budget_s=budget_s)


def iter_samples(
    path: str | Path,
    params: DecodeParams = DecodeParams(),
    clip_id: str | None = None,
    *,
    budget_s: float | None = None,
) -> Iterator[Sample]:
    """Yield the grid samples of ``path`` in order: a :func:`decode_pass` with one grid."""
    with decode_pass(path, [params], clip_id, budget_s=budget_s) as one:
        for _, sample in one:
            yield sample


def host_bytes_in_flight(clips: int, width: int = 1920, height: int = 1080) -> int:
    """Host memory the decoding of ``clips`` clips in flight holds at most, frames of ``width`` x
    ``height``: per clip :data:`QUEUE_SIZE` converted RGB samples (at most full size), one more in
    the consumer's hands (a batch holds one frame of each clip), and :data:`HELD_FRAMES` +
    :data:`CODEC_FRAMES` decoded YUV 4:2:0 pictures. 64 clips of 1080p: about 12.8 GiB."""
    rgb, yuv = width * height * 3, width * height * 3 // 2
    return clips * ((QUEUE_SIZE + 1) * rgb + (HELD_FRAMES + CODEC_FRAMES) * yuv)


def decoded_per_clip(decoded: dict[str, int], clips: Sequence[dict]) -> dict:
    """The decoding a run did for ``clips`` (the kept ones), from ``decoded`` (clip_id -> frames
    out of the codec in all of the run's passes over it) and each clip's ``frame_count``.

    ``ratio``: decoded frames over the frame count of the clips the run decoded (1.0: each decoded
    once); ``max_ratio`` the worst clip's; clips the run did not decode (everything reused) are
    counted apart, as ``not_decoded``.
    """
    counted = [c for c in clips if decoded.get(c["clip_id"]) and c.get("frame_count")]
    frames = sum(int(c["frame_count"]) for c in counted)
    total = sum(decoded[c["clip_id"]] for c in counted)
    return {
        "clips": len(counted),
        "not_decoded": sum(not decoded.get(c["clip_id"]) for c in clips),
        "decoded_frames": total,
        "frame_count": frames,
        "ratio": round(total / frames, 3) if frames else None,
        "max_ratio": max((round(decoded[c["clip_id"]] / int(c["frame_count"]), 3) for c in counted), default=None),
    }


def grid_times(duration_s: float, fps: float) -> np.ndarray:
    """The grid times a clip of ``duration_s`` gets at ``fps`` (same rule as ``iter_samples``)."""
    n = max(0, math.ceil(duration_s * fps - 1e-9))
    return np.arange(n, dtype=np.float64) / fps


def stream_info(path: str | Path, clip_id: str | None = None) -> StreamInfo:
    """Upright (width, height) of the first frame and the average rate (one open, first frame only)."""
    with decode_pass(path, [DecodeParams(fps=1.0, max_side=2, end_s=1e-9)], clip_id) as one:
        for _ in one:
            pass
        if one.info is None:
            raise ClipError(clip_id, Reason.ZERO_FRAMES, f"{path} decoded no frame")
        return one.info


class PassShared:
    """Per-clip state that the consumers of one decode pass share, created by the first that asks.

    ``get(key, make)`` returns the object stored under ``key``, made by ``make()`` the first time.
    The key names everything that decides the object's output (the grid included), so only
    consumers that would compute the same thing share it: pose's landmarks and scenic's person
    mask share one tracking BlazePose (:class:`pipeline.blazepose.track.PoseTrack`) on their common grid.
    Each consumer releases what it took in its ``close``; one instance lives for one pass.
    """

    def __init__(self):
        self._items: dict = {}

    def get(self, key, make):
        if key not in self._items:
            self._items[key] = make()
        return self._items[key]


@dataclass(frozen=True)
class SharedRun:
    """A per-clip computation an extractor can share with others in one pass (:class:`PassShared`).

    Extractors of one build share it when their ``key`` agrees; ``hint`` says what to set when it
    does not (the extraction loop warns once per build)."""

    kind: str  # what is shared, e.g. "BlazePose" (one tracking run per clip)
    key: Hashable  # everything that decides its output, the grid included
    hint: str  # how to make the keys agree
