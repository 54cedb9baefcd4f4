"""Packaging a versioned dataset release from a run's work directory (SPEC section 9).

Layout of ``<out>/<name>-<version>/``::

    README.md                                   dataset card, YAML header (configs, features, splits)
    manifest.json                               provenance of every feature, run lineage, counts
    SHA256SUMS                                  sha256 of every other file (``sha256sum -c`` format)
    score_scale.parquet                         per-challenge raw min/max (SPEC section 3)
    data/scores/{train,test}-0000i-of-0000N.parquet
    data/<modality>/{train,test}-0000i-of-0000N.parquet   modality in pose, holistic, facial, scenic
    splits/<track>.parquet                      (clip_id, split) of every track

Every modality is one Hugging Face config and so are the scores; their files are split by the
all-challenge track, and each clip's feature row is stored once, in the split its clip belongs
to. The single-challenge tracks are (clip_id, split) tables under ``splits/`` (``all.parquet``
repeats the all-challenge split so that every track is found in one place).

Privacy (SPEC section 9): uploader identities are replaced by ``sha256(salt || uploader_id)``;
the salt comes from an option or ``$VDV_RELEASE_SALT`` and is never written (without one a random
salt is drawn and forgotten, so hashes cannot be linked across releases). Captions, usernames,
local paths and metadata file names are not released: the scores table is built from an
allow-list of columns.

Untrained weights (SPEC section 9): a release whose features came from untrained weights is made
only with ``allow_untrained=True``; the card then opens with a warning and the manifest carries
``"untrained": true`` and the modalities concerned.

The release is assembled in a hidden sibling directory and renamed into place, so a crash never
leaves a half-written release under the final name. :func:`verify_release` re-checks checksums,
schemas, row counts, that each clip is stored once, and the splits against the split rule.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from pipeline import splits, tables
from pipeline.provenance import run_lineage, sha256_file

log = logging.getLogger(__name__)

MODALITIES = ("pose", "holistic", "facial", "scenic")
SCORES_CONFIG = "scores"
SALT_ENV = "VDV_RELEASE_SALT"
RELEASE_FORMAT = 1  # version of this layout, recorded in the manifest
UNTRAINED_WARNING = (
    "WARNING: features of {modalities} were computed with UNTRAINED (randomly initialised) weights. "
    "They carry no learned visual information and must not be used to train or evaluate models; "
    "this release only demonstrates the pipeline."
)
# Columns that must never appear in a released table (SPEC section 9).
FORBIDDEN_COLUMNS = (
    "uploader_id",
    "username",
    "user_name",
    "nickname",
    "caption",
    "text",
    "desc",
    "path",
    "metadata_source",
)

RELEASE_SCORES = tables.TableSpec(
    "release/scores",
    1,
    pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("video_id", pa.string()),
            pa.field("challenge", pa.string(), nullable=False),
            pa.field("uploader", pa.string()),  # salted hash of the uploader id (see manifest)
            pa.field("likes", pa.int64()),
            pa.field("comments", pa.int64()),
            pa.field("reposts", pa.int64()),
            # milliseconds: Parquet has no second-resolution timestamp, so "s" would not round-trip
            pa.field("create_time", pa.timestamp("ms", tz="UTC")),
            pa.field("crawl_time", pa.timestamp("ms", tz="UTC")),
            pa.field("existing_days", pa.float64(), nullable=False),
            pa.field("raw_score", pa.float64(), nullable=False),  # paper eq. 1
            pa.field("score", pa.float64(), nullable=False),  # paper eq. 2, in [0, 1]
            pa.field("out_of_scale", pa.bool_(), nullable=False),
            pa.field("degenerate_challenge", pa.bool_(), nullable=False),
            pa.field("duration_s", pa.float64()),
        ]
    ),
)

RELEASE_SPLIT = tables.TableSpec(
    "release/split",
    1,
    pa.schema([pa.field("clip_id", pa.string(), nullable=False), pa.field("split", pa.string(), nullable=False)]),
)


class ReleaseError(RuntimeError):
    """A release cannot be made from this work directory; the message says why."""


@dataclass(frozen=True)
class ReleaseConfig:
    """Parameters of ``vdv release`` (config section ``[release]``)."""

    name: str = "vdv"  # directory is <out>/<name>-<version>
    version: str = "0.1.0"
    modalities: tuple[str, ...] = MODALITIES  # feature configs to package when present
    max_shard_mb: float = 256.0  # uncompressed MiB per Parquet file (HF suggests <= ~500 MB)
    train_fraction: float = splits.TRAIN_FRACTION  # SPEC section 6: 80/20
    # SPEC section 6: an uploader's clips never straddle train and test. A demo whose records all
    # come from one creator would put every clip in train; it may turn this off, and the card,
    # manifest and verification then say so.
    group_by_uploader: bool = True
    license: str = "other"  # Hugging Face license id of the card
    license_note: str = (
        "Features and scores are released for research. The clips themselves are not part of the "
        "release; they remain the property of their uploaders and are referred to by video id only."
    )


@dataclass
class ReleaseSummary:
    path: Path
    counts: dict[str, dict[str, int]]  # config -> split -> rows
    untrained_modalities: list[str]
    missing: dict[str, list[str]] = field(default_factory=dict)  # modality -> clip ids with no shard
    files: int = 0


@dataclass
class VerifyResult:
    path: Path
    problems: list[str]
    counts: dict[str, dict[str, int]]

    @property
    def ok(self) -> bool:
        return not self.problems


# -- helpers -------------------------------------------------------------------------------------


def salted_hash(value: str | None, salt: bytes) -> str | None:
    """``sha256(salt || value)`` hex, the released stand-in for an uploader identity."""
    if value is None:
        return None
    return hashlib.sha256(salt + value.encode()).hexdigest()


def resolve_salt(salt: str | None) -> tuple[bytes, str]:
    """(salt bytes, where it came from). The salt itself is never written to the release."""
    if salt:
        return salt.encode(), "option"
    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode(), f"env:{SALT_ENV}"
    return secrets.token_bytes(32), "random (not kept: hashes cannot be linked to other releases)"


def shard_name(split: str, index: int, count: int) -> str:
    """Hugging Face's data file naming: ``train-00000-of-00002.parquet``."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def hf_feature(dtype: pa.DataType):
    """The YAML form of a Hugging Face feature for an Arrow type (as ``datasets.Features`` writes it)."""
    if pa.types.is_list(dtype) or pa.types.is_fixed_size_list(dtype):
        inner = hf_feature(dtype.value_type)
        out = {"list": inner["dtype"] if set(inner) == {"dtype"} else inner}
        if pa.types.is_fixed_size_list(dtype):
            out["length"] = dtype.list_size
        return out
    # Arrow prints float64/float32 as "double"/"float"; Hugging Face names them by width
    names = {pa.float64(): "float64", pa.float32(): "float32", pa.float16(): "float16"}
    return {"dtype": names.get(dtype, str(dtype))}


