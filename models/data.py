"""Datasets that feed the virality models from feature shards or from a dataset release.

Sources
-------
- a work directory: ``<work>/features/<modality>/<modality>.<clip_id[:16]>.<identity[:12]>.parquet``
  (one row per clip, see :mod:`pipeline.modalities.features`) and the scores in ``<work>/scores``
  (:data:`pipeline.core.tables.SCORES`);
- a release directory (:func:`pipeline.release.package_release`):
  ``<release>/data/<config>/{train,test}-*.parquet`` (same row layout, one Hugging Face config
  per modality) and the scores config ``<release>/data/scores/{train,test}-*.parquet``.

Tracks (:func:`track_splits`): ``all`` and one ``challenge-<name>`` track per challenge, each a
fixed train/test split: a release's stored splits, else the rule of :mod:`pipeline.scoring.splits`.

Streams are the registered modalities, named as the pipeline names them
(:mod:`pipeline.modalities.registry`: ``pose``, ``holistic``, ``facial``, ``scenic``, SPEC section 4); the
models' older name ``skeletal`` for ``pose`` is still read (checkpoints, releases, options).

Temporal sampling (documented choice)
-------------------------------------
Every stream is brought to a fixed length ``T`` of its own: the seconds it sees (its modality's
``span_s``, or ``[data] seconds``, :class:`DataConfig`) times the rate of its grid, read from its
shards (``fps``), so a change of rate keeps the span. A clip with at least ``T`` samples is
sampled uniformly: sample ``i`` is source index ``floor((i + 0.5) * L / T)``, i.e. the centre of
the i-th of ``T`` equal segments, so the whole clip is covered with an even stride. A shorter
clip keeps all of its samples in order and is padded at the end with zeros.
The frame mask is true where a sample is real *and* valid (a person or a face was found); padded
and invalid samples are zero and masked out.

Stream presence
---------------
A stream is absent for a clip when the clip has no shard of that modality or when no sample is
valid (e.g. no face found in the whole clip, SPEC section 5: "streams can be missing"). An absent
stream is all zeros with an all-false frame mask, and ``stream_mask`` says so for the fusion.

Skeleton normalisation (documented choice)
------------------------------------------
Per clip, from the valid frames only: coordinates are centred on the clip's mean pelvis position
(MPII joint 6), so the dancer's travel across the frame is kept, and divided by the clip's median
torso length (pelvis to thorax, joints 6 to 7), so that clips of any resolution, distance to the
camera or portrait/landscape layout share one scale. Where the torso is degenerate (length under
1e-6, e.g. a collapsed detection) the median bounding-box height divided by 3 is used instead.
The confidence is kept, untouched, as the third channel. Output layout ``(C=3, T, V=16)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models import decoded
from pipeline.core import tables
from pipeline.core.provenance import sha256_file
from pipeline.modalities import registry
from pipeline.modalities.skeleton import MPII_INDEX, NUM_JOINTS
from pipeline.scoring import splits as split_rule

log = logging.getLogger(__name__)

PELVIS, THORAX = MPII_INDEX["pelvis"], MPII_INDEX["thorax"]


@dataclass(frozen=True)
class DataConfig:
    """How clips become fixed-size tensors. Config section ``[data]``."""

    # seconds of a clip each stream sees, by modality (``seconds = {facial = 12.0}``); a stream
    # not named sees its modality's span_s (pose and holistic 10.24 s: 256 samples at 25 fps,
    # the middle of VDV's usual 5-15 s; facial 10.7 s; scenic 15.4 s). Its frames are these
    # seconds times its grid's rate, so changing a rate keeps the span.
    seconds: dict[str, float] = field(default_factory=dict)
    normalize_skeleton: bool = True  # see the module docstring
    min_torso: float = 1e-6  # below this the torso is degenerate and the box height is used

    def __post_init__(self):
        try:
            seconds = {registry.canonical(m): float(s) for m, s in dict(self.seconds).items()}
        except (TypeError, ValueError) as err:
            raise ValueError(f"[data] seconds must map registered modalities to seconds: {err}") from None
        if any(not s > 0 for s in seconds.values()):
            raise ValueError(f"[data] seconds must be positive, got {seconds}")
        object.__setattr__(self, "seconds", seconds)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
        """A config as a checkpoint stores it; one written before spans were in seconds gives
        frame counts (``skeletal_frames = 256``), read as the seconds they covered at the
        modality's default rate."""
        values = dict(values)
        seconds = dict(values.pop("seconds", None) or {})
        for key in [k for k in values if k.endswith("_frames")]:
            modality = registry.get(key[: -len("_frames")])
            seconds.setdefault(modality.name, int(values.pop(key)) / modality.default_rate())
        names = {f.name for f in cls.__dataclass_fields__.values()}
        return cls(seconds=seconds, **{k: v for k, v in values.items() if k in names})

    def span(self, modality: str) -> float:
        """Seconds of a clip the stream of ``modality`` sees."""
        name = registry.canonical(modality)
        return self.seconds.get(name, registry.get(name).span_s)

    def frames(self, modality: str, rate: float | None = None) -> int:
        """Samples of ``modality``'s stream: its span times ``rate`` (samples per second; None:
        the modality's default rate), at least one."""
        rate = registry.get(modality).default_rate() if rate is None else rate
        return max(1, int(round(self.span(modality) * rate)))


