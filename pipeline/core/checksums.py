"""The work directory's checksum ledger: a shard is what its writer wrote, a clip file is what ingest hashed.

Shards. Every feature shard and pixel-rule shard is written by :func:`write_shard`, which hashes
the file it wrote (sha256, before the rename that makes it visible) and records the sum in the
``checksums`` table (:data:`pipeline.core.tables.CHECKSUMS`), outside the shard, so that a truncation
cannot take the record with it. Whoever reuses a shard (extraction's skip, the pixel rules' cache)
or packs it (the release) hashes it again and compares (:func:`check_shard`): there is no size or
mtime shortcut. A shard with no record (its writer died between the rename and the record) or
another sum is *not current*: extraction computes it again, the release names it.

Clip files. A clip's id is the sha256 of the file ingest read. Before its pixels are used
(screening's pixel rules, extraction) :func:`confirm_clip` checks that the file at its path still
has that sum. The sum is recorded with the file's size, mtime, ctime and inode; while all four are
unchanged the recorded sum stands, and any change forces a new hash. A file whose sum differs is
:class:`~pipeline.core.errors.ClipError` ``clip_changed``, naming the path and ``vdv ingest``.

Concurrency. Shards are written by threads, process pools and Dask workers at once, on one
machine or several that share the work directory. No writer ever rewrites another's file: each
process appends its records to its own segment, ``checksums.w-<host>-<pid>-<token>.parquet``,
rewritten atomically (:func:`pipeline.core.tables.write_table`) after each record (clip records
made inside :func:`batched_clip_records`, as screening makes them: :data:`CLIP_BATCH` at a time)
and capped at :data:`SEGMENT_ROWS` rows (then a new segment begins), so no lock is needed, on any
file system.
:func:`fold` merges the segments into ``checksums.000000.parquet`` at the start of a run that
holds the work directory's lock (:func:`pipeline.extraction.stage.sweep_partial_files`), dropping the
records of files that are gone; the folder then holds the folded table and the segments of the
processes of one run. Readers read every file of the table and keep what they read per process
(a file is read again only when its stat changes).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import tables
from pipeline.core.errors import ClipError, Reason
from pipeline.core.provenance import sha256_file

log = logging.getLogger(__name__)

TABLE = tables.CHECKSUMS.name
SEGMENT_ROWS = 256
"""Rows of one process's segment before it starts another: the rewrite after each record stays
short (docs/INTEGRITY.md), and a run of 17,000 shards leaves about 70 segments in all (plus one
per process), folded into one table by the next run."""

CLIP_BATCH = 64
"""Within :func:`batched_clip_records`, clip records a process holds before it writes them. A
record lost with its process only means that clip file is hashed again; a shard's record is
written at once (without it the shard is not current)."""

CLIP_REFRESH_S = 1.0
"""A clip file whose stat this process does not know reads the ledger's new records first, at
most once in this many seconds (each read lists the ledger's files): a clip recorded meanwhile by
another process is at worst hashed again."""

SHARD, CLIP = "shard", "clip"


def _writer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> datetime:
    return datetime.now(UTC)


# -- what this process knows of a work directory's ledger ------------------------------------------


class _Known:
    """The records of one work directory that this process has read or written."""

    def __init__(self, root: str):
        self.root = root
        self.files: dict[str, tuple] = {}  # file name -> the stat it was read at
        self.shards: dict[str, set[str]] = {}  # relative path -> recorded sums
        self.clips: dict[str, dict[tuple, str]] = {}  # absolute path -> {(size, mtime, ctime, inode): sum}
        self.refreshed = -math.inf  # time.monotonic() of the last refresh

    def add(self, rows) -> None:
        for row in rows:
            if row["kind"] == SHARD:
                self.shards.setdefault(row["path"], set()).add(row["sha256"])
            else:
                stat = (row["size"], row["mtime_ns"], row["ctime_ns"], row["inode"])
                self.clips.setdefault(row["path"], {})[stat] = row["sha256"]

    def saw(self, path: Path) -> None:
        """Note the ledger file ``path`` as read at its present state (this process wrote it)."""
        st = path.stat()
        self.files[path.name] = (st.st_ino, st.st_size, st.st_mtime_ns)

    def refresh(self) -> None:
        """Read the ledger's files that are new or changed since this process last read them."""
        self.refreshed = time.monotonic()
        for path in tables.table_files(self.root, TABLE):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # folded away meanwhile; its rows are in the folded table
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            if self.files.get(path.name) == key:
                continue
            try:
                rows = tables.read_file(path, tables.CHECKSUMS).to_pylist()
            except FileNotFoundError:
                continue
            except tables.SchemaMismatch as err:
                # its records are lost: the shards they vouched for are computed again
                log.warning("checksum ledger file ignored: %s", err)
                continue
            self.files[path.name] = key
            self.add(rows)


_LOCK = threading.Lock()
_KNOWN: dict[str, _Known] = {}


@dataclass
class _Segment:
    path: Path
    rows: list[dict]
    pid: int
    unwritten: int = 0  # the last rows, not in the file yet (clip records held by a batch)
    written: bool = False  # the file exists (written at least once)


_SEGMENTS: dict[str, _Segment] = {}
_BATCHES = 0  # open batched_clip_records() blocks in this process


def _reset_after_fork() -> None:
    global _LOCK, _BATCHES
    _LOCK = threading.Lock()  # a fork while another thread held it must not leave it held
    _BATCHES = 0  # a block of the parent's is not the child's: its records are written at once


os.register_at_fork(after_in_child=_reset_after_fork)


def _root(work: str | os.PathLike) -> str:
    return os.path.abspath(work)


def _known(root: str) -> _Known:
    if root not in _KNOWN:
        _KNOWN[root] = _Known(root)
    return _KNOWN[root]


def _segment_path(root: str) -> Path:
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:40]
    return tables.shard_path(root, TABLE, f"w-{host}-{os.getpid()}-{secrets.token_hex(4)}")