def hf_features(schema: pa.Schema) -> list[dict]:
    return [{"name": f.name, **hf_feature(f.type)} for f in schema]


def type_signature(dtype: pa.DataType) -> str:
    """A type's name without list item names (writers differ on ``item`` versus ``element``)."""
    if pa.types.is_fixed_size_list(dtype):
        return f"fixed_size_list<{type_signature(dtype.value_type)}>[{dtype.list_size}]"
    if pa.types.is_list(dtype):
        return f"list<{type_signature(dtype.value_type)}>"
    return str(dtype)


def schema_signature(schema: pa.Schema) -> list[list[str]]:
    """Comparable description of a schema (names and types) stored in the manifest."""
    return [[f.name, type_signature(f.type)] for f in schema]


def _partition(sizes: list[int], max_bytes: int) -> list[list[int]]:
    """Greedy, order-preserving grouping of items into files of at most ``max_bytes`` (>= 1 file)."""
    groups: list[list[int]] = [[]]
    total = 0
    for i, size in enumerate(sizes):
        if groups[-1] and total + size > max_bytes:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups


def _write_tables(target: Path, schema: pa.Schema, parts: Iterable[pa.Table]) -> int:
    """Stream ``parts`` into one Parquet file written atomically; returns the row count."""
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for part in parts:
                writer.write_table(part)
                rows += part.num_rows

    tables.atomic_write(target, write)
    return rows


# -- packaging -----------------------------------------------------------------------------------


def _scores_table(work: Path, salt: bytes) -> tuple[pa.Table, dict[str, str | None]]:
    """The released scores (allow-listed columns) and clip id -> raw uploader id, for splitting."""
    scores = tables.read_table(work, tables.SCORES)
    if scores.num_rows == 0:
        raise ReleaseError(f"{work}: the scores table is empty; run ingest, screen and score first")
    clips = {row["clip_id"]: row for row in tables.read_table(work, tables.CLIPS).to_pylist()}
    rows, uploader_of = [], {}
    for s in scores.to_pylist():
        clip = clips.get(s["clip_id"])
        if clip is None:
            raise ReleaseError(f"{work}: scored clip {s['clip_id']} is not in the clips table")
        uploader_of[s["clip_id"]] = clip["uploader_id"]
        rows.append(
            {
                "clip_id": s["clip_id"],
                "video_id": s["video_id"] if s["video_id"] is not None else clip["video_id"],
                "challenge": s["challenge"],
                "uploader": salted_hash(clip["uploader_id"], salt),
                "likes": clip["likes"],
                "comments": clip["comments"],
                "reposts": clip["reposts"],
                "create_time": clip["create_time"],
                "crawl_time": clip["crawl_time"],
                "existing_days": s["existing_days"],
                "raw_score": s["raw_score"],
                "score": s["score"],
                "out_of_scale": s["out_of_scale"],
                "degenerate_challenge": s["degenerate_challenge"],
                "duration_s": clip["duration_s"],
            }
        )
    if len(uploader_of) != len(rows):
        raise ReleaseError(f"{work}: the scores table holds a clip more than once")
    rows.sort(key=lambda r: r["clip_id"])
    return tables.to_table(rows, RELEASE_SCORES, where="release scores"), uploader_of


