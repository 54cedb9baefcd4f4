"""Arrow schemas for every table vdv writes, and the one reader/writer pair that touches Parquet.

Shard naming (one scheme for all tables)
----------------------------------------
A table is a directory ``<root>/<table>/`` holding Parquet files named
``<table>.<part>.parquet``. ``<part>`` is a zero-padded six-digit index for tables written in
batches (``clips.000000.parquet``) or a key for per-item shards (a feature shard is
``pose.<clip_id[:16]>.<identity[:12]>.parquet``). A file is written to a hidden temporary name
in the same directory and renamed into place, so a reader never sees a half-written shard;
readers ignore hidden files.

Every schema carries its name and version in the Parquet key-value metadata
(``vdv.table``, ``vdv.schema_version``). Readers refuse a file whose table or version differs
and name the file in the error.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import DiskFull, disk_full


class SchemaMismatch(ValueError):
    """A batch or file does not match the declared schema of its table."""


@dataclass(frozen=True)
class TableSpec:
    name: str
    version: int
    schema: pa.Schema

    def with_metadata(self) -> pa.Schema:
        return self.schema.with_metadata(
            {b"vdv.table": self.name.encode(), b"vdv.schema_version": str(self.version).encode()}
        )


def _spec(name: str, version: int, fields: Sequence[pa.Field]) -> TableSpec:
    return TableSpec(name, version, pa.schema(list(fields)))


# -- tables of the rule stages ------------------------------------------------------------------

CLIPS = _spec(
    "clips",
    3,  # v2: content_signature; v3: signature p2 (slice rule), ingest_override, ingest_override_note
    [
        pa.field("clip_id", pa.string(), nullable=False),  # sha256 of the file's bytes
        pa.field("video_id", pa.string(), nullable=False),  # platform id (TikTok video id)
        pa.field("path", pa.string(), nullable=False),  # as given in the raw layout
        pa.field("challenge", pa.string()),
        pa.field("uploader_id", pa.string()),
        pa.field("uploader_followers", pa.int64()),
        pa.field("likes", pa.int64()),
        pa.field("comments", pa.int64()),
        pa.field("reposts", pa.int64()),
        pa.field("plays", pa.int64()),
        pa.field("create_time", pa.timestamp("s", tz="UTC")),
        pa.field("crawl_time", pa.timestamp("s", tz="UTC")),
        pa.field("crawl_time_source", pa.string()),  # column | option | file_name
        pa.field("metadata_source", pa.string()),  # metadata file the record came from
        pa.field("duration_s", pa.float64()),  # decodable duration
        pa.field("container_duration_s", pa.float64()),
        pa.field("frame_count", pa.int64()),
        pa.field("avg_fps", pa.float64()),
        pa.field("width", pa.int32()),  # coded size, before rotation
        pa.field("height", pa.int32()),
        pa.field("rotation", pa.int32()),  # degrees clockwise to make the frame upright
        pa.field("video_codec", pa.string()),
        pa.field("has_audio", pa.bool_()),
        pa.field("audio_codec", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("content_signature", pa.string()),  # perceptual hashes + duration (pipeline/ingest/signature.py)
        pa.field("ingest_override", pa.string()),  # keep: a reviewer admitted what ingest judged a duplicate
        pa.field("ingest_override_note", pa.string()),  # the reviewer's note and what ingest judged
    ],
)

REJECTIONS = _spec(
    "rejections",
    1,
    [
        pa.field("stage", pa.string(), nullable=False),  # ingest | screen | extract:<modality>
        pa.field("clip_id", pa.string()),  # null when the file never got an id
        pa.field("video_id", pa.string()),
        pa.field("path", pa.string()),
        pa.field("reason", pa.string(), nullable=False),  # a ReasonCode value
        pa.field("message", pa.string(), nullable=False),
    ],
)

SCREENING = _spec(
    "screening",
    1,
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string()),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("automatic_kept", pa.bool_(), nullable=False),  # before any override
        pa.field("reasons", pa.list_(pa.string()), nullable=False),  # every failing rule
        pa.field("rules_evaluated", pa.list_(pa.string()), nullable=False),
        pa.field("override", pa.string()),  # keep | reject | null
        pa.field("override_note", pa.string()),
        pa.field("details", pa.string()),  # JSON: what each rule measured
    ],
)

PIXEL_RULES = _spec(
    "pixel_rules",
    1,
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("identity", pa.string(), nullable=False),  # clip bytes, [visual] settings, rule code
        pa.field("results", pa.string(), nullable=False),  # JSON list of {rule, passed, reasons, details}
        pa.field("seconds", pa.float64(), nullable=False),
        pa.field("worker", pa.string(), nullable=False),  # host:pid
    ],
)
"""One shard per clip (``<work>/pixel_rules/pixel_rules.<clip_id[:16]>.<identity[:12]>.parquet``),
written as soon as the clip's pixel rules finish, so a crash loses at most the clips in flight."""