def _record(work: str | os.PathLike, rows: list[dict], *, hold: bool = False) -> None:
    """Append ``rows`` to this process's segment of ``work``'s ledger (rewritten atomically);
    ``hold``: clip records, which a :func:`batched_clip_records` block writes :data:`CLIP_BATCH`
    at a time."""
    root = _root(work)
    with _LOCK:
        seg = _SEGMENTS.get(root)
        if seg is None or seg.pid != os.getpid():
            seg = _SEGMENTS[root] = _Segment(_segment_path(root), [], os.getpid())
        elif len(seg.rows) >= SEGMENT_ROWS or (seg.written and not seg.path.exists()):  # full, or folded
            held = seg.rows[len(seg.rows) - seg.unwritten :]  # a folded segment's held rows go on
            seg = _SEGMENTS[root] = _Segment(_segment_path(root), held, os.getpid(), len(held))
        seg.rows.extend(rows)
        seg.unwritten += len(rows)
        known = _known(root)
        known.add(rows)
        if not (hold and _BATCHES) or seg.unwritten >= CLIP_BATCH or len(seg.rows) >= SEGMENT_ROWS:
            _write_segment(seg, known)


def _write_segment(seg: _Segment, known: _Known) -> None:
    tables.write_table(seg.rows, tables.CHECKSUMS, seg.path)
    seg.unwritten, seg.written = 0, True
    known.saw(seg.path)  # its rows are known already: a refresh need not read this segment again


@contextlib.contextmanager
def batched_clip_records():
    """Within the block, this process writes the clip records it makes :data:`CLIP_BATCH` at a
    time, and the rest at its end, instead of rewriting its segment after each one: screening
    confirms thousands of clip files in a row (docs/INTEGRITY.md)."""
    global _BATCHES
    with _LOCK:
        _BATCHES += 1
    try:
        yield
    finally:
        with _LOCK:
            _BATCHES -= 1
            for root, seg in _SEGMENTS.items():
                if seg.unwritten and seg.pid == os.getpid():
                    _write_segment(seg, _known(root))


