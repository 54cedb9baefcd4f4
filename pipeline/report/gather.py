"""What the build report shows, gathered from what the stages wrote; nothing is computed here.

:func:`read_work` reads the work directory's tables (``clips``, ``rejections``, ``screening``
with its ``details``, ``scores``, ``score_scale``), the feature shards' provenance columns, the
last build's ``flow_state/build_report.json``, a release's ``manifest.json`` and the pictures the
stages left under ``<work>/report/``: screening's contact-sheet thumbnails and each modality's
preview (scenic's background images), written by the extraction pass that computed the features.
No clip is decoded and no feature is computed: a picture that was not written is not shown.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.core import tables
from pipeline.modalities import registry as modalities

log = logging.getLogger(__name__)


@dataclass
class WorkTables:
    """Everything the report shows, read once."""

    clips: dict[str, dict] = field(default_factory=dict)  # clip_id -> clips row
    screening: list[dict] = field(default_factory=list)  # rows, details parsed
    rejections: list[dict] = field(default_factory=list)  # every stage
    scores: dict[str, dict] = field(default_factory=dict)  # clip_id -> scores row
    scale: list[dict] = field(default_factory=list)
    features: dict[str, dict[str, dict]] = field(default_factory=dict)  # modality -> clip_id -> provenance
    # clip_id -> (modality, path relative to <work>/report/, caption) of each preview extraction saved
    previews: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    build: dict = field(default_factory=dict)  # flow_state/build_report.json
    # the report of the last run of each flow (build, reextract), read from flow_state/, and which
    # of them ran last: the extraction section shows that one, so a re-extraction is reported too
    runs: dict[str, dict] = field(default_factory=dict)
    last_run: str | None = None
    release: dict | None = None  # manifest.json of the release
    release_path: str | None = None

    @property
    def latest(self) -> dict:
        """The report of the flow run that finished last (empty when no flow ran)."""
        return self.runs.get(self.last_run, {}) if self.last_run else {}


def _feature_provenance(work: Path, modality: str) -> dict[str, dict]:
    """clip_id -> (extractor, untrained, device, precision) of each feature shard, without the arrays."""
    out = {}
    for path in tables.table_files(work, f"features/{modality}"):
        try:
            meta = pq.read_schema(path).metadata or {}
            if meta.get(b"vdv.table", b"").decode() != tables.feature_table(modality):
                log.warning("report: %s is not a %s feature shard; ignored", path, modality)
                continue
            rows = pq.read_table(path, columns=["clip_id", "extractor", "untrained", "device", "precision"])
        except (OSError, ValueError, KeyError) as err:
            log.warning("report: cannot read %s: %s", path, err)
            continue
        for row in rows.to_pylist():
            out[row["clip_id"]] = row
    return out


def _previews(work: Path, clip_ids) -> dict[str, list[tuple[str, str, str]]]:
    """The pictures extraction saved of each clip: for each modality with a preview, the middle
    one of the clip's PNGs (``<clip_id[:16]>.<ms>ms.png``). Each folder is listed once."""
    report = tables.report_dir(work)
    found: dict[str, list[tuple[str, str, str]]] = {}
    for record in modalities.registered():
        if record.preview is None:
            continue
        saved_by_clip = tables.preview_files(work, record.preview.folder)
        for clip_id in clip_ids:
            saved = saved_by_clip.get(clip_id[:16])
            if saved:
                path = saved[len(saved) // 2].relative_to(report).as_posix()
                found.setdefault(clip_id, []).append((record.name, path, record.preview.caption))
    return found


def _read_release(data: WorkTables, release_dir: str | os.PathLike) -> None:
    manifest = Path(release_dir) / "manifest.json"
    if not manifest.is_file():
        # a release output directory holding one <name>-<version>/
        found = sorted(Path(release_dir).glob("*/manifest.json"))
        manifest = found[-1] if found else manifest
    try:
        data.release = json.loads(manifest.read_text()) if manifest.is_file() else None
        data.release_path = str(manifest.parent)
    except (OSError, ValueError) as err:
        log.warning("report: %s is unreadable (%s); the release is not shown", manifest, err)
        data.release = None
    if data.release is None and not manifest.is_file():
        log.warning("report: no release manifest under %s", release_dir)


FLOW_RUNS = ("build", "reextract")  # the flows whose reports (flow_state/<kind>_report.json) the page shows


def _flow_runs(work: Path) -> tuple[dict[str, dict], str | None]:
    """The last report of each flow in :data:`FLOW_RUNS` and the kind that finished last.

    A report says when it finished (``finished``, written by the flows); an older one without
    it is dated by its file.
    """
    runs, ends = {}, {}
    for kind in FLOW_RUNS:
        state = work / "flow_state" / f"{kind}_report.json"
        if not state.is_file():
            continue
        try:
            runs[kind] = json.loads(state.read_text())
        except ValueError as err:
            log.warning("report: %s is unreadable (%s); extraction totals come from the tables", state, err)
            continue
        ends[kind] = runs[kind].get("finished") or datetime.fromtimestamp(state.stat().st_mtime, UTC).isoformat()
    return runs, max(ends, key=ends.get) if ends else None


def read_work(work: str | os.PathLike, release_dir: str | os.PathLike | None = None) -> WorkTables:
    """Everything the report shows of ``work`` (and of the release ``release_dir``, else the one
    the last build recorded)."""
    work = Path(work)
    data = WorkTables()
    data.clips = {r["clip_id"]: r for r in tables.read_table(work, tables.CLIPS).to_pylist()}
    for row in tables.read_table(work, tables.SCREENING).to_pylist():
        try:
            row["details"] = json.loads(row["details"] or "{}")
        except ValueError:
            row["details"] = {"unreadable": row["details"]}
        data.screening.append(row)
    data.rejections = tables.read_table(work, tables.REJECTIONS).to_pylist()
    data.scores = {r["clip_id"]: r for r in tables.read_table(work, tables.SCORES).to_pylist()}
    data.scale = tables.read_table(work, tables.SCORE_SCALE).to_pylist()
    data.features = {m: _feature_provenance(work, m) for m in modalities.names()}
    data.previews = _previews(work, [r["clip_id"] for r in data.screening if r["kept"]])
    data.runs, data.last_run = _flow_runs(work)
    data.build = data.runs.get("build", {})
    if release_dir is None:
        release_dir = (data.build.get("release") or {}).get("path")
    if release_dir is not None:
        _read_release(data, release_dir)
    return data
