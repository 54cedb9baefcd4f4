"""Content signatures that survive re-encoding: near-duplicate uploads (SPEC section 2).

A re-upload of the same video, re-encoded with another codec, bitrate, resolution or frame rate,
has other bytes (another clip id) but shows the same pictures at the same times. Its signature
is made in the probe's own pass over the file (:func:`pipeline.ingest.probe.probe`, no extra open):

- ``SLICES`` (12) equal slices of the clip; around the middle of each, the frames shown at the
  ``INSTANTS_S`` (five instants 0.1 s apart) are averaged into one grey picture, so that which
  frames a re-encoder kept (another frame rate) hardly matters;
- of each slice's picture, a 64-bit perceptual hash (pHash): shrunk to 32 x 32 grey (whatever
  its resolution or aspect ratio), turned upright, its 2-D DCT, and one bit per coefficient of
  the 8 x 8 lowest frequencies (DC left out) saying whether it is above their median;
- the decodable duration.

Two clips are near-duplicates when their durations agree within ``DURATION_TOLERANCE_S`` plus
``DURATION_TOLERANCE_SHARE`` of the longer, and, slice by slice at the same times, every slice
but ``SPARE_SLICES`` (one: a cut, a caption) is within ``MAX_SLICE_BITS`` (6) bits of 64. The
decision rests on time-aligned evidence, not on a mean: takes of one challenge filmed in one
room share the background and the length, so their mean distance is small (6 to 9 bits under
the first rule, which dropped them), while at some moment of each slice pair the dancer stands
elsewhere.

Threshold and margins (``bench/bench_duplicates.py``, ``docs/DUPLICATES.md``): back-to-back
5.2 s windows of the real static-camera sample clips, each re-encoded four ways (MPEG-4 Part 2 at
half size and 120 kbit/s, H.265, half the frame rate, H.264 at half size and 60 kbit/s): the
re-encodings stay at or under 4 bits in every slice but one (2 bits under the threshold); distinct
windows of the clips with a moving performer at 10 bits or more (4 bits over it). Windows in
which nobody moves (an empty room, a person standing still at the same spot) show the same
coarse pictures and can match: 13 of the 325 window pairs of the surveillance sample clip do; a
reviewer's keep admits such a clip. Cropping, mirroring or overlays added by a re-uploader are
not covered.

:class:`SignatureIndex` finds the stored signatures that can match a query without comparing it
with every one, and the ingest pass (``pipeline.ingest.stage.near_duplicates``) decides with it exactly
as comparing every pair would.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

SIGNATURE_VERSION = "p2"  # a signature of another version never matches (p1: 6 single frames, mean rule)
SLICES = 12  # equal slices of the clip, one hash each, compared slice by slice
INSTANTS_S = (-0.2, -0.1, 0.0, 0.1, 0.2)  # around a slice's middle: the frames shown then are averaged
HASH_SIZE = 32  # side of the grey thumbnail the DCT is taken of
LOW_FREQUENCIES = 8  # 8 x 8 lowest DCT coefficients -> 64 bits (DC excluded, its bit is 0)
MAX_SLICE_BITS = 6  # near-duplicate: every slice but one within this many bits (of 64)
SPARE_SLICES = 1  # slices allowed beyond MAX_SLICE_BITS (a cut, a dropped or repeated frame)
DURATION_TOLERANCE_S = 0.25  # plus a share of the longer duration: re-encoders may drop or add a frame
DURATION_TOLERANCE_SHARE = 0.02


def sample_times(start: float, length: float | None) -> list[float]:
    """Presentation times whose frames make the signature: ``len(INSTANTS_S)`` instants around the
    middle of each of ``SLICES`` equal slices of the clip, slice by slice (frame rate independent:
    the frame shown at an instant is what a viewer sees then, whatever the rate)."""
    if not length or length <= 0:
        # no claimed duration (rare): one slice per second from the start
        middles = [start + 0.5 + k for k in range(SLICES)]
    else:
        middles = [start + length * (k + 0.5) / SLICES for k in range(SLICES)]
    return [m + d for m in middles for d in INSTANTS_S]


def signature_hashes(frames: list, rotation: int = 0) -> list[int]:
    """One hash per slice from the frames shown at :func:`sample_times` (in that order): the
    pHash of their mean grey picture. Averaging a few tenths of a second makes the hash
    insensitive to which frame a re-encoder kept (another frame rate) and to coding noise."""
    per = len(INSTANTS_S)
    if len(frames) != SLICES * per:
        raise ValueError(f"{len(frames)} frames for a {SLICES} x {per} signature")
    side = 4 * HASH_SIZE
    greys = [f.to_ndarray(format="gray", width=side, height=side).astype(np.float32) for f in frames]
    return [image_hash(np.mean(greys[k * per : (k + 1) * per], axis=0), rotation) for k in range(SLICES)]


def frame_hash(frame, rotation: int = 0) -> int:
    """64-bit pHash of a PyAV video frame, upright (``rotation`` degrees clockwise)."""
    import cv2

    grey = frame.to_ndarray(format="gray", width=4 * HASH_SIZE, height=4 * HASH_SIZE)
    return image_hash(grey, rotation, cv2)


def image_hash(grey: np.ndarray, rotation: int = 0, cv2=None) -> int:
    """64-bit pHash of a grey image (any size), turned ``rotation`` degrees clockwise first."""
    if cv2 is None:
        import cv2
    if rotation % 360:
        grey = np.rot90(grey, k=-(rotation // 90) % 4)
    small = cv2.resize(np.ascontiguousarray(grey), (HASH_SIZE, HASH_SIZE), interpolation=cv2.INTER_AREA)
    coefficients = cv2.dct(small.astype(np.float32))[:LOW_FREQUENCIES, :LOW_FREQUENCIES].reshape(-1)
    ac = coefficients[1:]
    bits = np.concatenate([[False], ac > np.median(ac)])
    return int("".join("1" if b else "0" for b in bits), 2)


def make_signature(duration_s: float, hashes: list[int]) -> str:
    """``p2:<duration ms>:<hash>,<hash>,...`` (hashes as 16 hex digits), stored in the clips table."""
    return f"{SIGNATURE_VERSION}:{round(duration_s * 1000)}:" + ",".join(f"{h:016x}" for h in hashes)


def signature_version(text: str | None) -> str | None:
    """The version prefix of a stored signature (None for none)."""
    return text.partition(":")[0] if text else None


@dataclass(frozen=True)
class Signature:
    duration_s: float
    hashes: tuple[int, ...]

    @classmethod
    def parse(cls, text: str | None) -> Signature | None:
        """The signature of ``text``; None for a missing one or one of another version."""
        if not text:
            return None
        version, _, rest = text.partition(":")
        if version != SIGNATURE_VERSION:
            return None
        millis, _, hashes = rest.partition(":")
        return cls(int(millis) / 1000, tuple(int(h, 16) for h in hashes.split(",") if h))


def slice_bits(a: Signature, b: Signature) -> list[int]:
    """Hamming distance of the two hashes of each slice, slice by slice."""
    return [(x ^ y).bit_count() for x, y in zip(a.hashes, b.hashes, strict=False)]


def mean_bits(a: Signature, b: Signature) -> float:
    """Mean Hamming distance of the slice hashes (64 when there are none)."""
    bits = slice_bits(a, b)
    return sum(bits) / len(bits) if bits else 64.0


def durations_agree(a: Signature, b: Signature) -> bool:
    longer = max(a.duration_s, b.duration_s)
    return abs(a.duration_s - b.duration_s) <= DURATION_TOLERANCE_S + DURATION_TOLERANCE_SHARE * longer


def near_duplicate(a: Signature | None, b: Signature | None, max_slice_bits: int = MAX_SLICE_BITS) -> float | None:
    """The mean hash distance when ``a`` and ``b`` show the same video, else None.

    Same video: durations agree, both have the same number of slices, and every slice but
    ``SPARE_SLICES`` is within ``max_slice_bits`` of its counterpart at the same time.
    """
    if a is None or b is None or not a.hashes or len(a.hashes) != len(b.hashes) or not durations_agree(a, b):
        return None
    bits = slice_bits(a, b)
    if sum(d > max_slice_bits for d in bits) > SPARE_SLICES:
        return None
    return sum(bits) / len(bits)


# -- finding near-duplicates among many clips -----------------------------------------------------

BANDS = 4  # each indexed slice hash is cut into this many 16-bit bands
BAND_BITS = 64 // BANDS
BAND_SLACK = MAX_SLICE_BITS // BANDS  # bits a band of a matching slice may differ by (pigeonhole)
INDEXED_SLICES = SPARE_SLICES + 1  # of the first this many slices, at least one is within MAX_SLICE_BITS
_BAND_MASK = (1 << BAND_BITS) - 1


# every band value within BAND_SLACK bits of a value v is v ^ mask for one of these masks
_NEAR_MASKS = tuple(
    sum(1 << b for b in bits) for r in range(BAND_SLACK + 1) for bits in itertools.combinations(range(BAND_BITS), r)
)
if BANDS * (BAND_SLACK + 1) <= MAX_SLICE_BITS:
    raise RuntimeError("SignatureIndex would miss near-duplicates: BANDS * (BAND_SLACK + 1) must exceed MAX_SLICE_BITS")


class SignatureIndex:
    """Signatures indexed so that every one that can be a near-duplicate of a query is found
    without comparing the query with all of them (multi-index hashing).

    Why nothing is missed: a near-duplicate has at most ``SPARE_SLICES`` slices beyond
    ``MAX_SLICE_BITS``, so of its first ``INDEXED_SLICES`` slices one at least is within
    ``MAX_SLICE_BITS`` bits of the query's; cut into ``BANDS`` bands, that slice has a band within
    ``BAND_SLACK`` bits (``BANDS`` bands of ``BAND_SLACK + 1`` bits or more would need more than
    ``MAX_SLICE_BITS``). The index keys every stored signature under each band of its first
    ``INDEXED_SLICES`` slices; a query looks up its own bands and their values within
    ``BAND_SLACK`` bits. The candidates are then confirmed by :func:`near_duplicate` itself, so the
    decisions are those of comparing every pair.
    """

    def __init__(self):
        self._table: dict[tuple[int, int, int], list[int]] = {}
        self.signatures: list[Signature] = []
        # the hashes and durations of the stored signatures of SLICES slices, as arrays, so that the
        # candidates of a query are confirmed in one vector operation
        self._hashes = np.zeros((1024, SLICES), dtype=np.uint64)
        self._durations = np.zeros(1024, dtype=np.float64)

    def add(self, signature: Signature) -> int:
        """Store ``signature``; returns its position (the order of :meth:`add` calls)."""
        position = len(self.signatures)
        self.signatures.append(signature)
        if len(signature.hashes) == SLICES:
            if position >= len(self._durations):
                self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
                self._durations = np.concatenate([self._durations, np.zeros_like(self._durations)])
            self._hashes[position] = signature.hashes
            self._durations[position] = signature.duration_s
            for key in self._keys(signature):
                self._table.setdefault(key, []).append(position)
        return position

    @staticmethod
    def _keys(signature: Signature):
        for s, h in enumerate(signature.hashes[:INDEXED_SLICES]):
            for band in range(BANDS):
                yield (s, band, (h >> (band * BAND_BITS)) & _BAND_MASK)

    def candidates(self, signature: Signature) -> set[int]:
        """Positions of the stored signatures that may be near-duplicates of ``signature``."""
        found: set[int] = set()
        table = self._table
        for s, band, value in self._keys(signature):
            for mask in _NEAR_MASKS:
                hit = table.get((s, band, value ^ mask))
                if hit:
                    found.update(hit)
        return found

    def best_match(self, signature: Signature) -> tuple[int, float] | None:
        """(position, mean bits) of the closest stored near-duplicate of ``signature``; the earliest
        stored among equally close ones; None when there is none (:func:`near_duplicate` decides)."""
        if len(signature.hashes) != SLICES:  # not of this version's shape: compared one by one
            return best_match_pairwise(self.signatures, signature)
        found = self.candidates(signature)
        if not found:
            return None
        positions = np.fromiter(sorted(found), dtype=np.int64, count=len(found))
        durations = self._durations[positions]
        agree = np.abs(durations - signature.duration_s) <= (
            DURATION_TOLERANCE_S + DURATION_TOLERANCE_SHARE * np.maximum(durations, signature.duration_s)
        )
        positions = positions[agree]
        if not len(positions):
            return None
        query = np.array(signature.hashes, dtype=np.uint64)
        bits = np.bitwise_count(self._hashes[positions] ^ query).astype(np.int64)
        close = (bits > MAX_SLICE_BITS).sum(axis=1) <= SPARE_SLICES
        if not close.any():
            return None
        totals = bits.sum(axis=1)[close]
        best = int(np.argmin(totals))  # the first of the smallest: positions are in storing order
        return int(positions[close][best]), int(totals[best]) / SLICES


def best_match_pairwise(stored: list[Signature], signature: Signature) -> tuple[int, float] | None:
    """What :meth:`SignatureIndex.best_match` answers, by comparing ``signature`` with every stored one."""
    best = None
    for position, other in enumerate(stored):
        bits = near_duplicate(other, signature)
        if bits is not None and (best is None or bits < best[1]):
            best = (position, bits)
    return best