_PROVENANCE_COLUMNS = [
    "clip_id",
    "extractor",
    "extractor_version",
    "weights_sha256",
    "untrained",
    "params",
    "precision",
    "device",
    "identity",
]


def expected_extractors(
    modalities: Iterable[str],
    run_config: Mapping | None,
    *,
    allow_untrained: bool,
    precision: str | None = None,
    device: str | None = None,
    work: Path | None = None,
) -> dict[str, list]:
    """modality -> the extractors the run's configuration builds, whose identities a shard must match.

    With real weights in the cache that is the trained extractor; with ``allow_untrained`` the
    seeded random one counts too (a build run with ``--untrained``; with ``work`` given, only
    when the weights are missing or ``work`` holds untrained shards). Missing weights without
    ``allow_untrained`` are a :class:`ReleaseError` naming the fix.
    """
    import importlib

    from pipeline.errors import WeightsError

    out: dict[str, list] = {}
    for modality in modalities:
        module = importlib.import_module(f"pipeline.{modality}")
        section = dict((run_config or {}).get(modality, {}))
        kwargs: dict = {"device": device}
        if precision is not None:
            # the extraction rewrite adds build_extractor(..., precision=) (resolved "bfloat16"/"float32")
            kwargs["precision"] = precision
        built, error = [], None
        try:
            built.append(module.build_extractor(section, untrained=False, **kwargs))
        except WeightsError as err:
            error = err
        if allow_untrained and (error is not None or work is None or _has_untrained_shards(work, modality)):
            untrained = module.build_extractor(section, untrained=True, **kwargs)
            if all(e.identity("x") != untrained.identity("x") for e in built):
                built.append(untrained)
        if not built:
            raise ReleaseError(
                f"{modality}: {error}; or pass --allow-untrained to make a clearly marked demonstration release"
            )
        out[modality] = built
    return out


def _has_untrained_shards(work: Path, modality: str) -> bool:
    for path in tables.table_files(work, f"features/{modality}"):
        if any(pq.ParquetFile(path).read(columns=["untrained"]).column("untrained").to_pylist()):
            return True
    return False


def _extract_rejections(work: Path, modality: str) -> dict[str, dict]:
    """clip id -> the rejection row of its failed extraction (``rejections.extract-<modality>``)."""
    path = tables.shard_path(work, "rejections", f"extract-{modality}")
    if not path.is_file():
        return {}
    return {r["clip_id"]: r for r in tables.read_file(path, tables.REJECTIONS).to_pylist() if r["clip_id"]}


def _feature_inventory(work: Path, modality: str, clip_ids: list[str], extractors: list | None = None) -> dict | None:
    """Per-clip current shard, provenance and uncompressed size of one modality; None when it has no shard.

    A shard is current when its identity is one that ``extractors`` (what the configuration
    builds) compute for its clip; with ``extractors`` None the newest shard of each clip is taken.
    Clips without a current shard are ``rejected`` (their extraction failed and was recorded),
    ``stale`` (only shards of another identity) or ``missing`` (none at all).
    """
    files = tables.table_files(work, f"features/{modality}")
    if not files:
        return None
    by_clip: dict[str, list[Path]] = {}  # clip id prefix -> its shards, listed once for all clips
    for path in files:
        by_clip.setdefault(path.name.split(".")[1], []).append(path)
    rejected_rows = _extract_rejections(work, modality)
    found, missing, stale, stale_untrained, rejected, dims = {}, [], [], [], {}, set()
    for cid in clip_ids:
        shards = sorted(by_clip.get(cid[:16], []), key=lambda p: p.stat().st_mtime, reverse=True)
        if extractors is None:
            wanted = None
            path = shards[0] if shards else None
        else:
            wanted = {e.identity(cid) for e in extractors}
            path = next((p for p in shards if any(w.startswith(p.name.split(".")[2]) for w in wanted)), None)
        prov = None
        if path is not None:
            pf = pq.ParquetFile(path)
            prov = pf.read(columns=_PROVENANCE_COLUMNS).to_pylist()
            if len(prov) != 1 or prov[0]["clip_id"] != cid:
                raise ReleaseError(f"{path}: expected one row of clip {cid}")
            if wanted is not None and prov[0]["identity"] not in wanted:
                path = None  # a 12-character prefix matched by chance; the full identity decides
        if path is None:
            if cid in rejected_rows:
                r = rejected_rows[cid]
                rejected[cid] = f"{r['reason']}: {r['message']}"
            elif shards:
                stale.append(cid)
                newest = pq.ParquetFile(shards[0]).read(columns=["untrained"]).column("untrained").to_pylist()
                if any(newest):
                    stale_untrained.append(cid)
            else:
                missing.append(cid)
            continue
        ftype = pf.schema_arrow.field("features").type
        dims.add(ftype.value_type.list_size)
        found[cid] = {
            "path": path,
            "provenance": prov[0],
            "bytes": sum(pf.metadata.row_group(i).total_byte_size for i in range(pf.metadata.num_row_groups)),
        }
    if len(dims) > 1:
        raise ReleaseError(f"{modality}: shards of different widths {sorted(dims)}; re-extract with one model")
    return {
        "found": found,
        "missing": missing,
        "stale": stale,
        "stale_untrained": stale_untrained,
        "rejected": rejected,
        "dim": dims.pop() if dims else None,
    }