def _relative(work: str | os.PathLike, path: str | os.PathLike) -> str:
    return Path(os.path.relpath(os.path.abspath(path), _root(work))).as_posix()


# -- shards -----------------------------------------------------------------------------------------


def write_shard(work: str | os.PathLike, path: str | os.PathLike, table: pa.Table, **options) -> Path:
    """Write ``table`` as the shard ``path`` under ``work`` (atomically) and record its sha256.

    The one way a feature or pixel-rule shard is written: the sum is of the bytes written, taken
    before the rename; the record follows the rename, so a crash in between leaves a shard without
    a record, which readers treat as missing. ``options``: Parquet writer options (encodings,
    statistics; :func:`pipeline.core.tables.feature_write_options`).
    """
    written: dict = {}

    def write(tmp: Path) -> None:
        pq.write_table(table, tmp, compression="zstd", **options)
        written.update(sha256=sha256_file(tmp), size=tmp.stat().st_size)

    target = tables.atomic_write(path, write)
    _record(work, [_row(SHARD, _relative(work, target), written["sha256"], (written["size"], None, None, None))])
    return target


@dataclass(frozen=True)
class ShardCheck:
    """A shard's bytes against the ledger: ``status`` is ``ok``, ``missing`` (no file),
    ``unrecorded`` (no sum recorded for it) or ``differs`` (not the recorded sum)."""

    path: Path
    status: str
    sha256: str | None = None
    data: bytes | None = None  # the bytes that were hashed, when asked for (``keep``)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def why(self) -> str:
        """One line naming the file and what is wrong with it."""
        if self.status == "ok":
            return f"{self.path}: matches its recorded checksum"
        if self.status == "missing":
            return f"{self.path}: no such file"
        if self.status == "unrecorded":
            return f"{self.path}: no checksum was recorded when it was written (its writer stopped first)"
        return f"{self.path}: its bytes (sha256 {self.sha256[:12]}) are not the ones recorded when it was written"


def check_shard(work: str | os.PathLike, path: str | os.PathLike, *, keep: bool = False) -> ShardCheck:
    """Hash the shard ``path`` and compare with the sums recorded for it in ``work``'s ledger.

    ``keep``: return the bytes that were hashed too, so that the caller reads exactly what was
    checked (the release packs them).
    """
    path = Path(path)
    try:
        if keep:
            data = path.read_bytes()
            digest = _sha256(data)
        else:
            data, digest = None, sha256_file(path)
    except FileNotFoundError:
        return ShardCheck(path, "missing")
    rel = _relative(work, path)
    root = _root(work)
    with _LOCK:
        known = _known(root)
        if digest not in known.shards.get(rel, ()):
            known.refresh()  # written since this process last looked, maybe by another process
        sums = known.shards.get(rel, set())
    if digest in sums:
        return ShardCheck(path, "ok", digest, data)
    return ShardCheck(path, "differs" if sums else "unrecorded", digest)


def read_sha256sums(path: str | os.PathLike) -> dict[str, str]:
    """A ``SHA256SUMS`` file (``sha256sum -c`` format, as a release lists its files): relative
    path -> digest, every line as it is listed. FileNotFoundError when there is none."""
    listed = {}
    for line in Path(path).read_text().splitlines():
        digest, _, rel = line.partition("  ")
        listed[rel] = digest
    return listed


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# -- clip files -------------------------------------------------------------------------------------


def _row(kind: str, path: str, sha256: str, stat: tuple) -> dict:
    """One ledger record: ``stat`` is (size, mtime_ns, ctime_ns, inode); a shard records its size
    only (it is hashed on every use), a clip file its whole stat key (the fast path)."""
    size, mtime, ctime, inode = stat
    return {
        "kind": kind,
        "path": path,
        "sha256": sha256,
        "size": size,
        "mtime_ns": mtime,
        "ctime_ns": ctime,
        "inode": inode,
        "recorded": _now(),
        "writer": _writer(),
    }


