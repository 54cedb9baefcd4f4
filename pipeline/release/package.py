"""Packaging a release: decide what goes in, write it into a hidden staging directory beside the
target (data, splits, score scale, manifest, card, checksums), then rename it into place."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import tables
from pipeline.core.provenance import sha256_file
from pipeline.modalities import registry
from pipeline.release.card import dataset_card
from pipeline.release.config import NothingToRelease, ReleaseConfig, ReleaseError
from pipeline.release.inventory import Inventory, Shard, expected_extractors, feature_inventories
from pipeline.release.layout import RELEASE_SCORES, RELEASE_SPLIT, SCORES_CONFIG, SPLITS
from pipeline.release.manifest import build_manifest, feature_entries
from pipeline.release.policy import assign_tracks, check_complete, left_out_notes, split_notes, untrained_modalities
from pipeline.release.privacy import released_scores, resolve_salt
from pipeline.release.shards import STATISTICS, SplitSource, write_config
from pipeline.scoring import splits

log = logging.getLogger(__name__)
_DEFAULT_CONFIG = ReleaseConfig()  # frozen, so one shared default is safe


@dataclass
class ReleaseSummary:
    path: Path
    counts: dict[str, dict[str, int]]  # config -> split -> rows
    untrained_modalities: list[str]
    missing: dict[str, list[str]] = field(default_factory=dict)  # modality -> clip ids with no shard
    files: int = 0


@dataclass
class _Contents:
    """What a release holds, decided before anything is written."""

    scores: pa.Table  # the released scores, sorted by clip id
    challenge_of: dict[str, str]  # clip id -> challenge, in the scores' order
    tracks: dict[str, dict[str, str]]  # track -> clip id -> split
    inventories: dict[str, Inventory]  # modality -> its current shards
    untrained: list[str]  # modalities whose released features come from untrained weights
    notes: list[str]  # for the card and the manifest
    salt_source: str

    @property
    def clip_ids(self) -> list[str]:
        return list(self.challenge_of)


def check_releasable(work: str | os.PathLike, label: str = "work directory") -> int:
    """How many kept, scored clips ``work`` holds; :class:`NothingToRelease` when none.

    Asked before a release starts anything (``vdv release`` asks before its flow starts), so
    that a work directory that was never built, or whose screening kept nothing, is one line
    saying which, and which command comes first. ``label`` names the option or parameter.
    """
    where = f"{label} {work}"
    if not Path(work).is_dir():
        raise NothingToRelease(f"{where}: no such work directory; run `vdv build` (or ingest, screen and score) first")
    scored = tables.read_table(work, tables.SCORES).num_rows
    if scored:
        return scored
    screening = tables.read_table(work, tables.SCREENING).to_pylist()
    kept = sum(bool(row["kept"]) for row in screening)
    if not screening:
        raise NothingToRelease(f"{where}: no clip was screened; run `vdv build` (or ingest, screen and score) first")
    if not kept:
        raise NothingToRelease(
            f"{where}: no kept clips to release: screening rejected all {len(screening)} clip(s) "
            f"(`vdv summary --work {work}` gives the reasons)"
        )
    raise NothingToRelease(f"{where}: screening kept {kept} clip(s) but none is scored; run `vdv score` first")


def package_release(
    work: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: ReleaseConfig = _DEFAULT_CONFIG,
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
    check_releasable(work)
    config = dataclasses.replace(config, modalities=_configured(config))  # the manifest names them
    final = _target(out, config, overwrite)
    salt_bytes, salt_source = resolve_salt(salt)
    scores, uploader_of = released_scores(work, salt_bytes)
    challenge_of = dict(zip(scores.column("clip_id").to_pylist(), scores.column("challenge").to_pylist(), strict=True))
    tracks = assign_tracks(challenge_of, uploader_of, config)
    notes = split_notes(tracks, config)
    present = [m for m in config.modalities if tables.table_files(work, f"features/{m}")]
    if extractors is None:
        expected = expected_extractors(
            present, run_config, allow_untrained=allow_untrained, precision=precision, device=device, work=work
        )
    else:
        expected = {m: list(extractors[m]) for m in present if m in extractors}
    inventories = feature_inventories(work, present, list(challenge_of), expected)
    untrained = untrained_modalities(inventories, allow_untrained)
    check_complete(work, inventories, allow_missing)
    notes += left_out_notes(inventories)
    contents = _Contents(scores, challenge_of, tracks, inventories, untrained, notes, salt_source)

    staging = _fresh_staging(out, final)
    try:
        counts = _assemble(staging, work, contents, config, build_info)
        files = _write_checksums(staging)
        _move_into_place(staging, final)
    except BaseException:
        # a full disk, an interrupt: what was staged is of no use to anyone (a SIGKILL, which
        # cannot be caught, leaves it to the next release's sweep, _sweep_stale)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    missing = {m: inv.left_out() for m, inv in inventories.items() if inv.left_out()}
    return ReleaseSummary(final, counts, untrained, missing, files=files + 1)


def _target(out: Path, config: ReleaseConfig, overwrite: bool) -> Path:
    """``<out>/<name>-<version>``, after checking ``overwrite``."""
    final = out / f"{config.name}-{config.version}"
    if final.exists() and not overwrite:
        raise ReleaseError(f"{final} exists; remove it or release another version")
    return final


def _configured(config: ReleaseConfig) -> tuple[str, ...]:
    """The modalities ``[release] modalities`` names (default: every registered one), in registry order."""
    if config.modalities is None:
        return registry.names()
    try:
        return registry.ordered(config.modalities)
    except ValueError as err:
        raise ReleaseError(str(err)) from None


def _fresh_staging(out: Path, final: Path) -> Path:
    """An empty hidden sibling of ``final``, private to this process; the directories that
    releases which died left in ``out`` are removed first (:func:`sweep_stale`)."""
    out.mkdir(parents=True, exist_ok=True)
    sweep_stale(out)
    staging = out / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


_LEFT_BEHIND = re.compile(r"^\..+\.(partial|old)-(\d+)$")


def sweep_stale(out: Path) -> list[Path]:
    """Remove the hidden ``.<name>.partial-PID`` and ``.<name>.old-PID`` directories in ``out``
    whose process is gone (killed, or its disk filled before it could clean up); returns them.

    A directory of a process still running is left alone (another release in progress), unless
    that process id now belongs to a process started after the directory was made (the id was
    reused). This process's own are its to handle.
    """
    removed = []
    try:
        entries = list(out.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _LEFT_BEHIND.match(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or _running_since(pid, entry):
            continue
        log.warning("removing %s, left behind by release process %d, which is gone", entry, pid)
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _running_since(pid: int, entry: Path) -> bool:
    """Whether process ``pid`` runs and may be the one that made ``entry``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    except OSError:
        return False
    started = _start_time(pid)
    if started is None:
        return True  # no /proc: a running process with that id is taken to be its maker
    try:
        made = entry.stat().st_mtime
    except OSError:
        return False
    # a process started after the directory's last change cannot have made it (1 s of slack
    # for clock granularity)
    return started <= made + 1.0


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (Unix seconds), from ``/proc``; None without it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time after boot, in clock ticks
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return None


