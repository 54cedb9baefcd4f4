"""The training loader's cache of decoded feature files (docs/SCALE.md, "The training loader").

Decoding a clip's nested Parquet list costs milliseconds of CPU (Arrow rebuilds
``list<fixed_size_list<float, D>>`` from one repetition and definition level per float); an epoch
decodes every clip again. The first time a process reads a feature file whose bytes were verified
(a work directory's shard against the checksum ledger, a release's file against its
``SHA256SUMS``), the loader writes the file's decoded ``valid`` and ``features`` here, one Arrow
IPC file per source file (:data:`pipeline.core.tables.DECODED_FEATURES`: uncompressed, one record
batch per clip), named by the verified sha256: ``<cache>/<sha256[:2]>/<sha256>.arrow``. Later
reads, by this process or any later one, read a clip's record batch alone (a positioned read
into memory of its own, or the whole copy of a one-clip shard in one read; never a memory map:
mapped pages would count toward the resident size) and take its arrays as they are.

A source file whose bytes change has another sha256, so it never meets the decoded copy of its
old bytes. A cache file is checked before use: its table name, schema version and column types,
the source sha256 it records, its clip ids (those of the source file, in order; one record batch
each), the footer the format ends with (a truncated or extended file has none) and, on every
read, the clip's ``checksum``: the sum, modulo 2**64, of the little-endian 64-bit words of its
``valid`` bytes and then of its ``features`` bytes (each zero-padded to a multiple of 8 bytes),
plus both byte lengths. Any single flipped bit changes it. A file that fails any check is
removed and rebuilt from the source, never used.

Where it lives: ``$VDV_DECODED_CACHE`` when set (``off`` turns the cache off), else
``$XDG_CACHE_HOME/vdv/decoded`` or ``~/.cache/vdv/decoded``. Clearing it is removing that folder.
A cache that cannot be written (a read-only or full disk) is logged once and the loader goes on
decoding.

How large it grows: at most ``$VDV_DECODED_CACHE_MAX_GB`` GiB (default 32: the copies of two
VDV-sized sources, docs/SCALE.md). Each feature file that is extracted again or released again
has new bytes, so a new copy, and the old copy is never read again: after its first write, and
after every tenth of the cap written, a process removes the least recently read copies (a read
marks its copy's mtime, at most once an hour) until they take 80 % of the cap, and the temporary
files of writes killed more than a day ago. A copy removed while another process reads it stays
readable by that process (POSIX); one removed before a read is written again from its source.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.core import tables

log = logging.getLogger(__name__)

ENV = "VDV_DECODED_CACHE"
MAX_ENV = "VDV_DECODED_CACHE_MAX_GB"
DEFAULT_MAX_GB = 32.0
STALE_TMP_S = 24 * 3600  # a temporary file this old is a killed write's (a copy is written in seconds)
TOUCH_AFTER_S = 3600  # a read marks its copy as recent when its mtime is older than this
TIDY_TO = 0.8  # an over-full cache is brought down to this fraction of its cap
SPEC = tables.DECODED_FEATURES
_SCHEMA = SPEC.with_metadata()
# the names the cache gives (a tidy touches nothing else, whatever folder the cache is pointed at)
_FOLDER = re.compile(r"[0-9a-f]{2}")
_COPY = re.compile(r"[0-9a-f]{64}\.arrow")
_TEMPORARY = re.compile(r"\.[0-9a-f]{64}\.arrow\..+\.tmp")


class CacheCorrupt(ValueError):
    """A cache file that fails a check: removed, never used."""


def default_dir() -> Path | None:
    """The cache folder: ``$VDV_DECODED_CACHE`` (``off``: None), else the user's cache folder."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "none", "0") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vdv" / "decoded"


def max_bytes() -> int:
    """The cache's cap in bytes: ``$VDV_DECODED_CACHE_MAX_GB`` GiB, else :data:`DEFAULT_MAX_GB`;
    ValueError, naming the variable, for anything but a positive number."""
    value = os.environ.get(MAX_ENV, "").strip()
    if not value:
        return int(DEFAULT_MAX_GB * 2**30)
    try:
        gib = float(value)
    except ValueError:
        gib = math.nan
    if not (math.isfinite(gib) and gib > 0):
        raise ValueError(f"${MAX_ENV} must be a positive number of GiB, got {value!r}")
    return max(1, int(gib * 2**30))


def checksum(valid: np.ndarray, features: np.ndarray) -> int:
    """The integrity marker of one clip's arrays (the module docstring says how it is computed)."""
    total = 0
    for array in (valid, features):
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        whole = len(raw) - len(raw) % 8
        total += int(raw[:whole].view("<u8").sum(dtype=np.uint64)) + len(raw)
        if whole < len(raw):
            total += int.from_bytes(raw[whole:].tobytes(), "little")
    return total % (1 << 64)


