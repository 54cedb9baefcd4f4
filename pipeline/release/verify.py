"""Re-checking a release directory: checksums, the card against the manifest, every data file's
schema and rows, each clip stored once and in its score's split, and every track against the
split rule recomputed from the released scores."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline.core import tables
from pipeline.core.checksums import read_sha256sums
from pipeline.core.provenance import sha256_file
from pipeline.release.card import read_card_header
from pipeline.release.layout import RELEASE_SPLIT, SCORES_CONFIG, schema_signature
from pipeline.release.privacy import FORBIDDEN_COLUMNS
from pipeline.scoring import splits


@dataclass
class VerifyResult:
    path: Path
    problems: list[str]
    counts: dict[str, dict[str, int]]

    @property
    def ok(self) -> bool:
        return not self.problems


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


def _verify(root: Path, result: VerifyResult) -> None:
    problems = result.problems
    if not _check_checksums(root, problems):
        return
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        card = read_card_header(root / "README.md")
    except (OSError, ValueError, yaml.YAMLError) as err:
        problems.append(f"manifest or card unreadable: {err}")
        return
    _check_card(root, manifest, card, problems)
    unreadable: set[str] = set()  # files already reported as unreadable
    split_of = {
        name: _check_config(root, name, entry, result, unreadable) for name, entry in manifest["configs"].items()
    }
    scores_split = split_of.get(SCORES_CONFIG, {})
    for name, seen in split_of.items():
        for cid, split in seen.items():
            if name != SCORES_CONFIG and scores_split.get(cid) != split:
                problems.append(f"{name}: clip {cid} is in {split} but its score is in {scores_split.get(cid)}")
    _check_tracks(root, manifest, scores_split, unreadable, problems)


def _check_checksums(root: Path, problems: list[str]) -> bool:
    """Every file listed in SHA256SUMS with its digest and no other; False when there is no SHA256SUMS."""
    sums_path = root / "SHA256SUMS"
    if not sums_path.is_file():
        problems.append("SHA256SUMS is missing")
        return False
    listed = read_sha256sums(sums_path)
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    for rel in sorted(present - set(listed)):
        problems.append(f"{rel}: not listed in SHA256SUMS")
    for rel, digest in sorted(listed.items()):
        if rel not in present:
            problems.append(f"{rel}: listed in SHA256SUMS but missing")
        elif sha256_file(root / rel) != digest:
            problems.append(f"{rel}: checksum mismatch")
    return True


def _check_card(root: Path, manifest: Mapping, card: Mapping, problems: list[str]) -> None:
    card_configs = {c["config_name"] for c in card.get("configs", [])}
    if card_configs != set(manifest["configs"]):
        problems.append(f"card configs {sorted(card_configs)} differ from the manifest's {sorted(manifest['configs'])}")
    if manifest.get("untrained") and "UNTRAINED" not in (root / "README.md").read_text():
        problems.append("features from untrained weights but the card carries no warning")


def _check_config(root: Path, name: str, entry: Mapping, result: VerifyResult, unreadable: set[str]) -> dict[str, str]:
    """Check one config's files and row counts; returns clip id -> the split its row was found in."""
    problems = result.problems
    seen: dict[str, str] = {}
    for split, files in entry["files"].items():
        on_disk = sorted(p.relative_to(root).as_posix() for p in (root / "data" / name).glob(f"{split}-*.parquet"))
        if on_disk != sorted(files):
            problems.append(f"{name}/{split}: files {on_disk} differ from the manifest's {files}")
        rows = 0
        for rel in files:
            read = _read_data_file(root / rel, rel, problems, unreadable)
            if read is None:
                continue
            schema, clip_ids, num_rows = read
            if schema_signature(schema) != entry["schema"]:
                problems.append(f"{rel}: schema differs from the manifest's")
            bad = sorted(set(schema.names) & set(FORBIDDEN_COLUMNS))
            if bad:
                problems.append(f"{rel}: holds columns that must not be released: {bad}")
            for cid in clip_ids:
                if cid in seen:
                    problems.append(f"{name}: clip {cid} stored more than once")
                seen[cid] = split
            rows += num_rows
        result.counts.setdefault(name, {})[split] = rows
        if rows != entry["num_rows"].get(split):
            problems.append(f"{name}/{split}: {rows} rows, manifest says {entry['num_rows'].get(split)}")
    return seen


def _read_data_file(
    path: Path, rel: str, problems: list[str], unreadable: set[str]
) -> tuple[pa.Schema, list[str], int] | None:
    """(schema, clip ids, rows) of a data file; None when it is absent or unreadable (reported once)."""
    if not path.is_file():
        return None  # already reported against SHA256SUMS
    try:
        pf = pq.ParquetFile(path)
        return pf.schema_arrow, pf.read(columns=["clip_id"]).column("clip_id").to_pylist(), pf.metadata.num_rows
    except (OSError, ValueError, KeyError, pa.ArrowException) as err:
        # a damaged footer or page: one more problem, never a traceback (ArrowInvalid is a ValueError)
        problems.append(f"{rel}: unreadable Parquet file ({_one_line(err)})")
        unreadable.add(rel)
        return None


def _check_tracks(
    root: Path, manifest: Mapping, scores_split: Mapping[str, str], unreadable: set[str], problems: list[str]
) -> None:
    """Recompute every track from the released scores (salted uploader hashes group like the ids)."""
    score_files = [
        rel for files in manifest["configs"].get(SCORES_CONFIG, {}).get("files", {}).values() for rel in files
    ]
    if not score_files or unreadable.intersection(score_files) or not all((root / r).is_file() for r in score_files):
        return
    expected = _expected_tracks(root, score_files, manifest.get("config", {}))
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


def _expected_tracks(root: Path, score_files: list[str], config: Mapping) -> dict[str, dict[str, str]]:
    """Every track as the split rule assigns the released scores, under the release's configuration."""
    scores = pa.concat_tables(
        [pq.read_table(root / rel, columns=["clip_id", "challenge", "uploader"]) for rel in score_files]
    )
    ids = scores.column("clip_id").to_pylist()
    grouped = config.get("group_by_uploader", True)
    return splits.all_tracks(
        dict(zip(ids, scores.column("challenge").to_pylist(), strict=True)),
        dict(zip(ids, scores.column("uploader").to_pylist(), strict=True)) if grouped else None,
        config.get("train_fraction", splits.TRAIN_FRACTION),
    )


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