def _assemble(
    staging: Path, work: Path, contents: _Contents, config: ReleaseConfig, build_info: Mapping | None
) -> dict[str, dict[str, int]]:
    """Write everything but SHA256SUMS into ``staging``; returns config -> split -> rows."""
    configs, counts = _write_data(staging, contents, int(config.max_shard_mb * 2**20))
    track_info = _write_tracks(staging, contents.tracks, contents.challenge_of)
    scale = tables.read_table(work, tables.SCORE_SCALE)
    tables.write_table(scale, tables.SCORE_SCALE, staging / "score_scale.parquet")
    manifest = build_manifest(
        config,
        configs,
        counts,
        tracks=track_info,
        notes=contents.notes,
        scale=scale,
        features=feature_entries(contents.inventories, contents.untrained),
        untrained=contents.untrained,
        salt_source=contents.salt_source,
        build_info=build_info,
    )
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    (staging / "README.md").write_text(dataset_card(manifest, configs, config, root=staging))
    return counts


def _write_data(
    staging: Path, contents: _Contents, max_bytes: int
) -> tuple[dict[str, dict], dict[str, dict[str, int]]]:
    """The scores, then each modality, split by the all-challenge track; returns the configs
    (name -> {"files": split -> files, "schema"}) and config -> split -> rows."""
    split_of = contents.tracks[splits.ALL_TRACK]
    clip_ids = contents.clip_ids
    split_col = pa.array([split_of[c] for c in clip_ids])
    sources = {
        SCORES_CONFIG: (
            RELEASE_SCORES.with_metadata(),
            {split: _score_source(contents.scores.filter(pc.equal(split_col, split))) for split in SPLITS},
        )
    }
    for modality, inv in contents.inventories.items():
        spec = tables.feature_spec(modality, inv.dim or registry.get(modality).dim)  # no shard: the record's width
        members = {
            split: [inv.found[c] for c in clip_ids if split_of[c] == split and c in inv.found] for split in SPLITS
        }
        sources[modality] = (spec.with_metadata(), {split: _shard_source(m, spec) for split, m in members.items()})
        if inv.missing:
            log.warning("%s: %d kept clip(s) have no shard and are absent from the release", modality, len(inv.missing))
    configs, counts = {}, {}
    for name, (schema, by_split) in sources.items():
        statistics = True if name == SCORES_CONFIG else STATISTICS  # never on a feature config's provenance text
        files, counts[name] = write_config(staging, name, schema, by_split, max_bytes, statistics=statistics)
        configs[name] = {"files": files, "schema": schema}
    return configs, counts