class CacheFile:
    """One validated cache file, open for reads of its clips by position."""

    def __init__(self, path: Path, sha256: str, clip_ids: Sequence[str] | None = None, *, whole: bool = False):
        """``whole``: read the file into memory in one read (a copy of one clip: its batch is
        nearly all of it), else read each batch when asked for."""
        self.path = path
        if whole:  # an OSError here (no copy, a folder that cannot be read) is the caller's
            with open(path, "rb") as fh:
                self._file = pa.BufferReader(pa.py_buffer(fh.read()))
        else:
            self._file = pa.OSFile(str(path), "r")
        try:
            self._reader = pa.ipc.open_file(self._file)
            schema = self._reader.schema
        except (OSError, pa.ArrowInvalid) as err:
            self.close()
            raise CacheCorrupt(f"{path}: unreadable ({err})") from err
        try:
            self._check(schema, sha256, clip_ids)
        except CacheCorrupt:
            self.close()
            raise

    def _check(self, schema: pa.Schema, sha256: str, clip_ids: Sequence[str] | None) -> None:
        meta = schema.metadata or {}
        if (
            meta.get(b"vdv.table") != SPEC.name.encode()
            or meta.get(b"vdv.schema_version") != str(SPEC.version).encode()
        ):
            raise CacheCorrupt(f"{self.path}: not a {SPEC.name} v{SPEC.version} file")
        if not schema.remove_metadata().equals(SPEC.schema):
            raise CacheCorrupt(f"{self.path}: columns {schema.names} differ from {SPEC.name}'s")
        if meta.get(b"vdv.source_sha256") != sha256.encode():
            raise CacheCorrupt(f"{self.path}: decoded from other bytes than sha256 {sha256[:12]}")
        ids = meta.get(b"vdv.clip_ids", b"").decode(errors="replace").split("\n")
        if len(ids) != self._reader.num_record_batches or (clip_ids is not None and list(clip_ids) != ids):
            raise CacheCorrupt(f"{self.path}: its clips are not the source file's")
        self.clip_ids = ids

    def read(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """The clip at ``position`` as (features (L, D) float32, valid (L,) bool); CacheCorrupt when
        its record batch fails to read or its checksum differs."""
        try:
            batch = self._reader.get_batch(position)
            dim = batch.column(1)[0].as_py()
            # one row a batch, written from offset 0: a list column's values are that row's
            valid = batch.column(2).values.to_numpy().view(bool)
            features = batch.column(3).values.to_numpy()
            expected = batch.column(4)[0].as_py()
            clip_id = batch.column(0)[0].as_py()
        except (OSError, pa.ArrowInvalid, IndexError) as err:
            raise CacheCorrupt(f"{self.path}: clip {position} unreadable ({err})") from err
        if (
            clip_id != self.clip_ids[position]
            or dim < 1
            or features.size != dim * len(valid)
            or checksum(valid, features) != expected
        ):
            raise CacheCorrupt(f"{self.path}: clip {position} ({self.clip_ids[position][:12]}) fails its checksum")
        return features.reshape(-1, dim), valid

    def close(self) -> None:
        for handle in (getattr(self, "_reader", None), getattr(self, "_file", None)):
            if handle is not None and hasattr(handle, "close"):
                handle.close()


class DecodedCache:
    """The cache folder: opens a verified source file's decoded copy, or writes it."""

    def __init__(self, root: str | os.PathLike, cap: int | None = None):
        """``cap``: the most bytes its copies take (None: :func:`max_bytes`)."""
        self.root = Path(root)
        self.cap = max_bytes() if cap is None else cap
        self._write_failed = False
        self._announced = False  # the folder named in the log, once a process
        self._folders: set[Path] = set()  # made already
        self._mode = 0o666 & ~tables.current_umask()  # what open() gives a new file
        self._unswept = self.cap  # bytes written since the last tidy (the first write tidies)
        self._warned_full = False

    @property
    def writable(self) -> bool:
        """False once a write failed in this process (no more are tried)."""
        return not self._write_failed

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.arrow"

    def open(self, sha256: str, clip_ids: Sequence[str] | None = None, *, whole: bool = False) -> CacheFile | None:
        """The decoded copy of the source file of ``sha256`` (whose clips are ``clip_ids``, when
        known), checked; None when there is none or it failed a check (then it is removed).
        ``whole``: see :class:`CacheFile`."""
        path = self.path(sha256)
        try:
            entry = CacheFile(path, sha256, clip_ids, whole=whole)
        except OSError:  # none, or none that can be opened
            return None
        except CacheCorrupt as err:
            self.discard(path, err)
            return None
        try:  # read recently: the last to go when the cache is over its cap
            if time.time() - os.stat(path).st_mtime > TOUCH_AFTER_S:
                os.utime(path)
        except OSError:
            pass  # a cache of another user's, or removed meanwhile: the copy is read all the same
        return entry

    def tidy(self) -> int:
        """Remove temporary files of writes killed over :data:`STALE_TMP_S` ago and, when the copies
        take more than :attr:`cap`, the least recently read ones until they take :data:`TIDY_TO` of
        it; returns the number of copies removed."""
        self._unswept = 0
        now = time.time()
        copies, total = [], 0
        try:
            folders = [
                entry.path
                for entry in os.scandir(self.root)
                if _FOLDER.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
            ]
        except OSError:
            return 0
        for folder in folders:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                try:
                    if _TEMPORARY.fullmatch(entry.name):
                        if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_S:
                            os.unlink(entry.path)
                    elif _COPY.fullmatch(entry.name):
                        st = entry.stat(follow_symlinks=False)
                        copies.append((st.st_mtime, entry.path, st.st_size))
                        total += st.st_size
                except OSError:
                    continue  # gone meanwhile (another process tidied), or not ours to remove
        if total <= self.cap:
            return 0
        held, removed = total, 0
        for _, path, size in sorted(copies):
            if total <= self.cap * TIDY_TO:
                break
            try:
                os.unlink(path)
            except OSError:
                continue
            total -= size
            removed += 1
        gib = 2**30
        log.log(
            logging.INFO if self._warned_full else logging.WARNING,
            "decoded cache: %s held %.1f GiB, over its cap of %.1f GiB ($%s): removed the %d least recently "
            "read copies. A source whose decoded features exceed the cap is decoded again every epoch",
            self.root,
            held / gib,
            self.cap / gib,
            MAX_ENV,
            removed,
        )
        self._warned_full = True
        return removed

    def discard(self, path: Path, why: object) -> None:
        log.warning("decoded cache: %s; removed, rebuilt from its source", why)
        try:
            path.unlink(missing_ok=True)
        except OSError as err:  # a folder that cannot be written: the copy is not used all the same
            log.warning("decoded cache: cannot remove %s (%s)", path, err)

    def write(self, sha256: str, clip_ids: Sequence[str], rows: Iterable[tuple[np.ndarray, np.ndarray]]) -> Path | None:
        """Write the decoded copy of the source file of ``sha256``, whose clips are ``clip_ids``,
        from its ``(features (L, D), valid (L,))`` rows in that order, one at a time: a temporary
        file renamed into place. None (logged once) when it cannot be written."""
        if self._write_failed:
            return None
        target = self.path(sha256)
        tmp = None
        try:
            if target.parent not in self._folders:
                target.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(target.parent)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            _write_file(Path(tmp), sha256, clip_ids, rows)
            os.chmod(tmp, self._mode)
            self._unswept += os.stat(tmp).st_size
            os.replace(tmp, target)
            if self._unswept >= self.cap // 10:  # the copy just written is the most recent: kept
                self.tidy()
            if not self._announced:
                self._announced = True
                log.info(
                    "decoded cache: decoded copies of the feature files go to %s (%s=off turns it off; "
                    "remove the folder to clear it)",
                    self.root,
                    ENV,
                )
            return target
        except BaseException as err:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if not isinstance(err, OSError):
                raise
            if not self._write_failed:
                log.warning("decoded cache: cannot write under %s (%s); reading without it", self.root, err)
            self._write_failed = True
            return None


def _write_file(
    path: Path, sha256: str, clip_ids: Sequence[str], rows: Iterable[tuple[np.ndarray, np.ndarray]]
) -> None:
    meta = {**_SCHEMA.metadata, b"vdv.source_sha256": sha256.encode(), b"vdv.clip_ids": "\n".join(clip_ids).encode()}
    with pa.OSFile(str(path), "w") as sink, pa.ipc.new_file(sink, _SCHEMA.with_metadata(meta)) as writer:
        for clip_id, (features, valid) in zip(clip_ids, rows, strict=True):  # as many rows as clips
            writer.write_batch(_batch(clip_id, features, valid))


def _batch(clip_id: str, features: np.ndarray, valid: np.ndarray) -> pa.RecordBatch:
    features = np.ascontiguousarray(features, dtype=np.float32)
    flags = np.ascontiguousarray(valid, dtype=bool).view(np.uint8)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([clip_id], pa.string()),
            pa.array([features.shape[1] if features.ndim == 2 else 1], pa.int32()),
            pa.ListArray.from_arrays(pa.array([0, len(flags)], pa.int32()), pa.array(flags, pa.uint8())),
            pa.ListArray.from_arrays(pa.array([0, features.size], pa.int32()), pa.array(features.reshape(-1))),
            pa.array([checksum(flags, features)], pa.uint64()),
        ],
        schema=_SCHEMA,
    )


def from_option(cache: DecodedCache | str | os.PathLike | bool | None) -> DecodedCache | None:
    """A source's ``cache`` argument as a cache: None, the default folder (:func:`default_dir`);
    False, none; a folder, that folder."""
    if isinstance(cache, DecodedCache) or cache is False:
        return cache or None
    root = default_dir() if cache is None or cache is True else Path(cache)
    return None if root is None else DecodedCache(root)