def _check_complete(work: Path, inventories: Mapping[str, dict], allow_missing: bool) -> None:
    """Refuse a release that would silently lack a kept clip's current features."""
    problems, fixes = [], []
    for modality, inv in inventories.items():
        if inv["stale"]:
            problems.append(
                f"{modality}: {len(inv['stale'])} kept clip(s) have only stale shards (made by another "
                f"configuration, code or weights): {', '.join(c[:16] for c in inv['stale'])}"
            )
        if inv["missing"]:
            problems.append(
                f"{modality}: {len(inv['missing'])} kept clip(s) have no shard and no recorded rejection: "
                f"{', '.join(c[:16] for c in inv['missing'])}"
            )
        if inv["stale"] or inv["missing"]:
            fixes.append(modality)
    if not problems or allow_missing:
        for problem in problems:
            log.warning("release: %s; left out (allow_missing)", problem)
        return
    raise ReleaseError(
        "; ".join(problems) + f". Re-extract them with `vdv reextract --work {work} --modalities {','.join(fixes)}` "
        "(same --config), or pass --allow-missing to release without them (they are listed in the card)"
    )


def _provenance_groups(found: Mapping[str, dict]) -> list[dict]:
    """Distinct ways the features were made, each with its clip count (manifest)."""
    groups: Counter = Counter()
    for item in found.values():
        p = item["provenance"]
        key = (
            p["extractor"],
            p["extractor_version"],
            p["weights_sha256"],
            p["untrained"],
            p["params"],
            p["precision"],
            p["device"],
        )
        groups[key] += 1
    return [
        {
            "extractor": k[0],
            "extractor_version": k[1],
            "weights_sha256": k[2],
            "untrained": k[3],
            "params": json.loads(k[4]),
            "precision": k[5],
            "device": k[6],
            "clips": n,
        }
        for k, n in sorted(groups.items())
    ]