# -- pure functions -------------------------------------------------------------------------------


def sample_indices(length: int, frames: int) -> np.ndarray:
    """Source indices of ``frames`` uniform samples of a sequence of ``length`` (shorter: all)."""
    if length >= frames:
        return np.floor((np.arange(frames) + 0.5) * length / frames).astype(np.int64)
    return np.arange(length, dtype=np.int64)


def fix_length(features: np.ndarray, valid: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly sample or zero-pad ``features`` (L, ...) to ``frames``; return (features, mask)."""
    idx = sample_indices(len(features), frames)
    mask = np.zeros(frames, dtype=bool)
    mask[: len(idx)] = valid[idx]
    if len(idx) == frames:  # one gather into a new array (a long clip's only copy)
        out = np.asarray(features[idx], dtype=np.float32)
    else:  # a short clip: all of it, then zeros
        out = np.zeros((frames, *features.shape[1:]), dtype=np.float32)
        out[: len(idx)] = features
    out[~mask] = 0.0
    return out, mask


def normalize_skeleton(joints: np.ndarray, valid: np.ndarray, min_torso: float = 1e-6) -> np.ndarray:
    """Centre and scale a clip's skeleton (see the module docstring). ``joints`` is (T, 16, 3)."""
    out = np.array(joints, dtype=np.float32, copy=True)
    if not valid.any():
        return np.zeros_like(out)
    xy = out[valid, :, :2]
    centre = xy[:, PELVIS].mean(axis=0)
    torso = np.linalg.norm(xy[:, THORAX] - xy[:, PELVIS], axis=-1)
    scale = float(np.median(torso))
    if not np.isfinite(scale) or scale < min_torso:
        scale = float(np.median(xy[..., 1].max(axis=1) - xy[..., 1].min(axis=1))) / 3.0
    if not np.isfinite(scale) or scale < min_torso:
        scale = 1.0
    out[..., :2] = (out[..., :2] - centre) / scale
    out[~valid] = 0.0
    return out


def skeleton_tensor(
    features: np.ndarray, valid: np.ndarray, frames: int, *, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Pose rows (L, 48) joint-major -> ``(3, frames, 16)`` and its frame mask ``(frames,)``."""
    joints = np.asarray(features, dtype=np.float32).reshape(len(features), NUM_JOINTS, 3)
    valid = np.asarray(valid, dtype=bool)
    if normalize:
        joints = normalize_skeleton(joints, valid)
    sampled, mask = fix_length(joints, valid, frames)
    return np.ascontiguousarray(sampled.transpose(2, 0, 1)), mask


# -- sources --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipRecord:
    clip_id: str
    challenge: str
    score: float
    uploader: str | None = None


_READ_COLUMNS = ["clip_id", "valid", "features"]  # what a stream needs of a row; never the provenance text


def _rows(table: pa.Table) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every row of a feature table as (features (L, D) float32, valid (L,) bool), decoded for all
    rows at once: one float array and one bool array for the table, each row a view of them."""
    features = table.column("features").combine_chunks()  # list<fixed_size_list<float, D>>
    samples = features.values  # the rows' samples, in order (a FixedSizeListArray)
    dim = samples.type.list_size
    flat = samples.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    valid = table.column("valid").combine_chunks()
    flags = np.asarray(valid.values.to_numpy(zero_copy_only=False), dtype=bool)
    starts, stops = features.offsets.to_numpy(), valid.offsets.to_numpy()
    return [(flat[starts[r] : starts[r + 1]], flags[stops[r] : stops[r + 1]]) for r in range(table.num_rows)]


def _fps(table: pa.Table) -> float | None:
    return float(table.column("fps")[0].as_py()) if table.num_rows else None


def _check_feature_file(path: Path, schema: pa.Schema, modality: str) -> None:
    """Refuse a file that is not a feature table of ``modality`` at the schema version this reads
    (:func:`pipeline.core.tables.read_file`'s check, from the footer already read)."""
    spec = tables.feature_spec(modality, schema.field("features").type.value_type.list_size)
    meta = schema.metadata or {}
    name = meta.get(b"vdv.table", b"?").decode()
    version = meta.get(b"vdv.schema_version", b"?").decode()
    if name != spec.name or version != str(spec.version):
        raise tables.SchemaMismatch(f"{path}: holds table {name!r} v{version}, expected {spec.name!r} v{spec.version}")
    for column in _READ_COLUMNS:
        if schema.field(column).type != spec.schema.field(column).type:
            raise tables.SchemaMismatch(f"{path}: column {column!r} is {schema.field(column).type}")


class ShardNotVerified(tables.SchemaMismatch):
    """A feature shard whose bytes are not the ones its writer recorded in the work directory's
    checksum ledger (:mod:`pipeline.core.checksums`), or that has no record: training refuses it."""


class WorkDirSource:
    """Feature shards and scores of a pipeline work directory.

    A read opens the clip's shard once and decodes only the columns a stream needs
    (``clip_id``, ``valid``, ``features``), after checking the table's name, version and types
    from the footer: the provenance text is never decoded.

    Each shard is checked against the work directory's checksum ledger before its first use in a
    process (:func:`pipeline.core.checksums.check_shard`: its sha256 against the sum its writer
    recorded), and read from the very bytes that were hashed; a shard that differs or has no
    record is :class:`ShardNotVerified`, naming the file. A shard is hashed once per process (the
    set of checked shards is not pickled: a worker process checks again).

    With a decoded cache (:mod:`models.decoded`; ``cache``: its folder, None: the default one,
    False: none), a shard's rows are decoded once, the first time its verified bytes are read by
    any process, and read back from the cache named by that sha256 after; each process still
    hashes each shard once, to know which sha256 it holds. A copy is written only from bytes just
    hashed (a shard read with no usable copy is hashed again to write one; where the cache
    cannot be written, it is decoded from the file as without a cache).
    """

    def __init__(self, work: str | Path, cache: str | Path | bool | None = None):
        from pipeline.modalities.features import current_shards

        self.work = Path(work)
        self._shards = {m: current_shards(self.work, m) for m in registry.names()}
        self._digests: dict[Path, str] = {}  # shard -> the sha256 it was verified at in this process
        self.cache = decoded.from_option(cache)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_digests": {}}

    def _verify(self, path: Path) -> bytes:
        """The bytes of the shard ``path``, checked against the ledger; records their sha256."""
        from pipeline.core.checksums import check_shard

        check = check_shard(self.work, path, keep=True)
        if not check.ok:
            raise ShardNotVerified(f"{check.why()}; training refuses it: run `vdv extract` to write it again")
        self._digests[path] = check.sha256
        return check.data

    def _open(self, path: Path, modality: str, data: bytes | None = None) -> pq.ParquetFile:
        """The shard ``path`` (from ``data``, its verified bytes, when given), checked against the
        ledger on its first use in this process."""
        if data is None and path not in self._digests:
            data = self._verify(path)
        source: Path | pa.BufferReader = path if data is None else pa.BufferReader(data)
        try:
            shard = pq.ParquetFile(source)
            _check_feature_file(path, shard.schema_arrow, modality)
        except (OSError, KeyError, pa.ArrowInvalid) as err:
            raise tables.SchemaMismatch(f"{path}: not a readable feature shard ({err})") from err
        return shard

    def records(self) -> list[ClipRecord]:
        scores = tables.read_table(self.work, tables.SCORES)
        uploaders: dict[str, str | None] = {}
        clips = tables.read_table(self.work, tables.CLIPS)
        for cid, up in zip(clips.column("clip_id").to_pylist(), clips.column("uploader_id").to_pylist(), strict=True):
            uploaders[cid] = up
        return [
            ClipRecord(cid, ch, float(s), uploaders.get(cid))
            for cid, ch, s in zip(
                scores.column("clip_id").to_pylist(),
                scores.column("challenge").to_pylist(),
                scores.column("score").to_pylist(),
                strict=True,
            )
        ]

    def has(self, modality: str, clip_id: str) -> bool:
        return clip_id[:16] in self._shards[registry.canonical(modality)]

    def rate(self, modality: str) -> float | None:
        """Samples per second of ``modality``'s grid, from one of its shards (None: it has none)."""
        modality = registry.canonical(modality)
        shards = self._shards[modality]
        return _fps(self._open(next(iter(shards.values())), modality).read(columns=["fps"])) if shards else None

    def _decode(self, path: Path, modality: str, data: bytes | None) -> tuple[list[str], list]:
        """The shard's clip ids and rows (:func:`_rows`), decoded."""
        shard = self._open(path, modality, data)
        try:
            table = shard.read(columns=_READ_COLUMNS, use_threads=False)
        except (OSError, pa.ArrowInvalid) as err:
            raise tables.SchemaMismatch(f"{path}: not a readable feature shard ({err})") from err
        return table.column("clip_id").to_pylist(), _rows(table)

    def _cached(self, sha256: str, clip_id: str) -> tuple[np.ndarray, np.ndarray] | None | bool:
        """The clip's rows from the decoded copy of the shard of ``sha256``: None when the shard
        does not hold the clip, False when there is no usable copy."""
        entry = self.cache.open(sha256, whole=True)
        if entry is None:
            return False
        try:
            if clip_id not in entry.clip_ids:
                return None
            return entry.read(entry.clip_ids.index(clip_id))
        except decoded.CacheCorrupt as err:
            self.cache.discard(entry.path, err)
            return False
        finally:
            entry.close()

    def load(self, modality: str, clip_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        modality = registry.canonical(modality)
        path = self._shards[modality].get(clip_id[:16])
        if path is None:
            return None
        data = None
        if self.cache is not None:
            if path not in self._digests:
                data = self._verify(path)
            got = self._cached(self._digests[path], clip_id)
            if got is not False:
                return got
            if data is None and self.cache.writable:  # verified earlier (rate(), a damaged copy): again
                data = self._verify(path)
        ids, rows = self._decode(path, modality, data)
        if data is not None:  # decoded from the very bytes just verified: their copy is written
            self.cache.write(self._digests[path], ids, rows)
        if clip_id not in ids:
            return None  # a 16-character prefix collision: not this clip's shard
        return rows[ids.index(clip_id)]


class ReleaseSource:
    """A dataset release: ``data/<config>/*.parquet`` per modality plus ``scores``.

    The per-modality files hold many clips each, so an index of (file, row group, row) per clip is
    built from the ``clip_id`` column alone. Each file is opened once (its footer parsed once, not
    on every read) and a clip's row group is read on demand with only the columns a stream needs.
    A release puts up to about 1 MiB of clips in a row group (docs/SCALE.md): a row group of
    several clips (pose, facial, scenic) is decoded into one array per column and kept, most
    recently used first, up to :attr:`CACHE_BYTES`, so it is decoded about once per epoch whatever
    the clips' order; a row group of one clip (holistic) is decoded, handed over and let go, never
    kept (keeping clips that are read once per epoch only makes every decode fault in fresh memory:
    twice the CPU). Open files and the cache are not pickled: a worker process opens its own.

    With a decoded cache (:mod:`models.decoded`; ``cache``: its folder, None: the default one,
    False: none), the first read of a clip of a file listed in the release's ``SHA256SUMS``
    hashes the file, refuses it (:class:`ShardNotVerified`) when its sha256 is not the listed
    one, decodes all of it, one row group at a time, into the cache named by that sum, and every
    clip of the file is read back from there after, in this process and later ones.
    """

    CACHE_BYTES = 512 << 20

    def __init__(self, release: str | Path, cache: str | Path | bool | None = None):
        self.release = Path(release)
        self._index: dict[str, dict[str, tuple[Path, int, int, int]]] = {}
        self._files: dict[Path, pq.ParquetFile] = {}
        self._cache: dict[tuple[Path, int], list[tuple[np.ndarray, np.ndarray]]] = {}
        self._cached_bytes = 0
        self._clips: dict[Path, list[str]] = {}  # file -> its clip ids in row order
        for record in registry.registered():
            index: dict[str, tuple[Path, int, int, int]] = {}
            # a release names each config by its modality; older ones may use an alias ("skeletal")
            for name in (record.name, *record.aliases):
                for path in sorted((self.release / "data" / name).glob("*.parquet")):
                    meta = self._file(path)
                    clips = self._clips[path] = []
                    for rg in range(meta.num_row_groups):
                        ids = meta.read_row_group(rg, columns=["clip_id"]).column("clip_id").to_pylist()
                        for row, cid in enumerate(ids):
                            index[cid] = (path, rg, row, len(clips))
                            clips.append(cid)
            self._index[record.name] = index
        self.cache = decoded.from_option(cache)
        self._sums = _release_sums(self.release) if self.cache is not None else {}
        self._decoded: dict[Path, decoded.CacheFile] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}, "_cache": {}, "_cached_bytes": 0, "_decoded": {}}

    def _file(self, path: Path) -> pq.ParquetFile:
        opened = self._files.get(path)
        if opened is None:
            opened = self._files[path] = pq.ParquetFile(path)
        return opened

    def records(self) -> list[ClipRecord]:
        # the scores are a Hugging Face config like the features (pipeline.release.SCORES_CONFIG)
        files = sorted((self.release / "data" / "scores").glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{self.release}: no scores config (data/scores/*.parquet)")
        table = pa.concat_tables([pq.read_table(p) for p in files])
        uploaders = (
            table.column("uploader").to_pylist() if "uploader" in table.column_names else [None] * table.num_rows
        )
        return [
            ClipRecord(cid, ch, float(s), up)
            for cid, ch, s, up in zip(
                table.column("clip_id").to_pylist(),
                table.column("challenge").to_pylist(),
                table.column("score").to_pylist(),
                uploaders,
                strict=True,
            )
        ]

    def has(self, modality: str, clip_id: str) -> bool:
        return clip_id in self._index[registry.canonical(modality)]

    def rate(self, modality: str) -> float | None:
        """Samples per second of ``modality``'s grid, from its released rows (None: it has none)."""
        index = self._index[registry.canonical(modality)]
        if not index:
            return None
        path, rg, _, _ = next(iter(index.values()))
        return _fps(self._file(path).read_row_group(rg, columns=["fps"]))

    def _row_group(self, path: Path, rg: int) -> list[tuple[np.ndarray, np.ndarray]]:
        key = (path, rg)
        rows = self._cache.pop(key, None)
        if rows is None:
            rows = _rows(self._file(path).read_row_group(rg, columns=_READ_COLUMNS, use_threads=False))
            if len(rows) == 1:
                return rows  # one clip: read once an epoch, not worth keeping
            self._cached_bytes += sum(f.nbytes + v.nbytes for f, v in rows)
        self._cache[key] = rows  # most recently used last
        while self._cached_bytes > self.CACHE_BYTES and len(self._cache) > 1:
            self._cached_bytes -= sum(f.nbytes + v.nbytes for f, v in self._cache.pop(next(iter(self._cache))))
        return rows

    def _decoded_file(self, path: Path) -> decoded.CacheFile | None:
        """The checked decoded copy of ``path``, written first when there is none; None when it
        cannot be written (the file is then decoded as without a cache)."""
        sha256 = self._sums[path]
        entry = self.cache.open(sha256, self._clips[path])
        if entry is None and self.cache.writable:  # else: decoded as without a cache
            before = path.stat()
            if sha256_file(path) != sha256:
                raise ShardNotVerified(
                    f"{path}: its bytes are not the ones SHA256SUMS lists (sha256 {sha256[:12]}); "
                    "training refuses it: run `vdv release verify`"
                )
            meta = self._file(path)
            rows = (
                row
                for rg in range(meta.num_row_groups)
                for row in _rows(meta.read_row_group(rg, columns=_READ_COLUMNS, use_threads=False))
            )
            self.cache.write(sha256, self._clips[path], rows)
            after = path.stat()
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                self.cache.discard(self.cache.path(sha256), f"{path} changed while it was decoded")
            entry = self.cache.open(sha256, self._clips[path])
        if entry is None:
            self._sums.pop(path)
        else:
            self._decoded[path] = entry
        return entry

    def _from_cache(self, path: Path, position: int) -> tuple[np.ndarray, np.ndarray] | None:
        for _ in range(2):  # a copy that fails its check is removed and written again, once
            entry = self._decoded.get(path) or self._decoded_file(path)
            if entry is None:
                return None
            try:
                return entry.read(position)
            except decoded.CacheCorrupt as err:
                entry.close()
                del self._decoded[path]
                self.cache.discard(entry.path, err)
        return None

    def load(self, modality: str, clip_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        where = self._index[registry.canonical(modality)].get(clip_id)
        if where is None:
            return None
        path, rg, row, position = where
        if path in self._sums:
            got = self._from_cache(path, position)
            if got is not None:
                return got
        return self._row_group(path, rg)[row]


def _release_sums(release: Path) -> dict[Path, str]:
    """File -> sha256 as the release's ``SHA256SUMS`` lists them (none: an empty mapping)."""
    from pipeline.core.checksums import read_sha256sums

    try:
        listed = read_sha256sums(release / "SHA256SUMS")
    except FileNotFoundError:
        return {}
    return {release / rel: digest for rel, digest in listed.items() if len(digest) == 64 and rel}


def track_splits(source: WorkDirSource | ReleaseSource) -> dict[str, dict[str, str]]:
    """Track name -> (clip id -> train/test): a release's stored splits, else the SPEC rule
    (:func:`pipeline.scoring.splits.all_tracks`)."""
    if isinstance(source, ReleaseSource) and (source.release / "splits").is_dir():
        stored = {}
        for path in sorted((source.release / "splits").glob("*.parquet")):
            table = pq.read_table(path, columns=["clip_id", "split"])
            stored[path.stem] = dict(
                zip(table.column("clip_id").to_pylist(), table.column("split").to_pylist(), strict=True)
            )
        if stored:
            return stored
    records = source.records()
    return split_rule.all_tracks({r.clip_id: r.challenge for r in records}, {r.clip_id: r.uploader for r in records})


def track_split(source: WorkDirSource | ReleaseSource, track: str) -> dict[str, str]:
    """Clip id -> train/test of one track of ``source``; an unknown track is a ValueError."""
    splits = track_splits(source)
    if track not in splits:
        raise ValueError(f"unknown track {track!r}; tracks: {sorted(splits)}")
    return splits[track]


def side_ids(split: dict[str, str], side: str) -> list[str]:
    """The clip ids on ``side`` (``train`` or ``test``) of one track's split."""
    return [c for c, s in split.items() if s == side]


def open_source(path: str | Path, cache: str | Path | bool | None = None) -> WorkDirSource | ReleaseSource:
    """A release when ``path/data`` exists, else a work directory; one without scored clips is a
    ValueError that says which stage to run. ``cache``: the decoded cache's folder (None: the
    default, :func:`models.decoded.default_dir`; False: none)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    source = ReleaseSource(path, cache) if (path / "data").is_dir() else WorkDirSource(path, cache)
    if not source.records():
        raise ValueError(f"{path} has no scored clips: run `vdv build` (or ingest, screen and score) first")
    return source


# -- the dataset ----------------------------------------------------------------------------------


class ViralityDataset:
    """Clips with their streams as fixed-size arrays and their virality score (a torch Dataset).

    Item: ``{"clip_id", "challenge", "score" (float32), "stream_mask" (M,) bool,
    "<modality>" array, "<modality>_mask" (T_m,) bool}`` for each modality in ``modalities``
    (default: every registered one): a skeleton stream ``(3, T, 16)``, a sequence stream
    ``(T, D)``. :func:`collate` (or ``default_collate``) batches it. :attr:`frames` gives each stream's ``T``,
    :attr:`dims` each stream's ``D``.

    Clips without any present stream are left out and listed in :attr:`skipped` with the reason,
    so nothing is dropped silently.
    """

    def __init__(
        self,
        source: WorkDirSource | ReleaseSource,
        modalities: Sequence[str] | None = None,
        *,
        clip_ids: Sequence[str] | None = None,
        config: DataConfig = DataConfig(),
        dims: dict[str, int] | None = None,
        frames: dict[str, int] | None = None,
    ):
        self.source = source
        self.modalities = tuple(registry.canonical(m) for m in (modalities or registry.names()))
        self.config = config
        records = {r.clip_id: r for r in source.records()}
        wanted = list(records) if clip_ids is None else list(clip_ids)
        self.skipped: dict[str, str] = {}
        self.records: list[ClipRecord] = []
        for cid in wanted:
            if cid not in records:
                self.skipped[cid] = "no score"
            elif not any(source.has(m, cid) for m in self.modalities):
                self.skipped[cid] = f"no features of {list(self.modalities)}"
            else:
                self.records.append(records[cid])
        if self.skipped:
            log.warning("%d clip(s) left out of the dataset: %s", len(self.skipped), self.skipped)
        self.dims = {registry.canonical(m): d for m, d in (dims or {}).items()}
        for m in self.modalities:
            if m not in self.dims:
                self.dims[m] = self._probe_dim(m)
        # each stream's T: its span at its grid's rate (the shards'), unless given (a test side takes the train side's)
        self.frames = {registry.canonical(m): n for m, n in (frames or {}).items()}
        for m in self.modalities:
            if m not in self.frames:
                self.frames[m] = config.frames(m, source.rate(m))

    def _probe_dim(self, modality: str) -> int:
        if registry.get(modality).stream == "skeleton":
            return NUM_JOINTS * 3
        for r in self.records:
            loaded = self.source.load(modality, r.clip_id)
            if loaded is not None:
                return int(loaded[0].shape[1])
        return registry.get(modality).dim

    def __len__(self) -> int:
        return len(self.records)

    @property
    def clip_ids(self) -> list[str]:
        return [r.clip_id for r in self.records]

    @property
    def scores(self) -> np.ndarray:
        return np.array([r.score for r in self.records], dtype=np.float32)

    def stream(self, modality: str, clip_id: str) -> tuple[np.ndarray, np.ndarray]:
        """One stream of one clip as (array, frame mask); zeros and a false mask when absent."""
        modality = registry.canonical(modality)
        frames = self.frames[modality]
        loaded = self.source.load(modality, clip_id)
        if registry.get(modality).stream == "skeleton":
            if loaded is None:
                return np.zeros((3, frames, NUM_JOINTS), np.float32), np.zeros(frames, bool)
            return skeleton_tensor(*loaded, frames, normalize=self.config.normalize_skeleton)
        dim = self.dims[modality]
        if loaded is None or loaded[0].shape[1] != dim:
            if loaded is not None:
                log.warning(
                    "%s: %s features have dim %d, expected %d; stream treated as absent",
                    clip_id,
                    modality,
                    loaded[0].shape[1],
                    dim,
                )
            return np.zeros((frames, dim), np.float32), np.zeros(frames, bool)
        return fix_length(*loaded, frames)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        item: dict = {"clip_id": rec.clip_id, "challenge": rec.challenge, "score": np.float32(rec.score)}
        present = []
        for m in self.modalities:
            arr, mask = self.stream(m, rec.clip_id)
            item[m] = arr
            item[f"{m}_mask"] = mask
            present.append(bool(mask.any()))
        item["stream_mask"] = np.array(present, dtype=bool)
        return item


def collate(items: list[dict]) -> dict:
    """``torch.utils.data.default_collate`` of :class:`ViralityDataset` items, the same tensors
    bit for bit: in the main process each array field is stacked by numpy into one array that the
    tensor then shares (half the CPU of ``torch.stack`` over one tensor per item, docs/SCALE.md);
    in a loader's worker process, ``default_collate`` itself (it stacks into shared memory)."""
    import torch
    from torch.utils.data import default_collate, get_worker_info

    if get_worker_info() is not None or not items or not isinstance(items[0], dict):
        return default_collate(items)
    out = {}
    for key, first in items[0].items():
        if isinstance(first, np.ndarray) and first.dtype.kind in "biuf":
            out[key] = torch.from_numpy(np.stack([item[key] for item in items]))
        else:
            out[key] = default_collate([item[key] for item in items])
    return out


def train_test_datasets(
    source: WorkDirSource | ReleaseSource,
    modalities: Sequence[str],
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    config: DataConfig,
) -> tuple[ViralityDataset, ViralityDataset]:
    """The train and test sides as datasets; the test side takes the train side's stream sizes."""
    train = ViralityDataset(source, modalities, clip_ids=train_ids, config=config)
    test = ViralityDataset(source, modalities, clip_ids=test_ids, config=config, dims=train.dims, frames=train.frames)
    return train, test