PLACEMENT = _spec(
    "placement",
    1,
    [
        pa.field("device", pa.string(), nullable=False),
        pa.field("precision", pa.string(), nullable=False),  # the appearance networks'
        pa.field("pose_backend", pa.string(), nullable=False),  # pose, the people counter, scenic's mask
        pa.field("vibe_backend", pa.string(), nullable=False),
        pa.field("blazepose_precision", pa.string(), nullable=False),  # the torch BlazePose's
        pa.field("run", pa.string(), nullable=False),  # build | reextract | extract: the run that recorded it
        pa.field("recorded", pa.timestamp("s", tz="UTC"), nullable=False),
    ],
)
"""One row, ``<work>/placement/placement.current.parquet``: the placement of the last run that
extracted in the work directory (:mod:`pipeline.core.placement`); ``release``, ``reextract`` and
``extract`` read it back."""

SCORES = _spec(
    "scores",
    1,
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string()),
        pa.field("challenge", pa.string(), nullable=False),
        pa.field("existing_days", pa.float64(), nullable=False),  # before clipping
        pa.field("raw_score", pa.float64(), nullable=False),  # paper eq. 1
        pa.field("score", pa.float64(), nullable=False),  # paper eq. 2, in [0, 1]
        pa.field("out_of_scale", pa.bool_(), nullable=False),  # clipped to [0, 1]
        pa.field("degenerate_challenge", pa.bool_(), nullable=False),
    ],
)

SCORE_SCALE = _spec(
    "score_scale",
    1,
    [
        pa.field("challenge", pa.string(), nullable=False),
        pa.field("raw_min", pa.float64(), nullable=False),
        pa.field("raw_max", pa.float64(), nullable=False),
        pa.field("n_clips", pa.int64(), nullable=False),
        pa.field("params", pa.string(), nullable=False),  # JSON of the score configuration
    ],
)

CHECKSUMS = _spec(
    "checksums",
    1,
    [
        pa.field("kind", pa.string(), nullable=False),  # shard | clip
        # shard: relative to the work directory (features/pose/pose.<...>.parquet); clip: absolute
        pa.field("path", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),  # of the file's bytes when it was recorded
        pa.field("size", pa.int64(), nullable=False),
        # clip files only (the fast path: any change of these forces a hash); null for shards
        pa.field("mtime_ns", pa.int64()),
        pa.field("ctime_ns", pa.int64()),
        pa.field("inode", pa.int64()),
        pa.field("recorded", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("writer", pa.string(), nullable=False),  # host:pid
    ],
)
"""The work directory's ledger of file checksums (:mod:`pipeline.core.checksums`): every feature and
pixel-rule shard's sha256 recorded when it is written, and each clip file's sha256 with the stat
it was hashed at. ``<work>/checksums/checksums.000000.parquet`` (folded) plus one segment per
writing process, ``checksums.w-<host>-<pid>-<token>.parquet``, folded at the next run's start."""

DECODED_FEATURES = _spec(
    "decoded_features",
    1,
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("dim", pa.int32(), nullable=False),  # the width of a sample
        pa.field("valid", pa.list_(pa.uint8()), nullable=False),  # one byte a sample: 1 valid, 0 not
        pa.field("features", pa.list_(pa.float32()), nullable=False),  # samples x dim, sample-major
        pa.field("checksum", pa.uint64(), nullable=False),  # of valid and features (models/decoded.py)
    ],
)
"""The training loader's decoded copy of one verified feature file (:mod:`models.decoded`): an
uncompressed Arrow IPC file, one record batch of one row per clip in the source file's row order,
``<cache>/<sha256[:2]>/<sha256>.arrow`` named by the source file's sha256; its schema metadata
adds ``vdv.source_sha256`` and ``vdv.clip_ids`` (newline-joined). Not Parquet: a clip is read
back by its record batch alone, with no decoding."""

