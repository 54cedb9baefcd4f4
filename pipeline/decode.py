"""Streaming video decoding on a constant time grid (SPEC section 4).

Sampling rule
-------------
Grid times are ``t_k = k / fps`` for ``k = 0, 1, ...`` measured from the first decoded frame's
presentation time, while ``t_k`` is before the end of the stream (last frame's time plus one
frame duration). Sample ``k`` is the *latest* decoded frame whose time is at or before ``t_k``.
A source slower than the target therefore repeats its latest frame; a faster one drops frames;
a variable-frame-rate source is handled by its real timestamps. The rule depends only on the
stream's timestamps, so every run picks the same frames.

Frames are yielded one by one (only the current and previous decoded frame are held), rotated
upright from the stream's display matrix, converted to RGB ``uint8`` and optionally resized.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from pipeline.errors import ClipError, Reason


@dataclass(frozen=True)
class Sample:
    """One grid sample: ``index`` k, grid time ``t`` (s), the source frame's time and image."""

    index: int
    t: float
    source_t: float
    image: np.ndarray  # (H, W, 3) uint8 RGB, upright


@dataclass(frozen=True)
class DecodeParams:
    """How frames are picked and shaped; recorded in every feature row's provenance."""

    fps: float = 25.0  # target rate of the time grid
    short_side: int | None = None  # resize so the shorter side has this many pixels
    max_side: int | None = None  # or: shrink so the longer side is at most this (never enlarge)
    start_s: float = 0.0  # first grid time to yield
    end_s: float | None = None  # stop before this grid time
    time_budget_s: float | None = None  # wall-clock budget; exceeding it raises DECODE_TIMEOUT

    def as_dict(self) -> dict:
        return {"fps": self.fps, "short_side": self.short_side, "max_side": self.max_side}


def clockwise_rotation(frame: av.VideoFrame) -> int:
    """Degrees clockwise that make ``frame`` upright (0, 90, 180 or 270).

    ``frame.rotation`` is FFmpeg's display-matrix angle, counter-clockwise; the player turns the
    picture by its negation, as ``ffmpeg``'s autorotate does.
    """
    return int(round(-frame.rotation)) % 360


def _target_size(width: int, height: int, params: DecodeParams) -> tuple[int, int]:
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
    width, height = _target_size(frame.width, frame.height, params)
    if (width, height) != (frame.width, frame.height):
        image = frame.to_ndarray(format="rgb24", width=width, height=height)
    else:
        image = frame.to_ndarray(format="rgb24")
    k = clockwise_rotation(frame) // 90
    if k:
        image = np.ascontiguousarray(np.rot90(image, -k))
    return image


def iter_samples(
    path: str | Path, params: DecodeParams = DecodeParams(), clip_id: str | None = None
) -> Iterator[Sample]:
    """Yield the grid samples of ``path`` in order (see the module docstring for the rule).

    Raises :class:`ClipError` for a file that cannot be opened or decoded, has no video stream,
    yields no frame, or runs past ``params.time_budget_s``.
    """
    deadline = None if params.time_budget_s is None else time.monotonic() + params.time_budget_s
    try:
        container = av.open(str(path), timeout=params.time_budget_s)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise ClipError(clip_id, Reason.NOT_A_VIDEO, f"cannot open {path}: {err}") from err
    with container:
        if not container.streams.video:
            raise ClipError(clip_id, Reason.NOT_A_VIDEO, f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        period = 1.0 / params.fps
        k = max(0, math.ceil(params.start_s * params.fps - 1e-9))
        t0 = None
        prev = None  # (time, frame) of the latest frame at or before the next grid time
        frame_dt = 1.0 / float(stream.average_rate) if stream.average_rate else period
        try:
            for frame in container.decode(stream):
                if deadline is not None and time.monotonic() > deadline:
                    raise ClipError(clip_id, Reason.DECODE_TIMEOUT, f"decoding exceeded {params.time_budget_s} s")
                if frame.time is None:
                    continue
                if t0 is None:
                    t0 = frame.time
                ft = frame.time - t0
                if prev is not None and ft > prev[0]:
                    frame_dt = ft - prev[0]
                # every grid time before this frame is served by the previous frame
                while prev is not None and k * period < ft - 1e-9:
                    t = k * period
                    if params.end_s is not None and t >= params.end_s:
                        return
                    yield Sample(k, t, prev[0], _to_rgb(prev[1], params))
                    k += 1
                prev = (ft, frame)
        except av.error.FFmpegError as err:
            if prev is None:
                raise ClipError(clip_id, Reason.UNREADABLE, f"cannot decode {path}: {err}") from err
            # a corrupt tail: yield what decoded; ingest's truncation rule judges the clip
        if prev is None:
            raise ClipError(clip_id, Reason.ZERO_FRAMES, f"{path} decoded no frame")
        end = prev[0] + frame_dt
        while k * period < end - 1e-9:
            t = k * period
            if params.end_s is not None and t >= params.end_s:
                return
            yield Sample(k, t, prev[0], _to_rgb(prev[1], params))
            k += 1


def grid_times(duration_s: float, fps: float) -> np.ndarray:
    """The grid times a clip of ``duration_s`` gets at ``fps`` (same rule as ``iter_samples``)."""
    n = max(0, math.ceil(duration_s * fps - 1e-9))
    return np.arange(n, dtype=np.float64) / fps


@dataclass(frozen=True)
class StreamInfo:
    """What every feature row records about its source: upright native size and declared rate."""

    width: int
    height: int
    fps: float | None  # the container's average frame rate; None when it declares none


def stream_info(path: str | Path, clip_id: str | None = None) -> StreamInfo:
    """Upright (width, height) of the first frame and the average rate, in one container open."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(clip_id, Reason.NOT_A_VIDEO, f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            for frame in container.decode(stream):
                if clockwise_rotation(frame) in (90, 270):
                    return StreamInfo(frame.height, frame.width, fps)
                return StreamInfo(frame.width, frame.height, fps)
    except (av.error.FFmpegError, OSError) as err:
        raise ClipError(clip_id, Reason.UNREADABLE, f"cannot decode {path}: {err}") from err
    raise ClipError(clip_id, Reason.ZERO_FRAMES, f"{path} decoded no frame")


def source_fps(path: str | Path) -> float:
    """Average frame rate the container declares (0.0 when unknown)."""
    return stream_info(path).fps or 0.0
