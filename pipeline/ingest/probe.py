"""Probing a clip with PyAV: what it holds and whether it is whole (SPEC section 2).

:func:`probe` reads the stream parameters (duration, frame count, average rate, coded size,
rotation, codecs, audio) and measures the *decodable* duration: it demuxes every video packet
and decodes the first frame and the last group of pictures (from the last keyframe to the end).
A clip whose decodable duration is under ``min_decodable_ratio`` (90 %) of what the container
claims was cut mid-stream and is rejected as ``TRUNCATED``.

Every probe runs under a wall-clock budget enforced for real: :class:`ProbeWorker` runs probes
in a separate process and kills it when a clip overruns, so a pathological file (a decoder that
spins, a file that blocks on read) is rejected as ``DECODE_TIMEOUT`` and the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from dataclasses import dataclass
from pathlib import Path

import av

from pipeline.core.decode import claimed_duration, clockwise_rotation
from pipeline.core.errors import ClipError, Reason

log = logging.getLogger(__name__)

MIN_DECODABLE_RATIO = 0.9  # SPEC section 2: under 90 % of the claimed duration is truncated


@dataclass(frozen=True)
class ProbeResult:
    duration_s: float  # decodable: first frame's presentation time to the end of the last decodable frame
    container_duration_s: float | None  # what the container claims
    frame_count: int  # video packets demuxed (one frame each)
    avg_fps: float
    width: int  # coded size, before rotation
    height: int
    rotation: int  # degrees clockwise that make the frame upright
    video_codec: str
    has_audio: bool
    audio_codec: str | None
    content_signature: str | None = None  # perceptual hashes + duration, survives re-encoding (signature.py)


def _looks_like_mp4(path: str | Path) -> bool:
    """True when the file starts with an ISO-BMFF ``ftyp`` box (MP4, MOV, 3GP)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return len(head) >= 8 and head[4:8] == b"ftyp"


def _decode(codec, packet) -> list:
    """Frames out of one packet; a corrupt packet yields nothing rather than ending the probe."""
    try:
        return list(codec.decode(packet))
    except av.error.FFmpegError:
        return []


class _Sampler:
    """Picks, during the demux pass, the frame shown at each of a few target times.

    The frame for target ``t`` is the latest frame whose presentation time is at or before
    ``t``. Packets are held one group of pictures at a time (keyframe to keyframe); a group is
    decoded only when a target falls inside it, and only up to that target, so a probe decodes
    a few short runs of the clip plus its last group (needed anyway for the decodable end).
    Frames leave a decoder in presentation order, B-frames included.
    """

    def __init__(self, codec, time_base, targets: list[float]):
        self.codec, self.tb, self.targets = codec, time_base, sorted(targets)
        self.frames: list = []  # one per target reached, in target order
        self.first = None  # the first frame of the clip (lowest presentation time)
        self.gop: list = []  # packets of the current group, keyframe first
        self._gop_start: float | None = None

    def _time(self, frame) -> float | None:
        return None if frame.pts is None else float(frame.pts * self.tb)

    def _pending(self, until: float | None) -> bool:
        return len(self.frames) < len(self.targets) and (until is None or self.targets[len(self.frames)] < until)

    def _run(self, until: float | None) -> int:
        """Decode the held group for the targets before ``until`` (None: the last group, decoded
        whole); returns the frames it decoded."""
        self.codec.flush_buffers()
        decoded, candidate = 0, None
        for packet in [*self.gop, None]:
            for frame in _decode(self.codec, packet):
                decoded += 1
                t = self._time(frame)
                if t is None:
                    continue
                if self.first is None or t < self._time(self.first):
                    self.first = frame
                while self._pending(until) and t > self.targets[len(self.frames)]:
                    self.frames.append(candidate if candidate is not None else frame)
                candidate = frame
            if until is not None and not self._pending(until) and self.first is not None:
                return decoded  # nothing more wanted from this group
        while candidate is not None and self._pending(until):
            self.frames.append(candidate)  # targets after the group's last frame (or past the end)
        return decoded

    def _first_only(self) -> None:
        self.codec.flush_buffers()
        for packet in [*self.gop, None]:
            frames = _decode(self.codec, packet)
            if frames:
                self.first = frames[0]
                return

    def packet(self, packet) -> None:
        t = None if packet.pts is None or self.tb is None else float(packet.pts * self.tb)
        # a keyframe without a presentation time cannot bound a group: it stays in the current one
        if (packet.is_keyframe and self.gop and t is not None) or not self.gop:
            if self.gop:
                if self._pending(t):
                    self._run(t)
                elif self.first is None:
                    self._first_only()
            self.gop, self._gop_start = [packet], t
        else:
            self.gop.append(packet)

    def finish(self) -> int:
        """Decode the last group whole; returns how many of its frames decode."""
        if not self.gop:
            return 0
        decoded = self._run(None)
        if self.first is None:
            self._first_only()
        return decoded