# -- feature shards -----------------------------------------------------------------------------

FEATURE_SCHEMA_VERSION = 1


def feature_table(modality: str) -> str:
    """The table name of ``modality``'s feature shards: ``features/<modality>``."""
    return f"features/{modality}"


def feature_write_options(schema: pa.Schema) -> dict[str, Any]:
    """``pyarrow.parquet`` writer options for a feature table (a shard or a release config):
    dictionaries for the text columns only, the vectors as ``BYTE_STREAM_SPLIT`` floats. A
    dictionary never fills usefully with float features and its fallback made the files larger
    and slower to decode (docs/SCALE.md: 137 MB against 72 MB, 15.7 against 8.7 ms a clip)."""
    vectors = "features.list.element.list.element"
    return {
        "use_dictionary": [f.name for f in schema if pa.types.is_string(f.type)],
        "column_encoding": {vectors: "BYTE_STREAM_SPLIT"} if "features" in schema.names else {},
    }


def feature_spec(modality: str, dim: int) -> TableSpec:
    """Schema of a feature shard of ``modality``: one row per clip, each sample a vector of ``dim``
    (the modality's record says its width: :mod:`pipeline.modalities.registry`).

    One row per clip (not per frame) keeps a clip's sequence contiguous and written in one
    atomic file, which makes incremental re-extraction and crash safety per clip trivial, and a
    training dataset reads one row to get a (T, D) array.
    """
    return _spec(
        feature_table(modality),
        FEATURE_SCHEMA_VERSION,
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("modality", pa.string(), nullable=False),
            pa.field("fps", pa.float64(), nullable=False),  # rate of the shared time grid
            pa.field("source_fps", pa.float64()),
            pa.field("frame_width", pa.int32()),  # upright frame, pixels
            pa.field("frame_height", pa.int32()),
            pa.field("timestamps", pa.list_(pa.float32()), nullable=False),  # seconds
            pa.field("valid", pa.list_(pa.bool_()), nullable=False),  # person / face found
            pa.field("features", pa.list_(pa.list_(pa.float32(), dim)), nullable=False),
            # provenance: enough to tell what a re-extraction would change
            pa.field("extractor", pa.string(), nullable=False),
            pa.field("extractor_version", pa.string(), nullable=False),  # hash of its code
            pa.field("weights_sha256", pa.string(), nullable=False),  # or "untrained"
            pa.field("untrained", pa.bool_(), nullable=False),
            pa.field("params", pa.string(), nullable=False),  # JSON: fps, resize, crop, ...
            pa.field("precision", pa.string(), nullable=False),  # float32 | bfloat16
            pa.field("device", pa.string(), nullable=False),
            pa.field("identity", pa.string(), nullable=False),  # sha256 of all of the above
        ],
    )


# -- the work directory's folders that are not tables ---------------------------------------------

REPORT_DIR = "report"  # <work>/report/: the build report (pipeline.report) and the pictures it shows
THUMBS_DIR = "thumbs"  # <work>/report/thumbs/: contact-sheet thumbnails, written by screening
FAN_OUT = 2  # hex characters of the clip id that name a picture's sub-folder: 256 of them

# Pictures fan out by clip id (docs/SCALE.md): ``thumbs/<clip_id[:2]>/<clip_id[:16]>.f<NN>.jpg``
# and ``<folder>/<clip_id[:2]>/<clip_id[:16]>.<ms>ms.png``, so that no folder holds more than a
# few hundred files at VDV's size (6 thumbnails a clip made 25,752 in one folder at 4,292 clips).
# Pictures written before, flat in their folder, are still found: a thumbnail is looked up by
# the path screening recorded for it, and :func:`preview_files` lists both layouts.