def _score_source(part: pa.Table) -> SplitSource:
    """One split of the scores: a run of rows is one slice of the table."""
    return SplitSource(
        [part.slice(i, 1).nbytes for i in range(part.num_rows)],
        lambda group: [part.take(pa.array(group, pa.int64()))],
    )


def _shard_source(shards: list[Shard], spec: tables.TableSpec) -> SplitSource:
    """One split of a modality: each clip's shard streamed in, one clip at a time, hashed as it is
    read (:func:`_packed`)."""
    return SplitSource([s.bytes for s in shards], lambda group: (_packed(shards[i], spec) for i in group))


def _packed(shard: Shard, spec: tables.TableSpec) -> pa.Table:
    """A shard's table from bytes whose sha256 is the one it was taken at (recorded when it was
    written); a file changed since is a :class:`ReleaseError` naming the clip and the fix."""
    data = shard.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != shard.sha256:
        clip, modality = shard.provenance["clip_id"], spec.name.rsplit("/", 1)[-1]
        raise ReleaseError(
            f"{modality}: the shard of clip {clip[:16]} changed while the release was written ({shard.path}); "
            f"re-extract it (`vdv extract {modality} --work {shard.path.parents[2]}`) and release again"
        )
    return tables.read_file(shard.path, spec, data=data)


def _write_tracks(staging: Path, tracks: Mapping[str, dict[str, str]], challenge_of: Mapping[str, str]) -> dict:
    """``splits/<track>.parquet`` of every track; returns the manifest's track -> file, challenge, counts."""
    info = {}
    for track, assignment in tracks.items():
        rel = Path("splits", f"{track}.parquet")
        rows = [{"clip_id": c, "split": assignment[c]} for c in sorted(assignment)]
        tables.write_table(rows, RELEASE_SPLIT, staging / rel)
        challenges = sorted({challenge_of[c] for c in assignment})
        info[track] = {
            "file": rel.as_posix(),
            "challenge": None if track == splits.ALL_TRACK else challenges[0],
            "train": sum(v == splits.TRAIN for v in assignment.values()),
            "test": sum(v == splits.TEST for v in assignment.values()),
        }
    return info


def _write_checksums(staging: Path) -> int:
    """SHA256SUMS of every other file (``sha256sum -c`` format); returns how many it lists."""
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    sums = "".join(f"{sha256_file(p)}  {p.relative_to(staging).as_posix()}\n" for p in files)
    (staging / "SHA256SUMS").write_text(sums)
    return len(files)


def _move_into_place(staging: Path, final: Path) -> None:
    """Rename ``staging`` to ``final``; a previous release there is moved aside first, then removed."""
    if final.exists():
        trash = final.parent / f".{final.name}.old-{os.getpid()}"
        shutil.rmtree(trash, ignore_errors=True)
        final.rename(trash)
        try:
            staging.rename(final)
        except BaseException:
            trash.rename(final)  # the previous release stays where it was
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        staging.rename(final)