def _signature_targets(start: float, claimed: float | None) -> list[float]:
    """The presentation times of the content signature's frames (:func:`pipeline.ingest.signature.sample_times`)."""
    from pipeline.ingest.signature import sample_times

    return sample_times(start, claimed)


def probe(
    path: str | Path, *, min_decodable_ratio: float = MIN_DECODABLE_RATIO, clip_id: str | None = None
) -> ProbeResult:
    """Probe ``path``; raise :class:`ClipError` for a file that is not a whole, decodable video.

    One demux pass over the file, one open: every video packet is read (count, presentation
    times, durations); the frames of the content signature are decoded on the way
    (:class:`_Sampler`); then the last group of pictures is decoded to find the last decodable
    frame. The decodable duration is that frame's presentation time plus its duration, minus the
    first frame's presentation time; a missing packet duration is taken from the stream's
    average rate, and the result is cross-checked against the packet count and the container's
    claim (a debug line when they disagree by more than a frame).
    """
    from pipeline.ingest.signature import make_signature

    with _open(path, clip_id) as container:
        stream = _video_stream(container, path, clip_id)
        codec = stream.codec_context
        tb = stream.time_base
        claimed = claimed_duration(container, stream)
        audio = container.streams.audio
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        start = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else 0.0
        targets = _signature_targets(start, claimed)
        sampler = _Sampler(codec, tb, targets)
        packets, durations = _demux(container, stream, sampler, path)
        if packets == 0:
            raise ClipError(clip_id, Reason.ZERO_FRAMES, f"{path} holds no video frame")
        if packets == 1:
            # one frame is a picture, whatever the container: it has no motion and no duration
            raise ClipError(
                clip_id, Reason.NOT_A_VIDEO, f"{path} holds a single {codec.name} frame: a still image, not a video"
            )
        # the last group, decoded whole: frames leave the decoder in presentation order, so the
        # n that decode are the group's n earliest presentation times
        decoded = sampler.finish()
        if sampler.first is None:
            raise ClipError(clip_id, Reason.UNREADABLE, f"{path}: {packets} video packets but none decodes")
        duration = _decodable_duration(sampler, decoded, durations, tb, start, rate)
        if rate <= 0.0:
            rate = packets / duration if duration > 0 else 0.0
        if rate > 0 and abs(duration - packets / rate) > 1.5 / rate:
            log.debug("%s: %.3f s from timestamps, %d packets at %.3f fps", path, duration, packets, rate)
        if claimed and duration < min_decodable_ratio * claimed:
            raise ClipError(
                clip_id,
                Reason.TRUNCATED,
                f"{path}: decodable {duration:.2f} s of {claimed:.2f} s claimed ({duration / claimed:.0%} < {min_decodable_ratio:.0%})",
            )
        rotation = clockwise_rotation(sampler.first)
        hashes = _signature_hashes(sampler, targets, rotation, path)
        return ProbeResult(
            duration_s=round(duration, 6),
            container_duration_s=None if claimed is None else round(claimed, 6),
            frame_count=packets,
            avg_fps=rate,
            width=codec.width,
            height=codec.height,
            rotation=rotation,
            video_codec=codec.name,
            has_audio=bool(audio),
            audio_codec=audio[0].codec_context.name if audio else None,
            content_signature=make_signature(duration, hashes) if hashes else None,
        )


IMAGE_DEMUXERS = frozenset({"image2", "image2pipe", "gif", "apng", "ico", "jpegxl_anim"})
"""FFmpeg demuxers of image files, besides every ``*_pipe`` one (png_pipe, jpeg_pipe, webp_pipe, ...)."""