def report_dir(work: str | os.PathLike) -> Path:
    """``<work>/report/``: the build report's pages and the pictures the stages leave for it."""
    return Path(work) / REPORT_DIR


def thumbnails_dir(work: str | os.PathLike) -> Path:
    """Where screening writes contact-sheet thumbnails: ``screen_visual(..., thumbnails=thumbnails_dir(work))``."""
    return report_dir(work) / THUMBS_DIR


def thumbnail_name(clip_id: str, suffix: str) -> str:
    """A thumbnail's path under :func:`thumbnails_dir`, as screening records it:
    ``<clip_id[:2]>/<clip_id[:16]>.<suffix>`` (``suffix`` e.g. ``f03.jpg``)."""
    return f"{clip_id[:FAN_OUT]}/{clip_id[:16]}.{suffix}"


def preview_dir(work: str | os.PathLike, folder: str) -> Path:
    """Where extraction leaves a modality's pictures for the report: ``<work>/report/<folder>/``
    (the record's ``preview``; scenic's background images are ``backgrounds``), one
    ``<clip_id[:2]>/<clip_id[:16]>.<ms>ms.png`` per clip (:func:`preview_path`)."""
    return report_dir(work) / folder


def preview_path(work: str | os.PathLike, folder: str, clip_id: str, ms: int) -> Path:
    """The picture of ``clip_id`` at ``ms`` milliseconds in ``folder``: ``<clip_id[:2]>/<clip_id[:16]>.<ms>ms.png``."""
    return preview_dir(work, folder) / clip_id[:FAN_OUT] / f"{clip_id[:16]}.{ms:07d}ms.png"


def preview_files(work: str | os.PathLike, folder: str) -> dict[str, list[Path]]:
    """Every picture of ``folder``, listed once: ``clip_id[:16]`` -> its PNGs, sorted by name.
    Both layouts: fanned out by clip id, and flat (pictures written before the fan-out)."""
    directory = preview_dir(work, folder)
    found: dict[str, list[Path]] = {}
    if not directory.is_dir():
        return found
    with os.scandir(directory) as entries:
        listed = [(e.name, e.is_dir()) for e in entries if not e.name.startswith(".")]
    for name, is_dir in listed:
        if is_dir and len(name) == FAN_OUT:
            with os.scandir(directory / name) as inner:
                files = [
                    directory / name / e.name for e in inner if e.name.endswith(".png") and not e.name.startswith(".")
                ]
        elif name.endswith(".png"):
            files = [directory / name]
        else:
            continue
        for path in files:
            found.setdefault(path.name.split(".", 1)[0], []).append(path)
    return {key: sorted(paths, key=lambda p: p.name) for key, paths in found.items()}


# -- writer and reader --------------------------------------------------------------------------


def to_table(rows: Iterable[Mapping[str, Any]] | pa.Table, spec: TableSpec, *, where: str = "") -> pa.Table:
    """Cast rows (or a table) to ``spec``; raise :class:`SchemaMismatch` naming ``where``."""
    schema = spec.with_metadata()
    try:
        if isinstance(rows, pa.Table):
            missing = set(schema.names) - set(rows.column_names)
            extra = set(rows.column_names) - set(schema.names)
            if missing or extra:
                raise SchemaMismatch(f"missing columns {sorted(missing)}, unexpected {sorted(extra)}")
            table = rows.select(schema.names).cast(schema)
        else:
            rows = list(rows)
            for i, row in enumerate(rows):
                extra = set(row) - set(schema.names)
                if extra:
                    raise SchemaMismatch(f"row {i} has unexpected columns {sorted(extra)}")
            table = pa.Table.from_pylist(rows, schema=schema)
        table.validate(full=True)
        for field in schema:
            if not field.nullable and table.column(field.name).null_count:
                raise SchemaMismatch(f"column {field.name!r} is not nullable but has nulls")
    except SchemaMismatch as err:
        raise SchemaMismatch(f"{spec.name} v{spec.version} ({where or 'in memory'}): {err}") from None
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError) as err:
        raise SchemaMismatch(f"{spec.name} v{spec.version} ({where or 'in memory'}): {err}") from err
    return table


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux's
    ``/proc/self/status``), else set and restored at once under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    The temporary file is hidden and lives in the destination directory, so the rename is
    atomic on POSIX file systems and a crash leaves no visible partial file. The file gets the
    mode a plain ``open`` gives (0666 less the umask), not mkstemp's private 0600. A full
    device (or a spent quota) is a :class:`~pipeline.core.errors.DiskFull` naming ``path``, with the
    temporary file removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        _raise_disk_full(err, path)
        raise
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file 0600; the final file gets what open() would give it (0666 & ~umask)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        _raise_disk_full(err, path)
        raise
    return path