def package_release(
    work: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: ReleaseConfig = ReleaseConfig(),
    allow_untrained: bool = False,
    salt: str | None = None,
    build_info: Mapping | None = None,
    overwrite: bool = True,
    run_config: Mapping | None = None,
    extractors: Mapping[str, Iterable] | None = None,
    precision: str | None = None,
    device: str | None = None,
    allow_missing: bool = False,
) -> ReleaseSummary:
    """Package ``work``'s scores, splits and features into ``<out>/<name>-<version>/``.

    Only feature shards whose identity is what the run's configuration computes go in:
    ``run_config`` is the whole configuration mapping (its ``[pose]``, ``[holistic]``... sections
    build the extractors, :func:`expected_extractors`, with ``precision`` and ``device`` as the
    build resolved them), or ``extractors`` gives them directly (modality -> extractors). Kept
    clips whose extraction was rejected are left out and listed in the card and the manifest.
    A kept clip with only stale shards, or with none and no rejection, makes the release refuse
    naming the clips and the command that fixes it, unless ``allow_missing`` (they are then left
    out and listed too).

    Raises :class:`ReleaseError` when there is nothing to release, when features came from
    untrained weights and ``allow_untrained`` is false, or when the target exists and
    ``overwrite`` is false. ``build_info`` (counts of the run that made the work directory) is
    recorded in the manifest beside the run lineage.
    """
    work, out = Path(work), Path(out)
    unknown = sorted(set(config.modalities) - set(MODALITIES))
    if unknown:
        raise ReleaseError(f"unknown modalities {unknown}; known: {list(MODALITIES)}")
    final = out / f"{config.name}-{config.version}"
    if final.exists() and not overwrite:
        raise ReleaseError(f"{final} exists; remove it or release another version")
    salt_bytes, salt_source = resolve_salt(salt)
    scores, uploader_of = _scores_table(work, salt_bytes)
    clip_ids = scores.column("clip_id").to_pylist()
    challenge_of = dict(zip(clip_ids, scores.column("challenge").to_pylist(), strict=True))
    tracks = splits.all_tracks(challenge_of, uploader_of if config.group_by_uploader else None, config.train_fraction)
    split_of = tracks[splits.ALL_TRACK]
    notes = (
        []
        if config.group_by_uploader
        else ["uploader grouping of the split rule is OFF ([release] group_by_uploader = false)"]
    )
    for track, assignment in tracks.items():
        if len(assignment) >= 2 and len(set(assignment.values())) == 1:
            notes.append(
                f"track {track}: every clip is in {next(iter(assignment.values()))} (its clips share one uploader)"
            )
    for note in notes:
        log.warning("release: %s", note)

    present = [m for m in config.modalities if tables.table_files(work, f"features/{m}")]
    if extractors is None:
        expected = expected_extractors(
            present, run_config, allow_untrained=allow_untrained, precision=precision, device=device, work=work
        )
    else:
        expected = {m: list(extractors[m]) for m in present if m in extractors}
    inventories = {m: _feature_inventory(work, m, clip_ids, expected.get(m)) for m in present}
    inventories = {m: inv for m, inv in inventories.items() if inv is not None}
    untrained = sorted(
        m
        for m, inv in inventories.items()
        if any(i["provenance"]["untrained"] for i in inv["found"].values()) or inv["stale_untrained"]
    )
    if untrained and not allow_untrained:
        raise ReleaseError(
            f"features of {untrained} come from untrained weights; fetch or import the weights and re-extract "
            "(vdv weights ...), or pass --allow-untrained to make a clearly marked demonstration release"
        )
    untrained = sorted(
        m for m, inv in inventories.items() if any(i["provenance"]["untrained"] for i in inv["found"].values())
    )
    _check_complete(work, inventories, allow_missing)
    for modality, inv in inventories.items():
        if inv["rejected"]:
            notes.append(
                f"{modality}: {len(inv['rejected'])} kept clip(s) left out, their extraction was rejected: "
                + ", ".join(f"{c[:16]} ({why.split(':')[0]})" for c, why in sorted(inv["rejected"].items()))
            )
        left_out = inv["stale"] + inv["missing"]
        if left_out:
            notes.append(
                f"{modality}: {len(left_out)} kept clip(s) left out without current features (--allow-missing): "
                + ", ".join(c[:16] for c in sorted(left_out))
            )

    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    max_bytes = int(config.max_shard_mb * 2**20)
    counts: dict[str, dict[str, int]] = {}
    configs: dict[str, dict] = {}

    # scores: one small table, split by the all-challenge track
    split_col = pa.array([split_of[c] for c in clip_ids])
    schema = RELEASE_SCORES.with_metadata()
    for split in (splits.TRAIN, splits.TEST):
        part = scores.filter(pc.equal(split_col, split))
        sizes = [part.slice(i, 1).nbytes for i in range(part.num_rows)]
        groups = _partition(sizes, max_bytes)
        for gi, group in enumerate(groups):
            rel = Path("data", SCORES_CONFIG, shard_name(split, gi, len(groups)))
            chunk = part.take(pa.array(group, pa.int64())) if group else part.slice(0, 0)
            _write_tables(staging / rel, schema, [chunk])
            configs.setdefault(SCORES_CONFIG, {"files": {}, "schema": schema})["files"].setdefault(split, []).append(
                rel.as_posix()
            )
        counts.setdefault(SCORES_CONFIG, {})[split] = part.num_rows

    # features: stream each clip's shard into the files of its split, one clip at a time
    manifest_features = {}
    for modality, inv in inventories.items():
        spec = tables.feature_spec(modality, inv["dim"])
        schema = spec.with_metadata()
        entry = {"files": {}, "schema": schema}
        for split in (splits.TRAIN, splits.TEST):
            members = [c for c in clip_ids if split_of[c] == split and c in inv["found"]]
            groups = _partition([inv["found"][c]["bytes"] for c in members], max_bytes)
            for gi, group in enumerate(groups):
                rel = Path("data", modality, shard_name(split, gi, len(groups)))
                parts = (tables.read_file(inv["found"][members[i]]["path"], spec) for i in group)
                _write_tables(staging / rel, schema, parts)
                entry["files"].setdefault(split, []).append(rel.as_posix())
            counts.setdefault(modality, {})[split] = len(members)
        configs[modality] = entry
        manifest_features[modality] = {
            "dim": inv["dim"],
            "untrained": modality in untrained,
            "provenance": _provenance_groups(inv["found"]),
            "identities": {c: inv["found"][c]["provenance"]["identity"] for c in sorted(inv["found"])},
            "missing_clips": inv["missing"],
            "stale_clips": inv["stale"],
            "rejected_clips": dict(sorted(inv["rejected"].items())),
        }
        if inv["missing"]:
            log.warning(
                "%s: %d kept clip(s) have no shard and are absent from the release", modality, len(inv["missing"])
            )

    # splits of every track, and the score scale
    track_info = {}
    for track, assignment in tracks.items():
        rel = Path("splits", f"{track}.parquet")
        rows = [{"clip_id": c, "split": assignment[c]} for c in sorted(assignment)]
        tables.write_table(rows, RELEASE_SPLIT, staging / rel)
        challenges = sorted({challenge_of[c] for c in assignment})
        track_info[track] = {
            "file": rel.as_posix(),
            "challenge": None if track == splits.ALL_TRACK else challenges[0],
            "train": sum(v == splits.TRAIN for v in assignment.values()),
            "test": sum(v == splits.TEST for v in assignment.values()),
        }
    scale = tables.read_table(work, tables.SCORE_SCALE)
    tables.write_table(scale, tables.SCORE_SCALE, staging / "score_scale.parquet")

    precisions = sorted({g["precision"] for m in manifest_features.values() for g in m["provenance"]})
    devices = sorted({g["device"] for m in manifest_features.values() for g in m["provenance"]})
    manifest = {
        "name": config.name,
        "version": config.version,
        "release_format": RELEASE_FORMAT,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "untrained": bool(untrained),
        "untrained_modalities": untrained,
        "warning": UNTRAINED_WARNING.format(modalities=", ".join(untrained)) if untrained else None,
        "configs": {
            name: {
                "files": c["files"],
                "num_rows": counts[name],
                "schema": schema_signature(c["schema"]),
                "table": c["schema"].metadata[b"vdv.table"].decode(),
                "schema_version": int(c["schema"].metadata[b"vdv.schema_version"]),
            }
            for name, c in configs.items()
        },
        "tracks": track_info,
        "split_rule": "order by sha256(track + clip_id), fill train to "
        f"{config.train_fraction:.0%}"
        + (" by uploader group" if config.group_by_uploader else " clip by clip (uploader grouping off)")
        + " (pipeline/splits.py)",
        "notes": notes,
        "score_scale": {
            "file": "score_scale.parquet",
            "challenges": {
                r["challenge"]: {k: r[k] for k in ("raw_min", "raw_max", "n_clips")} for r in scale.to_pylist()
            },
            "params": sorted({r["params"] for r in scale.to_pylist()}),
        },
        "features": manifest_features,
        "uploader_hash": {
            "scheme": "sha256(salt || uploader_id), hex",
            "salt_source": salt_source,
            "salt_released": False,
        },
        "not_released": ["captions", "usernames", "uploader ids", "local paths", "metadata file names", "video files"],
        "lineage": run_lineage(device=",".join(devices) or None, precision=",".join(precisions) or None),
        "build": dict(build_info or {}),
        "config": asdict(config),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    (staging / "README.md").write_text(dataset_card(manifest, configs, config, root=staging))
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    sums = "".join(f"{sha256_file(p)}  {p.relative_to(staging).as_posix()}\n" for p in files)
    (staging / "SHA256SUMS").write_text(sums)

    if final.exists():
        trash = out / f".{final.name}.old-{os.getpid()}"
        final.rename(trash)
        staging.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        staging.rename(final)
    missing = {
        m: sorted(e["missing_clips"] + e["stale_clips"] + list(e["rejected_clips"]))
        for m, e in manifest_features.items()
        if e["missing_clips"] or e["stale_clips"] or e["rejected_clips"]
    }
    return ReleaseSummary(final, counts, untrained, missing, files=len(files) + 1)


LICENSE_NAME = "vdv-research-use"  # license_name of a `license: other` card (Hugging Face card metadata)
LICENSE_LINK = "README.md#license"  # the card's own License section holds the terms
BAR = "\u2588"  # a full block: one unit of a text histogram bar


def _split_bytes(root: Path | None, files: Sequence[str]) -> int:
    """Uncompressed size of a split's Parquet data (row-group metadata; the data is not read)."""
    if root is None:
        return 0
    total = 0
    for name in files:
        meta = pq.ParquetFile(root / name).metadata
        total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return total


def _text_histogram(values: Sequence[float], lo: float, hi: float, bins: int = 10, width: int = 30) -> list[str]:
    """A histogram as Markdown table rows ``| range | count | bar |`` (renders on the Hub and offline)."""
    if not values:
        return []
    if hi <= lo:
        return [f"| {lo:.3g} | {len(values)} | {BAR * width} |"]
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))] += 1
    top = max(counts)
    step = (hi - lo) / bins
    rows = []
    for i, n in enumerate(counts):
        bar = BAR * (max(1, round(n / top * width)) if n else 0)
        closing = "]" if i == bins - 1 else ")"
        rows.append(f"| [{lo + i * step:.3g}, {lo + (i + 1) * step:.3g}{closing} | {n} | {bar} |")
    return rows