def _stat_key(st: os.stat_result) -> tuple:
    # an inode number can use all 64 bits (some network file systems); the column is a signed int64
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino & (2**63 - 1))


def clip_sha256(work: str | os.PathLike | None, path: str | os.PathLike) -> str:
    """The sha256 of the clip file ``path``: the sum recorded in ``work``'s ledger while the file's
    size, mtime, ctime and inode are those it was hashed at, else a new hash (then recorded)."""
    where = os.path.abspath(path)
    before = _stat_key(os.stat(where))
    if work is not None:
        root = _root(work)
        with _LOCK:
            known = _known(root)
            if before not in known.clips.get(where, {}) and time.monotonic() - known.refreshed >= CLIP_REFRESH_S:
                known.refresh()
            found = known.clips.get(where, {}).get(before)
        if found is not None:
            return found
    digest = sha256_file(where)
    after = os.stat(where)
    if work is not None and _stat_key(after) == before:  # not changed while it was read
        _record(work, [_row(CLIP, where, digest, before)], hold=True)
    return digest


def confirm_clip(work: str | os.PathLike | None, clip_id: str, path: str | os.PathLike) -> None:
    """Raise ``ClipError(clip_changed)`` unless the file at ``path`` is the content ingested as
    ``clip_id`` (its sha256). Called before a clip's pixels are used."""
    try:
        digest = clip_sha256(work, path)
    except FileNotFoundError:
        raise ClipError(clip_id, Reason.NO_CLIP, f"{path} does not exist") from None
    if digest != clip_id:
        raise ClipError(
            clip_id,
            Reason.CLIP_CHANGED,
            f"{path} is no longer the file ingested as clip {clip_id[:16]} (its sha256 is now {digest[:16]}); "
            "run `vdv ingest` (or `vdv build`) again to take in the new file",
        )


# -- folding ----------------------------------------------------------------------------------------


def fold(work: str | os.PathLike) -> int:
    """Merge the ledger's segments into ``checksums.000000.parquet``; returns the segments folded.

    Call it only while holding the work directory's lock before any writer starts (no segment is
    being written). Records of files that are gone, or whose size or (for clips) stat no longer
    match, can never vouch for anything again and are dropped; records that cannot be read are
    dropped too (their shards are then computed again).
    """
    root = _root(work)
    files = tables.table_files(root, TABLE)
    folded = tables.shard_path(root, TABLE, 0)
    segments = [f for f in files if f != folded]
    if not segments:
        return 0
    rows: dict[tuple, dict] = {}
    for path in files:
        try:
            found = tables.read_file(path, tables.CHECKSUMS).to_pylist()
        except tables.SchemaMismatch as err:
            log.warning("checksum ledger file dropped: %s", err)
            continue
        for row in found:
            key = (row["kind"], row["path"], row["sha256"], row["size"], row["mtime_ns"], row["ctime_ns"], row["inode"])
            rows[key] = row
    kept = [row for row in rows.values() if _still_possible(root, row)]
    tables.write_table(kept, tables.CHECKSUMS, folded)
    for path in segments:
        path.unlink(missing_ok=True)
    with _LOCK:
        _SEGMENTS.pop(root, None)
    return len(segments)


def _still_possible(root: str, row: dict) -> bool:
    """Whether the file a record names could still match it (a stat, no hash)."""
    where = row["path"] if row["kind"] == CLIP else os.path.join(root, row["path"])
    try:
        st = os.stat(where)
    except OSError:
        return False
    if row["kind"] == CLIP:
        return _stat_key(st) == (row["size"], row["mtime_ns"], row["ctime_ns"], row["inode"])
    return st.st_size == row["size"]