def _raise_disk_full(err: BaseException, path: Path) -> None:
    """Raise :class:`~pipeline.core.errors.DiskFull` naming ``path`` when ``err`` is a full device."""
    full = disk_full(err)
    if full is not None and not isinstance(err, DiskFull):
        raise DiskFull(full.errno, full.strerror, str(path)) from err


def write_table(rows: Iterable[Mapping[str, Any]] | pa.Table, spec: TableSpec, path: str | os.PathLike) -> Path:
    """Validate ``rows`` against ``spec`` and write them atomically to ``path``."""
    table = to_table(rows, spec, where=str(path))
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def shard_path(root: str | os.PathLike, table: str, part: int | str) -> Path:
    """``<root>/<table>/<leaf>.<part>.parquet`` with the documented naming scheme."""
    leaf = table.rsplit("/", 1)[-1]
    part = f"{part:06d}" if isinstance(part, int) else part
    return Path(root) / table / f"{leaf}.{part}.parquet"


def read_file(path: str | os.PathLike, spec: TableSpec, *, data: bytes | None = None) -> pa.Table:
    """Read one Parquet file, checking its table name, version and schema (``data``: the file's
    bytes, already read and checked by the caller; ``path`` then only names it)."""
    path = Path(path)
    try:  # one open, its footer parsed once (pq.read_table's dataset layer costs ~3 ms a file)
        parquet = pq.ParquetFile(path if data is None else pa.BufferReader(data))
    except (OSError, pa.ArrowInvalid) as err:
        raise SchemaMismatch(f"{path}: not a readable Parquet file ({err})") from err
    with parquet:
        meta = parquet.schema_arrow.metadata or {}
        name = meta.get(b"vdv.table", b"?").decode()
        version = meta.get(b"vdv.schema_version", b"?").decode()
        if name != spec.name or version != str(spec.version):
            raise SchemaMismatch(f"{path}: holds table {name!r} v{version}, expected {spec.name!r} v{spec.version}")
        table = parquet.read()
    return to_table(table, spec, where=str(path))


def table_files(root: str | os.PathLike, table: str) -> list[Path]:
    directory = Path(root) / table
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))


def read_table(root: str | os.PathLike, spec: TableSpec, table: str | None = None) -> pa.Table:
    """Read every shard of a table directory (an empty table when there is none)."""
    files = table_files(root, table or spec.name)
    if not files:
        return spec.with_metadata().empty_table()
    return pa.concat_tables([read_file(p, spec) for p in files])


def replace_table(rows, spec: TableSpec, root: str | os.PathLike, table: str | None = None) -> Path:
    """Write a batch table as its single shard ``<table>.000000.parquet``, dropping stale parts."""
    name = table or spec.name
    target = write_table(rows, spec, shard_path(root, name, 0))
    for stale in table_files(root, name):
        if stale != target:
            stale.unlink()
    return target


# -- scenic background images -------------------------------------------------------------------

SCENIC_BACKGROUNDS = _spec(
    "scenic_backgrounds",
    1,
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),  # grid time of the window's last frame, s
        pa.field("png", pa.string(), nullable=False),  # file name beside this table's directory
        pa.field("filled_share", pa.float64(), nullable=False),  # pixels covered all window long, inpainted
        pa.field("identity", pa.string(), nullable=False),  # the scenic feature identity they belong to
    ],
)
"""Written only with ``[scenic] save_backgrounds = DIR``: one shard per clip,
``DIR/scenic_backgrounds/scenic_backgrounds.<clip_id[:16]>.parquet``, one row per PNG
``DIR/<clip_id[:16]>.<ms>ms.png``."""