def image_format(container) -> str | None:
    """The demuxer's name when FFmpeg read the file as an image (still or animated), else None.

    The rule (BEHAVIOUR section 1, "not a video"): a file is a video only when FFmpeg opens it
    with a video container's demuxer. An image renamed ``.mp4`` is recognised by its content and
    opened with an image demuxer (``png_pipe``, ``jpeg_pipe``, ``webp_pipe``, ``gif``, ...),
    which PyAV presents as a one-frame stream at a made-up 25 fps; an animated GIF or PNG is an
    image format too (no audio, a palette, no platform serves dances so).
    """
    for name in (container.format.name or "").split(","):
        if name in IMAGE_DEMUXERS or name.endswith("_pipe"):
            return name
    return None


def _video_stream(container, path, clip_id: str | None):
    """The clip's video stream: the first one that is not an attached picture (cover art).

    Raises NOT_A_VIDEO for an image file (:func:`image_format`), a file without a video stream,
    or one whose only video streams are attached pictures.
    """
    image = image_format(container)
    if image is not None:
        codec = container.streams.video[0].codec_context.name if container.streams.video else "no"
        raise ClipError(
            clip_id, Reason.NOT_A_VIDEO, f"{path} is an image ({image} demuxer, {codec} codec), not a video"
        )
    if not container.streams.video:
        raise ClipError(clip_id, Reason.NOT_A_VIDEO, f"{path} has no video stream")
    moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not moving:
        raise ClipError(clip_id, Reason.NOT_A_VIDEO, f"{path} holds only an attached picture (cover art), no video")
    return moving[0]


def _open(path: str | Path, clip_id: str | None):
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        if _looks_like_mp4(path):
            # an MP4 header but no usable index: typically a file cut before its trailing 'moov'
            raise ClipError(
                clip_id, Reason.UNREADABLE, f"cannot open {path} (MP4 header, no usable index): {err}"
            ) from err
        raise ClipError(clip_id, Reason.NOT_A_VIDEO, f"cannot open {path}: {err}") from err


def _demux(container, stream, sampler: _Sampler, path) -> tuple[int, dict[int, int]]:
    """Read every video packet: their count and their durations by presentation time (time_base units)."""
    durations: dict[int, int] = {}
    packets = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's final flush packet
            packets += 1
            if packet.pts is not None:
                durations[packet.pts] = packet.duration or 0
            sampler.packet(packet)
    except av.error.FFmpegError as err:
        # a cut file ends in a short read: what was demuxed so far is judged by the caller
        log.debug("%s: demuxing stopped: %s", path, err)
    return packets, durations


def _decodable_duration(
    sampler: _Sampler, decoded: int, durations: dict[int, int], tb, start: float, rate: float
) -> float:
    """Seconds from the first frame to the end of the last decodable one (``decoded``: frames of the last group)."""
    gop_pts = sorted(p.pts for p in sampler.gop if p.pts is not None)
    first = sampler.first
    frame_dt = 1.0 / rate if rate > 0 else 0.0
    t0 = float(first.pts * tb) if first.pts is not None else start
    if decoded and gop_pts:
        last_pts = gop_pts[min(decoded, len(gop_pts)) - 1]
        last_dur = durations.get(last_pts, 0)
        end = float(last_pts * tb) + (float(last_dur * tb) if last_dur > 0 else frame_dt)
    else:
        end = t0 + frame_dt  # the last group did not decode: only the first frame is known good
    return max(0.0, end - t0)


def _signature_hashes(sampler: _Sampler, targets: list[float], rotation: int, path) -> list:
    from pipeline.ingest.signature import signature_hashes

    # the sampler holds its frames in time order; the signature wants them in the targets' order
    # (the instants of neighbouring slices interleave in a clip shorter than a few seconds)
    order = sorted(range(len(targets)), key=targets.__getitem__)
    frames = [None] * len(targets)
    for rank, index in enumerate(order[: len(sampler.frames)]):
        frames[index] = sampler.frames[rank]
    try:
        if None in frames:
            raise ValueError(f"{len(sampler.frames)} of {len(targets)} signature frames decoded")
        return signature_hashes(frames, rotation)
    except (av.error.FFmpegError, ValueError) as err:
        # a frame the hash cannot read leaves the clip without a signature, never rejects it
        log.warning("%s: no content signature (%s); near-duplicates of it will not be caught", path, err)
        return []


