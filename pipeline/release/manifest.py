"""The content of a release's ``manifest.json``: its configs and files, the tracks, the provenance
of every feature, how uploaders are hashed, the run lineage and the release configuration."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict

import pyarrow as pa

from pipeline.core.provenance import run_lineage
from pipeline.release.config import ReleaseConfig
from pipeline.release.inventory import Inventory, Shard
from pipeline.release.layout import RELEASE_FORMAT, schema_signature
from pipeline.release.policy import UNTRAINED_WARNING

NOT_RELEASED = ("captions", "usernames", "uploader ids", "local paths", "metadata file names", "video files")
_PROVENANCE_KEY = ("extractor", "extractor_version", "weights_sha256", "untrained", "params", "precision", "device")


def build_manifest(
    config: ReleaseConfig,
    configs: Mapping[str, dict],
    counts: Mapping[str, dict[str, int]],
    *,
    tracks: dict[str, dict],
    notes: list[str],
    scale: pa.Table,
    features: dict[str, dict],
    untrained: list[str],
    salt_source: str,
    build_info: Mapping | None,
) -> dict:
    """The manifest; ``configs`` is config -> {"files", "schema"}, ``features`` is :func:`feature_entries`."""
    return {
        "name": config.name,
        "version": config.version,
        "release_format": RELEASE_FORMAT,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "untrained": bool(untrained),
        "untrained_modalities": untrained,
        "warning": UNTRAINED_WARNING.format(modalities=", ".join(untrained)) if untrained else None,
        "configs": {name: _config_entry(c, counts[name]) for name, c in configs.items()},
        "tracks": tracks,
        "split_rule": _split_rule(config),
        "notes": notes,
        "score_scale": _score_scale_entry(scale),
        "features": features,
        "uploader_hash": {
            "scheme": "sha256(salt || uploader_id), hex",
            "salt_source": salt_source,
            "salt_released": False,
        },
        "not_released": list(NOT_RELEASED),
        "lineage": _lineage(features),
        "build": dict(build_info or {}),
        "config": asdict(config),
    }


def feature_entries(inventories: Mapping[str, Inventory], untrained: list[str]) -> dict[str, dict]:
    """modality -> what the manifest records of its features: width, provenance, identities, clips left out."""
    return {
        modality: {
            "dim": inv.dim,
            "untrained": modality in untrained,
            "provenance": provenance_groups(inv.found),
            "identities": {c: inv.found[c].provenance["identity"] for c in sorted(inv.found)},
            "missing_clips": inv.missing,
            "stale_clips": inv.stale,
            "rejected_clips": dict(sorted(inv.rejected.items())),
        }
        for modality, inv in inventories.items()
    }


def provenance_groups(found: Mapping[str, Shard]) -> list[dict]:
    """Distinct ways the features were made, each with its clip count."""
    groups: Counter = Counter(tuple(shard.provenance[k] for k in _PROVENANCE_KEY) for shard in found.values())
    return [
        {**dict(zip(_PROVENANCE_KEY, key, strict=True)), "params": json.loads(key[4]), "clips": n}
        for key, n in sorted(groups.items())
    ]


def _config_entry(entry: Mapping, num_rows: dict[str, int]) -> dict:
    schema = entry["schema"]
    return {
        "files": entry["files"],
        "num_rows": num_rows,
        "schema": schema_signature(schema),
        "table": schema.metadata[b"vdv.table"].decode(),
        "schema_version": int(schema.metadata[b"vdv.schema_version"]),
    }


def _split_rule(config: ReleaseConfig) -> str:
    return (
        "order by sha256(track + clip_id), fill train to "
        f"{config.train_fraction:.0%}"
        + (" by uploader group" if config.group_by_uploader else " clip by clip (uploader grouping off)")
        + " (pipeline/scoring/splits.py)"
    )


def _score_scale_entry(scale: pa.Table) -> dict:
    rows = scale.to_pylist()
    return {
        "file": "score_scale.parquet",
        "challenges": {r["challenge"]: {k: r[k] for k in ("raw_min", "raw_max", "n_clips")} for r in rows},
        "params": sorted({r["params"] for r in rows}),
    }


def _lineage(features: Mapping[str, dict]) -> dict:
    """The run lineage, with the precisions and devices the released features were computed with."""
    precisions = sorted({g["precision"] for m in features.values() for g in m["provenance"]})
    devices = sorted({g["device"] for m in features.values() for g in m["provenance"]})
    return run_lineage(device=",".join(devices) or None, precision=",".join(precisions) or None)
