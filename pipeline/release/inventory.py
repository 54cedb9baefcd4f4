"""Which feature shards of a work directory go into a release.

A shard is current when its identity is one that the extractors the run's configuration builds
compute for its clip. Those identities come from the extractors as described by the registry
(:func:`pipeline.modalities.registry.describe`: configuration, code version, the weights' recorded sha256,
precision), so no network is loaded: a release only copies shards. Each kept clip of a modality
has a current shard, or is ``rejected`` (its extraction failed and was recorded), ``stale``
(only shards of another identity), ``damaged`` (its current shard is not the file its writer
recorded: altered, truncated or never recorded, :mod:`pipeline.core.checksums`) or ``missing`` (none at all).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import checksums, tables
from pipeline.core.errors import WeightsError
from pipeline.release.config import ReleaseError

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


@dataclass(frozen=True)
class Shard:
    """A clip's current shard."""

    path: Path
    provenance: dict  # the shard's provenance columns (_PROVENANCE_COLUMNS)
    bytes: int  # uncompressed size of its data (row-group metadata)
    sha256: str = ""  # the sum it was checked at (recorded when it was written); packing checks it again


@dataclass
class Inventory:
    """One modality's shards for the kept clips; the lists follow the clips' order."""

    found: dict[str, Shard] = field(default_factory=dict)  # clip id -> its current shard
    missing: list[str] = field(default_factory=list)  # no shard and no recorded rejection
    stale: list[str] = field(default_factory=list)  # only shards of another identity
    stale_untrained: list[str] = field(default_factory=list)  # stale, and the newest shard is untrained
    rejected: dict[str, str] = field(default_factory=dict)  # clip id -> "reason: message" of the failure
    damaged: dict[str, str] = field(default_factory=dict)  # clip id -> why its shard is not the one written
    dim: int | None = None  # the per-sample vector width of the current shards

    @property
    def untrained(self) -> bool:
        """Whether any current shard comes from untrained weights."""
        return any(s.provenance["untrained"] for s in self.found.values())

    def left_out(self) -> list[str]:
        """The kept clips this modality's config does not hold, sorted."""
        return sorted(self.missing + self.stale + list(self.rejected) + list(self.damaged))


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

    The extractors are described, not loaded (:func:`pipeline.modalities.registry.describe`). With real
    weights in the cache that is the trained extractor; with ``allow_untrained`` the seeded random
    one counts too (a build run with ``--untrained``; with ``work`` given, only when the weights
    are missing or ``work`` holds untrained shards). Missing or changed weights without
    ``allow_untrained`` are a :class:`ReleaseError` naming the modality and the fix.
    """
    from pipeline.modalities import registry

    out: dict[str, list] = {}
    sections = registry.resolved_sections(modalities, run_config or {}, device)
    for modality in modalities:
        section = sections[modality]
        built, error = [], None
        try:
            built.append(registry.describe(modality, section, untrained=False, device=device, precision=precision))
        except WeightsError as err:
            error = err
        if allow_untrained and (error is not None or work is None or _has_untrained_shards(work, modality)):
            untrained = registry.describe(modality, section, untrained=True, device=device, precision=precision)
            if all(e.identity("x") != untrained.identity("x") for e in built):
                built.append(untrained)
        if not built:
            raise ReleaseError(
                f"{modality}: {error}; or pass --allow-untrained to make a clearly marked demonstration release"
            )
        out[modality] = built
    return out


def feature_inventories(
    work: Path, modalities: Iterable[str], clip_ids: list[str], extractors: Mapping[str, list]
) -> dict[str, Inventory]:
    """modality -> its inventory, for the modalities that have shards (see :func:`feature_inventory`)."""
    inventories = {m: feature_inventory(work, m, clip_ids, extractors.get(m)) for m in modalities}
    return {m: inv for m, inv in inventories.items() if inv is not None}


def feature_inventory(
    work: Path, modality: str, clip_ids: list[str], extractors: list | None = None
) -> Inventory | None:
    """Per-clip current shard of one modality and the clips without one; None when it has no shard.

    With ``extractors`` None the newest shard of each clip is taken as current.
    """
    files = tables.table_files(work, f"features/{modality}")
    if not files:
        return None
    by_clip: dict[str, list[Path]] = {}  # clip id prefix -> its shards, listed once for all clips
    for path in files:
        by_clip.setdefault(path.name.split(".")[1], []).append(path)
    rejections = _extract_rejections(work, modality)
    inv, dims = Inventory(), set()
    for cid in clip_ids:
        shards = sorted(by_clip.get(cid[:16], []), key=lambda p: p.stat().st_mtime, reverse=True)
        current = _current_shard(work, cid, shards, extractors, inv)
        if cid in inv.damaged:
            continue
        if current is None:
            _record_absent(inv, cid, shards, rejections)
            continue
        shard, dim = current
        inv.found[cid] = shard
        dims.add(dim)
    if len(dims) > 1:
        raise ReleaseError(f"{modality}: shards of different widths {sorted(dims)}; re-extract with one model")
    inv.dim = dims.pop() if dims else None
    return inv


def _current_shard(
    work: Path, cid: str, shards: list[Path], extractors: list | None, inv: Inventory
) -> tuple[Shard, int] | None:
    """The current one of a clip's shards (newest first) and its vector width, or None.

    The shard must be the file its writer recorded (its sha256, :mod:`pipeline.core.checksums`);
    one that is not (altered, truncated, or never recorded) goes to ``inv.damaged``."""
    if extractors is None:
        wanted = None
        path = shards[0] if shards else None
    else:
        wanted = {e.identity(cid) for e in extractors}
        path = next((p for p in shards if any(w.startswith(p.name.split(".")[2]) for w in wanted)), None)
    if path is None:
        return None
    check = checksums.check_shard(work, path, keep=True)
    if not check.ok:
        inv.damaged[cid] = check.why()
        return None
    pf = pq.ParquetFile(pa.BufferReader(check.data))
    prov = pf.read(columns=_PROVENANCE_COLUMNS).to_pylist()
    if len(prov) != 1 or prov[0]["clip_id"] != cid:
        raise ReleaseError(f"{path}: expected one row of clip {cid}")
    if wanted is not None and prov[0]["identity"] not in wanted:
        return None  # a 12-character prefix matched by chance; the full identity decides
    size = sum(pf.metadata.row_group(i).total_byte_size for i in range(pf.metadata.num_row_groups))
    dim = pf.schema_arrow.field("features").type.value_type.list_size
    return Shard(path, prov[0], size, check.sha256), dim


def _record_absent(inv: Inventory, cid: str, shards: list[Path], rejections: Mapping[str, dict]) -> None:
    """File a clip without a current shard as rejected, stale or missing."""
    if cid in rejections:
        r = rejections[cid]
        inv.rejected[cid] = f"{r['reason']}: {r['message']}"
    elif shards:
        inv.stale.append(cid)
        if _is_untrained(shards[0]):
            inv.stale_untrained.append(cid)
    else:
        inv.missing.append(cid)


def _is_untrained(path: Path) -> bool:
    """Whether the shard says it is untrained (a file that cannot be read says nothing: whether
    it is current is decided by its checksum, :func:`_current_shard`)."""
    try:
        return any(pq.ParquetFile(path).read(columns=["untrained"]).column("untrained").to_pylist())
    except (OSError, pa.ArrowException):
        return False


def _has_untrained_shards(work: Path, modality: str) -> bool:
    return any(_is_untrained(path) for path in tables.table_files(work, f"features/{modality}"))


def _extract_rejections(work: Path, modality: str) -> dict[str, dict]:
    """clip id -> the rejection row of its failed extraction (``rejections.extract-<modality>``)."""
    path = tables.shard_path(work, "rejections", f"extract-{modality}")
    if not path.is_file():
        return {}
    return {r["clip_id"]: r for r in tables.read_file(path, tables.REJECTIONS).to_pylist() if r["clip_id"]}