# -- the time budget ------------------------------------------------------------------------------


def _serve(conn) -> None:
    """Worker loop: probe each request; reply ("ok", result) or ("error", reason, message)."""
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        if request == "ping":
            conn.send("pong")
            continue
        path, ratio = request
        try:
            conn.send(("ok", probe(path, min_decodable_ratio=ratio)))
        except ClipError as err:
            conn.send(("error", err.reason.value, err.message))
        except Exception as err:  # noqa: BLE001 - any decoder failure is this clip's, not the run's
            conn.send(("error", Reason.UNREADABLE.value, f"{path}: {type(err).__name__}: {err}"))


class ProbeWorker:
    """Probes clips in a child process that is killed when one overruns its budget.

    Use as a context manager; one worker serves many clips and is restarted after a kill.
    The child is spawned (not forked) so it never inherits the parent's threads or locks.
    """

    def __init__(self, budget_s: float = 60.0, min_decodable_ratio: float = MIN_DECODABLE_RATIO):
        self.budget_s = budget_s
        self.min_decodable_ratio = min_decodable_ratio
        self._ctx = multiprocessing.get_context("spawn")
        self._process = None
        self._conn = None
        self._warned = False

    def __enter__(self) -> ProbeWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._process = self._ctx.Process(target=_serve, args=(child,), daemon=True, name="vdv-probe")
        self._process.start()
        child.close()
        self._conn = parent
        # the start-up (interpreter, imports) is not charged to the first clip's budget
        self._conn.send("ping")
        if not self._conn.poll(120) or self._conn.recv() != "pong":
            self._kill()
            raise RuntimeError("the probe worker process did not start")

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(10)
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
            if self._process is not None:
                self._process.join(5)
        self._kill()

    def probe(self, path: str | Path, clip_id: str | None = None, budget_s: float | None = None) -> ProbeResult:
        """Probe ``path`` within the budget; raise :class:`ClipError` (DECODE_TIMEOUT on overrun)."""
        budget = self.budget_s if budget_s is None else budget_s
        if multiprocessing.current_process().daemon:
            # a daemonic process (e.g. a process-pool worker) may not start children: probe here
            if not self._warned:
                log.warning("probing in a daemonic process: the %g s budget per clip cannot be enforced", budget)
                self._warned = True
            return probe(path, min_decodable_ratio=self.min_decodable_ratio, clip_id=clip_id)
        if self._process is None or not self._process.is_alive():
            self._start()
        self._conn.send((str(path), self.min_decodable_ratio))
        if not self._conn.poll(budget):
            self._kill()
            raise ClipError(clip_id, Reason.DECODE_TIMEOUT, f"{path}: probing exceeded its {budget:g} s budget")
        try:
            reply = self._conn.recv()
        except EOFError:
            self._kill()
            raise ClipError(clip_id, Reason.UNREADABLE, f"{path}: the decoder process died") from None
        if reply[0] == "ok":
            return reply[1]
        raise ClipError(clip_id, Reason(reply[1]), reply[2])


# -- probe workers shared by the tasks of one process ------------------------------------------------

_IDLE: dict[tuple[float, float], list[ProbeWorker]] = {}
_IDLE_LOCK = threading.Lock()


@contextlib.contextmanager
def borrowed_worker(budget_s: float, min_decodable_ratio: float = MIN_DECODABLE_RATIO):
    """A :class:`ProbeWorker` of this process for one probe, returned to the idle ones after.

    Tasks that probe one clip each (a thread pool, process-pool or Dask workers) so reuse a few
    child processes instead of starting one per clip; :func:`close_idle_workers` stops them.
    """
    key = (float(budget_s), float(min_decodable_ratio))
    with _IDLE_LOCK:
        idle = _IDLE.setdefault(key, [])
        worker = idle.pop() if idle else None
    worker = worker or ProbeWorker(budget_s, min_decodable_ratio)
    try:
        yield worker
    finally:
        with _IDLE_LOCK:
            _IDLE.setdefault(key, []).append(worker)


def close_idle_workers() -> None:
    """Stop this process's idle probe workers (each a child process)."""
    with _IDLE_LOCK:
        workers = [w for idle in _IDLE.values() for w in idle]
        _IDLE.clear()
    for worker in workers:
        worker.close()