def _score_histograms(root: Path | None, configs: Mapping[str, dict]) -> list[str]:
    """Per-challenge histograms of the raw and normalised scores of the released clips."""
    if root is None or SCORES_CONFIG not in configs:
        return []
    files = [root / f for fs in configs[SCORES_CONFIG]["files"].values() for f in fs]
    table = pa.concat_tables([pq.read_table(f, columns=["challenge", "raw_score", "score"]) for f in files])
    by_challenge: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        by_challenge.setdefault(row["challenge"], []).append(row)
    lines = ["## Score distributions", ""]
    for challenge, rows in sorted(by_challenge.items()):
        raw = [r["raw_score"] for r in rows]
        norm = [r["score"] for r in rows]
        lines += [f"### {challenge} ({len(rows)} clips)", "", "Raw score `ln((L + C + R + 1) / clip(T, 1, 7))`:", ""]
        lines += ["| raw score | clips | |", "|---|---|---|", *_text_histogram(raw, min(raw), max(raw)), ""]
        lines += ["Normalised score:", "", "| score | clips | |", "|---|---|---|", *_text_histogram(norm, 0.0, 1.0), ""]
    return lines


def dataset_card(
    manifest: Mapping, configs: Mapping[str, dict], config: ReleaseConfig, *, root: Path | None = None
) -> str:
    """README.md: YAML header for the Hub (configs, features, splits, counts, license), then prose.

    ``root`` is the directory being packaged: with it, each split's ``num_bytes`` (which the
    ``datasets`` library requires beside ``name`` and ``num_examples``, else it warns that the
    splits field is malformed) is the uncompressed size of its Parquet data, ``dataset_size`` their
    sum, and the card shows per-challenge score histograms read from the released scores.
    """
    infos = []
    for name, c in configs.items():
        split_infos = [
            {
                "name": split,
                "num_bytes": _split_bytes(root, c["files"][split]),
                "num_examples": manifest["configs"][name]["num_rows"][split],
            }
            for split in c["files"]
        ]
        infos.append(
            {
                "config_name": name,
                "features": hf_features(c["schema"]),
                "splits": split_infos,
                "dataset_size": sum(s["num_bytes"] for s in split_infos),
            }
        )
    header = {
        "license": config.license,
        **({"license_name": LICENSE_NAME, "license_link": LICENSE_LINK} if config.license == "other" else {}),
        "pretty_name": "VDV: viral dance videos",
        "tags": ["video", "dance", "virality", "pose"] + (["untrained-features"] if manifest["untrained"] else []),
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": split, "path": f"data/{name}/{split}-*.parquet"} for split in c["files"]],
                **({"default": True} if name == SCORES_CONFIG else {}),
            }
            for name, c in configs.items()
        ],
        "dataset_info": infos,
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", ""]
    lines.append(f"# {config.name} {config.version}")
    lines.append("")
    if manifest["untrained"]:
        lines += [f"> **{manifest['warning']}**", ""]
    for note in manifest["notes"]:
        lines += [f"> Note: {note}.", ""]
    lines += [
        "Features and virality scores of single-dancer clips, rebuilt with the vdv pipeline after "
        '"Will You Ever Become Popular? Learning to Predict Virality of Dance Clips" (Wang et al., ACM TOMM 2022).',
        "",
        "## Configs",
        "",
        "| config | train | test | per-sample vector |",
        "|---|---|---|---|",
    ]
    for name in configs:
        n = manifest["configs"][name]["num_rows"]
        dim = manifest["features"].get(name, {}).get("dim")
        lines.append(f"| {name} | {n.get('train', 0)} | {n.get('test', 0)} | {dim if dim else '-'} |")
    lines += [
        "",
        "Splits follow the all-challenge track; each clip's features are stored once. The "
        "single-challenge tracks are `(clip_id, split)` tables under `splits/`:",
        "",
        "| track | train | test |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {i['train']} | {i['test']} |" for t, i in manifest["tracks"].items()]
    lines += [
        "",
        "Scores are `ln((likes + comments + reposts + 1) / clip(days, 1, 7))` normalised per challenge "
        "to [0, 1]; the per-challenge scale is `score_scale.parquet`.",
        "",
        *_score_histograms(root, configs),
        "## Provenance and privacy",
        "",
        "`manifest.json` records, for every modality, the extractor, its code-derived version, the "
        "weights sha256, parameters, precision and device, and each clip's feature identity, plus the "
        "run lineage (code commit, library versions). Uploaders appear only as salted hashes "
        f"({manifest['uploader_hash']['scheme']}; the salt is not released). Captions and usernames "
        "are not released. `SHA256SUMS` lists every file's checksum; `vdv release verify DIR` re-checks it all.",
        "",
        "## License",
        "",
        config.license_note,
        "",
    ]
    return "\n".join(lines)


# -- verification --------------------------------------------------------------------------------


def _read_card_header(path: Path) -> dict:
    text = path.read_text()
    if not text.startswith("---\n"):
        raise ValueError("README.md has no YAML header")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def verify_release(directory: str | os.PathLike) -> VerifyResult:
    """Re-check a release: checksums, schemas, counts, each clip stored once, splits by the rule.

    Never raises for a damaged release: every defect found is one line of ``problems``.
    """
    root = Path(directory)
    if not root.is_dir():
        return VerifyResult(root, [f"{root} is not a directory"], {})
    result = VerifyResult(root, [], {})
    try:
        _verify(root, result)
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        # a manifest that parses but lacks what every release has (hand-edited or truncated)
        result.problems.append(f"manifest.json is malformed ({type(err).__name__}: {_one_line(err)})")
    return result


def _verify(root: Path, result: VerifyResult) -> VerifyResult:
    problems, counts = result.problems, result.counts
    sums_path = root / "SHA256SUMS"
    if not sums_path.is_file():
        problems.append("SHA256SUMS is missing")
        return result
    listed = {}
    for line in sums_path.read_text().splitlines():
        digest, _, rel = line.partition("  ")
        listed[rel] = digest
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    for rel in sorted(present - set(listed)):
        problems.append(f"{rel}: not listed in SHA256SUMS")
    for rel, digest in sorted(listed.items()):
        if rel not in present:
            problems.append(f"{rel}: listed in SHA256SUMS but missing")
        elif sha256_file(root / rel) != digest:
            problems.append(f"{rel}: checksum mismatch")
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        card = _read_card_header(root / "README.md")
    except (OSError, ValueError, yaml.YAMLError) as err:
        problems.append(f"manifest or card unreadable: {err}")
        return result

    card_configs = {c["config_name"] for c in card.get("configs", [])}
    if card_configs != set(manifest["configs"]):
        problems.append(f"card configs {sorted(card_configs)} differ from the manifest's {sorted(manifest['configs'])}")
    if manifest.get("untrained") and "UNTRAINED" not in (root / "README.md").read_text():
        problems.append("features from untrained weights but the card carries no warning")

    split_of: dict[str, dict[str, str]] = {}  # config -> clip_id -> split found in files
    unreadable: set[str] = set()  # files already reported as unreadable
    for name, entry in manifest["configs"].items():
        seen: dict[str, str] = {}
        for split, files in entry["files"].items():
            on_disk = sorted(p.relative_to(root).as_posix() for p in (root / "data" / name).glob(f"{split}-*.parquet"))
            if on_disk != sorted(files):
                problems.append(f"{name}/{split}: files {on_disk} differ from the manifest's {files}")
            rows = 0
            for rel in files:
                path = root / rel
                if not path.is_file():
                    continue
                try:
                    pf = pq.ParquetFile(path)
                    file_schema = pf.schema_arrow
                    clip_column = pf.read(columns=["clip_id"]).column("clip_id").to_pylist()
                except (OSError, ValueError, KeyError, pa.ArrowException) as err:
                    # a damaged footer or page: one more problem, never a traceback (ArrowInvalid is a ValueError)
                    problems.append(f"{rel}: unreadable Parquet file ({_one_line(err)})")
                    unreadable.add(rel)
                    continue
                if schema_signature(file_schema) != entry["schema"]:
                    problems.append(f"{rel}: schema differs from the manifest's")
                bad = sorted(set(file_schema.names) & set(FORBIDDEN_COLUMNS))
                if bad:
                    problems.append(f"{rel}: holds columns that must not be released: {bad}")
                for cid in clip_column:
                    if cid in seen:
                        problems.append(f"{name}: clip {cid} stored more than once")
                    seen[cid] = split
                rows += pf.metadata.num_rows
            counts.setdefault(name, {})[split] = rows
            if rows != entry["num_rows"].get(split):
                problems.append(f"{name}/{split}: {rows} rows, manifest says {entry['num_rows'].get(split)}")
        split_of[name] = seen

    scores_split = split_of.get(SCORES_CONFIG, {})
    for name, seen in split_of.items():
        for cid, split in seen.items():
            if name != SCORES_CONFIG and scores_split.get(cid) != split:
                problems.append(f"{name}: clip {cid} is in {split} but its score is in {scores_split.get(cid)}")

    # recompute every track from the released scores (salted uploader hashes group like the ids)
    score_files = [
        rel for files in manifest["configs"].get(SCORES_CONFIG, {}).get("files", {}).values() for rel in files
    ]
    if score_files and not unreadable.intersection(score_files) and all((root / r).is_file() for r in score_files):
        scores = pa.concat_tables(
            [pq.read_table(root / rel, columns=["clip_id", "challenge", "uploader"]) for rel in score_files]
        )
        ids = scores.column("clip_id").to_pylist()
        fraction = manifest.get("config", {}).get("train_fraction", splits.TRAIN_FRACTION)
        grouped = manifest.get("config", {}).get("group_by_uploader", True)
        expected = splits.all_tracks(
            dict(zip(ids, scores.column("challenge").to_pylist(), strict=True)),
            dict(zip(ids, scores.column("uploader").to_pylist(), strict=True)) if grouped else None,
            fraction,
        )
        if set(expected) != set(manifest["tracks"]):
            problems.append(f"tracks {sorted(manifest['tracks'])} differ from the challenges' {sorted(expected)}")
        if expected[splits.ALL_TRACK] != scores_split:
            problems.append("the data files' train/test assignment does not follow the split rule")
        for track, info in manifest["tracks"].items():
            path = root / info["file"]
            if not path.is_file() or track not in expected:
                continue
            try:
                stored = tables.read_file(path, RELEASE_SPLIT).to_pylist()
            except (OSError, ValueError, pa.ArrowException) as err:  # SchemaMismatch is a ValueError
                problems.append(f"{info['file']}: {_one_line(err)}")
                continue
            if {r["clip_id"]: r["split"] for r in stored} != expected[track]:
                problems.append(f"{info['file']}: split differs from the split rule")
    return result
