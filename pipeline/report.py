"""The build report: ``<work>/report/index.html``, a static site people look at to check decisions.

It reads the work directory's tables and writes plain HTML and image files beside it (no
network, no script needed, opens from disk):

- ``index.html``: totals, screening by reason, ingest rejections with their reasons, the
  per-challenge histograms of raw and normalised virality scores, extraction totals per modality
  and the slowest clips of the flow run that finished last (a build or a re-extraction: both
  flows write the page, and it says which run it shows), the release (split counts per track,
  untrained features), then the first page of clip cards;
- ``all-NNN.html``, ``kept-NNN.html``, ``rejected-NNN.html`` and ``reason-<code>-NNN.html``:
  the clip cards, ``page_size`` to a page, so 4,292 clips stay quick to open and can be filtered
  by decision or reason;
- ``thumbs/``: the contact-sheet thumbnails that screening wrote while it decoded the clip
  (``pipeline.visual.screen_visual(..., thumbnails=<work>/report/thumbs)``), the detected
  skeletons drawn on them; the report never decodes a clip for them;
- ``img/``: the score histograms and, for kept clips, one scenic background image
  (``<work>/report/backgrounds/<clip_id[:16]>.*.png`` when the scenic extractor saved them there,
  else computed here from the clip's first ViBe window and kept for the next run).

A clip card shows the decision (automatic, override), every rule's measured value next to its
threshold (followers, duration, people per frame, joint visibility, camera speed, cut distance),
the scores, and for a rejected clip the override line to paste into the reviewer file. Measured
values carry ``data-rule``/``data-key`` attributes so that a test can compare them with the
``screening`` table. Every file is written atomically (``tables.atomic_write``).
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline import tables

log = logging.getLogger(__name__)

REPORT_DIR = "report"
THUMBS_DIR = "thumbs"  # <work>/report/thumbs: written by screening
BACKGROUNDS_DIR = "backgrounds"  # <work>/report/backgrounds: scenic PNGs, saved or computed here
IMG_DIR = "img"
PAGE_SIZE = 50
SLOWEST = 10
MODALITIES = tables.MODALITIES
ROW_LIMIT = 1000  # rows of a table shown inline; the rest are counted


def thumbnails_dir(work: str | os.PathLike) -> Path:
    """Where screening writes contact-sheet thumbnails: ``screen_visual(..., thumbnails=thumbnails_dir(work))``."""
    return Path(work) / REPORT_DIR / THUMBS_DIR


def backgrounds_dir(work: str | os.PathLike) -> Path:
    """Where the report looks for saved scenic backgrounds (``<clip_id[:16]>.<ms>ms.png``)."""
    return Path(work) / REPORT_DIR / BACKGROUNDS_DIR


# -- reading the work directory -------------------------------------------------------------------


@dataclass
class WorkTables:
    """Everything the report shows, read once."""

    clips: dict[str, dict] = field(default_factory=dict)  # clip_id -> clips row
    screening: list[dict] = field(default_factory=list)  # rows, details parsed
    rejections: list[dict] = field(default_factory=list)  # every stage
    scores: dict[str, dict] = field(default_factory=dict)  # clip_id -> scores row
    scale: list[dict] = field(default_factory=list)
    features: dict[str, dict[str, dict]] = field(default_factory=dict)  # modality -> clip_id -> provenance
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
            if meta.get(b"vdv.table", b"").decode() != tables.feature_spec(modality).name:
                log.warning("report: %s is not a %s feature shard; ignored", path, modality)
                continue
            rows = pq.read_table(path, columns=["clip_id", "extractor", "untrained", "device", "precision"])
        except (OSError, ValueError, KeyError) as err:
            log.warning("report: cannot read %s: %s", path, err)
            continue
        for row in rows.to_pylist():
            out[row["clip_id"]] = row
    return out


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
    data.features = {m: _feature_provenance(work, m) for m in MODALITIES}
    data.runs, data.last_run = _flow_runs(work)
    data.build = data.runs.get("build", {})
    if release_dir is None:
        release_dir = (data.build.get("release") or {}).get("path")
    if release_dir is not None:
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
    return data


# -- small HTML helpers -----------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#222;background:#fafafa}
h1{margin:.6em 0 .2em}h2{margin:1.4em 0 .4em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.3em 0;background:#fff}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#eee}
nav a{margin-right:.8em}nav{margin:.6em 0}
.cards{display:flex;flex-direction:column;gap:10px}
.card{background:#fff;border:1px solid #ccc;border-left:6px solid #999;padding:8px 10px}
.card.kept{border-left-color:#2a2}.card.rejected{border-left-color:#c33}
.card h3{margin:0 0 4px;font-size:15px}
.badge{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-size:12px}
.badge.kept{background:#2a2}.badge.rejected{background:#c33}
.sheet{display:flex;flex-wrap:wrap;gap:4px;margin:4px 0}
.sheet figure{margin:0;font-size:11px;color:#555;text-align:center}
.sheet img{height:144px;display:block;background:#000}
details summary{cursor:pointer;color:#236}
.rules td.fail{color:#c33;font-weight:600}.rules td.pass{color:#2a2}
code.override{background:#ffe;border:1px solid #dd8;padding:1px 4px;user-select:all}
.note{color:#666}.warn{color:#a50;font-weight:600}
.hist img{max-width:100%;height:auto}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def _write_text(path: Path, text: str) -> None:
    tables.atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# -- the rules on a card ----------------------------------------------------------------------------


def rule_rows(rule: str, d: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """(measured key, measured value, threshold text) rows of one rule's details.

    Keys are the names in the ``screening`` table's ``details`` JSON, so a card can be checked
    against it value by value.
    """
    th = d.get("thresholds") or {}
    if rule == "followers":
        return [("followers", d.get("followers"), f"at most {_fmt(d.get('max_followers'))}")]
    if rule == "duration":
        upper = f" and at most {_fmt(d.get('max_s'))} s" if d.get("max_s") else ""
        return [("duration_s", d.get("duration_s"), f"at least {_fmt(d.get('min_s'))} s{upper}")]
    if rule == "one_dancer":
        return [
            (
                "person_share",
                d.get("person_share"),
                f"share of frames with a person >= {_fmt(th.get('min_person_share'))}",
            ),
            (
                "multi_person_share",
                d.get("multi_person_share"),
                f"share of frames with 2+ people < {_fmt(th.get('multi_person_share'))}",
            ),
            ("people_per_frame", d.get("people_per_frame"), "people counted per sampled frame"),
            ("max_people", d.get("max_people"), "most people on one frame"),
        ]
    if rule == "upper_body_visible":
        conf = d.get("median_confidence") or {}
        return [
            (
                "visible_share",
                d.get("visible_share"),
                f"share of frames with every upper-body joint at confidence >= {_fmt(th.get('joint_confidence'))} "
                f"and in frame >= {_fmt(th.get('min_upper_body_share'))}",
            ),
            ("median_confidence", conf, _joint_threshold(conf, th.get("joint_confidence"))),
        ]
    if rule == "camera_motion":
        return [
            (
                "moving_share",
                d.get("moving_share"),
                f"share of frame pairs faster than {_fmt(th.get('max_camera_speed'))} diagonals/s "
                f"<= {_fmt(th.get('max_moving_share'))}",
            ),
            (
                "median_speed",
                d.get("median_speed"),
                f"camera speed (diagonals/s); limit {_fmt(th.get('max_camera_speed'))}",
            ),
            ("max_speed", d.get("max_speed"), "fastest measured pair"),
            (
                "composed_shift",
                d.get("composed_shift"),
                "the view's furthest shift from the first frame, share of the width or height "
                f"<= {_fmt(th.get('max_composed_shift'))}",
            ),
            (
                "composed_scale_change",
                d.get("composed_scale_change"),
                f"zoom from the first frame <= {_fmt(th.get('max_composed_scale'))}",
            ),
            (
                "composed_rotation_deg",
                d.get("composed_rotation_deg"),
                f"roll from the first frame (degrees) <= {_fmt(th.get('max_composed_rotation_deg'))}",
            ),
            ("max_hist_distance", d.get("max_hist_distance"), f"a cut is a distance > {_fmt(th.get('cut_distance'))}"),
            ("cuts_at_s", d.get("cuts_at_s"), f"at most {_fmt(th.get('max_cuts'))} cut(s)"),
        ]
    return [(k, v, "") for k, v in d.items() if k not in ("passed", "thresholds", "contact_sheet")]


def _joint_threshold(conf: Mapping[str, float], threshold: float | None) -> str:
    text = f"median per joint over the frames with a person; each must reach {_fmt(threshold)}"
    if threshold is not None:
        low = [j for j, c in conf.items() if c < threshold]
        if low:
            text += "; below: " + ", ".join(low)
    return text


def _value_attr(value: Any) -> str:
    return _e(json.dumps(value, sort_keys=True))


def _rules_html(row: Mapping[str, Any]) -> str:
    details = row["details"]
    lines = []
    for rule in row["rules_evaluated"]:
        d = details.get(rule, {})
        passed = d.get("passed")
        verdict = "pass" if passed else "fail"
        entries = rule_rows(rule, d)
        for i, (key, value, threshold) in enumerate(entries):
            rule_cell = f'<td rowspan="{len(entries)}" class="{verdict}">{_e(rule)}: {verdict}</td>' if i == 0 else ""
            lines.append(
                f"<tr>{rule_cell}<td>{_e(key)}</td>"
                f'<td class="measured" data-rule="{_e(rule)}" data-key="{_e(key)}" data-value="{_value_attr(value)}">'
                f"{_e(_fmt(value))}</td><td>{_e(threshold)}</td></tr>"
            )
    if not lines:
        return '<p class="note">no rule evaluated</p>'
    return (
        '<table class="rules"><thead><tr><th>rule</th><th>measured</th><th>value</th><th>threshold</th></tr>'
        f"</thead><tbody>{''.join(lines)}</tbody></table>"
    )


# -- images -----------------------------------------------------------------------------------------


@dataclass
class _Budget:
    """Seconds left for computing backgrounds in this run (each takes a few seconds of decoding)."""

    seconds: float
    skipped: int = 0

    def __post_init__(self):
        self.deadline = time.monotonic() + max(0.0, self.seconds)

    def left(self) -> bool:
        return time.monotonic() < self.deadline


def _background_for(
    work: Path, report: Path, clip: Mapping[str, Any] | None, clip_id: str, budget: _Budget
) -> str | None:
    """Relative path (from the report) of one scenic background image of a kept clip, or None.

    A saved one (``backgrounds/<clip_id[:16]>.*.png``) is used as it is; otherwise one is computed
    from the clip's first whole ViBe window while ``budget`` lasts, and kept for later runs.
    """
    directory = report / BACKGROUNDS_DIR
    saved = sorted(directory.glob(f"{clip_id[:16]}.*.png")) if directory.is_dir() else []
    if saved:
        return saved[len(saved) // 2].relative_to(report).as_posix()
    if clip is None or not clip.get("path") or not Path(clip["path"]).exists():
        return None
    if not budget.left():
        budget.skipped += 1
        return None
    import cv2

    from pipeline.errors import ClipError
    from pipeline.scenic import ScenicConfig, backgrounds

    config = ScenicConfig()
    full = config.window // config.hop - 1  # the first background made from a whole window
    chosen = None
    try:
        for i, item in enumerate(backgrounds(clip["path"], config, clip_id)):
            chosen = item
            if i >= full:
                break
    except (ClipError, OSError, ValueError) as err:
        log.warning("report: no background for %s: %s", clip_id[:12], err)
        return None
    if chosen is None:
        return None
    t, window = chosen
    image = window.image  # a scenic WindowImage: the background and its inpainted share
    target = directory / f"{clip_id[:16]}.{int(round(t * 1000)):07d}ms.png"
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        return None
    tables.atomic_write(target, lambda tmp: tmp.write_bytes(data.tobytes()))
    return target.relative_to(report).as_posix()


def _histograms(data: WorkTables, report: Path) -> list[tuple[str, str]]:
    """One PNG per challenge (raw and normalised score of the kept clips); (challenge, path)."""
    by_challenge: dict[str, list[dict]] = {}
    for row in data.scores.values():
        by_challenge.setdefault(row["challenge"], []).append(row)
    if not by_challenge:
        return []
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out = []
    for i, (challenge, rows) in enumerate(sorted(by_challenge.items())):
        fig = Figure(figsize=(7.0, 2.4), dpi=100)
        raw_ax, norm_ax = fig.subplots(1, 2)
        raw = [r["raw_score"] for r in rows]
        norm = [r["score"] for r in rows]
        bins = max(5, min(30, int(math.sqrt(len(rows))) * 2))
        raw_ax.hist(raw, bins=bins, color="#4a7bd0", edgecolor="white")
        raw_ax.set_title(f"{challenge}: raw score (n={len(rows)})", fontsize=9)
        raw_ax.set_xlabel("ln((L + C + R + 1) / clip(T, 1, 7 days))", fontsize=8)
        norm_ax.hist(norm, bins=bins, range=(0.0, 1.0), color="#d07a4a", edgecolor="white")
        norm_ax.set_title(f"{challenge}: normalised score", fontsize=9)
        norm_ax.set_xlabel("score in [0, 1]", fontsize=8)
        for ax in (raw_ax, norm_ax):
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("clips", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        slug = re.sub(r"[^A-Za-z0-9_-]+", "", challenge) or f"challenge{i}"
        target = report / IMG_DIR / f"scores-{i:03d}-{slug}.png"
        tables.atomic_write(target, lambda tmp, fig=fig: fig.savefig(tmp, format="png"))
        out.append((challenge, target.relative_to(report).as_posix()))
    return out


# -- the sections ------------------------------------------------------------------------------------


def _summary_html(data: WorkTables) -> str:
    kept = sum(r["kept"] for r in data.screening)
    ingest = [r for r in data.rejections if r["stage"] == "ingest"]
    parts = [
        f"<p>{len(data.clips)} clip(s) ingested, {len(ingest)} record(s) or file(s) rejected at ingest; "
        f"{len(data.screening)} screened: <b>{kept} kept</b>, {len(data.screening) - kept} rejected; "
        f"{len(data.scores)} scored.</p>"
    ]
    notes = (data.build.get("screen") or {}).get("notes") or []
    parts += [f'<p class="warn">{_e(n)}</p>' for n in notes]
    return "".join(parts)


def _screening_reasons_html(data: WorkTables) -> str:
    counts = Counter(reason for r in data.screening if not r["kept"] for reason in r["reasons"] or ["override_reject"])
    if not counts:
        return '<p class="note">no clip was rejected by screening</p>'
    rows = [
        (reason, n, f'<a href="{_page_name(f"reason-{_slug(reason)}", 1)}">cards</a>')
        for reason, n in counts.most_common()
    ]
    body = "".join(f"<tr><td>{_e(r)}</td><td>{n}</td><td>{link}</td></tr>" for r, n, link in rows)
    return (
        "<p>A clip rejected for several reasons counts under each.</p>"
        f"<table><thead><tr><th>reason</th><th>clips</th><th></th></tr></thead><tbody>{body}</tbody></table>"
    )


def _ingest_html(data: WorkTables) -> str:
    rows = [r for r in data.rejections if r["stage"] == "ingest"]
    if not rows:
        return '<p class="note">no ingest rejection</p>'
    counts = Counter(r["reason"] for r in rows)
    out = _table(("reason", "count"), counts.most_common())
    shown = rows[:ROW_LIMIT]
    out += f"<details><summary>the {len(rows)} rejected record(s) and file(s)</summary>"
    out += _table(
        ("reason", "video id", "file", "message"),
        ((r["reason"], r["video_id"], Path(r["path"]).name if r["path"] else None, r["message"]) for r in shown),
        cls="ingest",
    )
    if len(rows) > len(shown):
        out += f'<p class="note">{len(rows) - len(shown)} more not shown (see the rejections table)</p>'
    return out + "</details>"


def _scores_html(data: WorkTables, hists: list[tuple[str, str]]) -> str:
    if not hists:
        return '<p class="note">no clip was scored</p>'
    scale = _table(
        ("challenge", "clips", "raw min", "raw max"),
        (
            (s["challenge"], s["n_clips"], s["raw_min"], s["raw_max"])
            for s in sorted(data.scale, key=lambda s: s["challenge"])
        ),
    )
    imgs = "".join(
        f'<figure class="hist"><img src="{_e(p)}" alt="score histograms of {_e(c)}" data-challenge="{_e(c)}"></figure>'
        for c, p in hists
    )
    return scale + imgs


def _extraction_html(data: WorkTables) -> str:
    run = data.latest
    items = run.get("items") or []
    summaries = run.get("extract") or {}
    failed_rows = Counter(r["stage"].split(":", 1)[-1] for r in data.rejections if r["stage"].startswith("extract"))
    rows = []
    for modality in MODALITIES:
        mine = [i for i in items if i.get("modality") == modality]
        if mine:
            status = Counter(i.get("status") for i in mine)
            computed, skipped, failed = status.get("computed", 0), status.get("skipped", 0), status.get("rejected", 0)
            seconds = round(sum(float(i.get("seconds") or 0) for i in mine), 1)
        elif modality in summaries:
            s = summaries[modality]
            computed, skipped, failed, seconds = s.get("computed"), s.get("skipped"), s.get("failed"), s.get("seconds")
        else:
            computed = skipped = seconds = None
            failed = failed_rows.get(modality)
        shards = len(data.features.get(modality, {}))
        untrained = sum(bool(p.get("untrained")) for p in data.features.get(modality, {}).values())
        rows.append((modality, computed, skipped, failed, seconds, shards, untrained))
    out = _runs_html(data)
    out += _table(("modality", "computed", "skipped", "failed", "seconds", "shards on disk", "untrained shards"), rows)
    if not run:
        out += '<p class="note">no flow_state/build_report.json: counts of this run are unknown</p>'
    timed = sorted((i for i in items if i.get("seconds") is not None), key=lambda i: -float(i["seconds"]))[:SLOWEST]
    if timed:
        out += "<h3>Slowest items</h3>" + _table(
            ("clip", "video id", "modality", "status", "worker", "seconds"),
            (
                (
                    i["clip_id"][:12],
                    (data.clips.get(i["clip_id"]) or {}).get("video_id"),
                    i.get("modality"),
                    i.get("status"),
                    i.get("worker"),
                    i.get("seconds"),
                )
                for i in timed
            ),
            cls="slowest",
        )
    elif run:
        out += f'<p class="note">the {_e(data.last_run)} report has no per-clip timings (items)</p>'
    return out


def _runs_html(data: WorkTables) -> str:
    """Which flow run the counts below come from, and when each flow last finished."""
    if not data.runs:
        return ""
    ends = "; ".join(
        f"last {_e(kind)}: {_e(run.get('finished') or 'time not recorded')}"
        + (f" ({_e(run['failed'])})" if run.get("failed") else "")
        for kind, run in data.runs.items()
    )
    return f'<p class="runs">counts of the last run, <b>{_e(data.last_run)}</b>. {ends}</p>'


def _release_html(data: WorkTables) -> str:
    if data.release is None:
        return '<p class="note">no release given or recorded</p>'
    m = data.release
    out = f"<p>{_e(m.get('name'))} {_e(m.get('version'))} at <code>{_e(data.release_path)}</code></p>"
    if m.get("untrained"):
        out += f'<p class="warn">UNTRAINED features: {_e(", ".join(m.get("untrained_modalities") or []))}</p>'
    else:
        out += "<p>every feature comes from trained weights</p>"
    out += _table(
        ("config", "train", "test"),
        (
            (name, (c.get("num_rows") or {}).get("train", 0), (c.get("num_rows") or {}).get("test", 0))
            for name, c in (m.get("configs") or {}).items()
        ),
        cls="release-configs",
    )
    out += _table(
        ("track", "challenge", "train", "test"),
        ((t, i.get("challenge") or "all", i.get("train"), i.get("test")) for t, i in (m.get("tracks") or {}).items()),
        cls="release-tracks",
    )
    out += "".join(f'<p class="note">{_e(n)}</p>' for n in m.get("notes") or [])
    return out


# -- the cards --------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text)


def _page_name(kind: str, page: int) -> str:
    return f"{kind}-{page:03d}.html"


def _card_html(row: Mapping[str, Any], data: WorkTables, report: Path, work: Path, *, budget: _Budget) -> str:
    clip_id = row["clip_id"]
    clip = data.clips.get(clip_id) or {}
    kept = row["kept"]
    decision = "kept" if kept else "rejected"
    name = Path(clip.get("path") or "").name or "?"
    title = (
        f'<h3><span class="badge {decision}">{decision.upper()}</span> {_e(row.get("video_id"))} '
        f'<span class="note">{_e(name)} &middot; {_e(clip.get("challenge"))} &middot; {_e(clip_id[:12])}</span></h3>'
    )
    decision_line = f"automatic decision: {'keep' if row['automatic_kept'] else 'reject'}"
    if row.get("override"):
        decision_line += f"; reviewer override: {row['override']}" + (
            f" ({row['override_note']})" if row.get("override_note") else ""
        )
    if row["reasons"]:
        decision_line += "; reasons: " + ", ".join(row["reasons"])
    parts = [title, f'<p class="decision">{_e(decision_line)}</p>']

    sheet = (row["details"].get("one_dancer") or {}).get("contact_sheet") or {}
    listed = sheet.get("frames") or []
    frames = [f for f in listed if (report / THUMBS_DIR / f["file"]).is_file()]
    figures = []
    for f in frames:
        src = f"{THUMBS_DIR}/{f['file']}"
        people = f.get("people", 0)
        counted = f.get("counted", people)
        found = f"{counted} counted" + (f" ({people} found)" if people != counted else "")
        figures.append(
            f'<figure><img class="thumb" src="{_e(src)}" loading="lazy" alt="frame at {f["t"]:.1f} s" '
            f'data-joints="{_value_attr(f.get("joints"))}" data-min-conf="{_e(sheet.get("min_conf"))}">'
            f"<figcaption>{f['t']:.1f} s, {found}</figcaption></figure>"
        )
    if kept:
        bg = _background_for(work, report, clip, clip_id, budget)
        if bg is not None:
            stamp = re.search(r"\.(\d+)ms\.png$", bg)
            when = f" at {int(stamp.group(1)) / 1000:.1f} s" if stamp else ""
            figures.append(
                f'<figure><img class="background" src="{_e(bg)}" loading="lazy" alt="scenic background">'
                f"<figcaption>scenic background (ViBe){when}</figcaption></figure>"
            )
    if len(frames) < len(listed):
        parts.append(
            f'<p class="warn">{len(listed) - len(frames)} thumbnail(s) recorded by screening are missing '
            f"from {THUMBS_DIR}/ (screen the clip again to redraw them)</p>"
        )
    if figures:
        parts.append(f'<div class="sheet">{"".join(figures)}</div>')
    elif "one_dancer" not in row["rules_evaluated"]:
        parts.append('<p class="note">not decoded: the pixel rules ran only for clips that passed the cheap rules</p>')
    else:
        parts.append('<p class="note">no thumbnails: screening ran without a thumbnails directory</p>')

    parts.append(_rules_html(row))
    score = data.scores.get(clip_id)
    if score is not None:
        parts.append(
            f'<p>raw score <span class="score" data-key="raw_score">{score["raw_score"]:.4f}</span>, '
            f'normalised <span class="score" data-key="score">{score["score"]:.4f}</span>'
            + (" (outside the stored scale)" if score["out_of_scale"] else "")
            + "</p>"
        )
    if not kept:
        key = row.get("video_id") or clip_id
        parts.append(
            f'<p>to keep it, add to the reviewer file: <code class="override">{_e(key)},keep,reviewed</code></p>'
        )
    return f'<section class="card {decision}" id="clip-{_e(clip_id)}" data-clip-id="{_e(clip_id)}">{"".join(parts)}</section>'


def _nav(views: Sequence[tuple[str, str, int]]) -> str:
    links = ['<a href="index.html">overview</a>']
    links += [f'<a href="{_page_name(kind, 1)}">{_e(label)} ({n})</a>' for kind, label, n in views]
    return f"<nav>{''.join(links)}</nav>"


def _pager(kind: str, page: int, pages: int) -> str:
    if pages <= 1:
        return ""
    links = []
    for p in range(1, pages + 1):
        links.append(f"<b>{p}</b>" if p == page else f'<a href="{_page_name(kind, p)}">{p}</a>')
    return f'<nav class="pager">page {" ".join(links)}</nav>'


# -- entry point ------------------------------------------------------------------------------------


def write_report(
    work: str | os.PathLike,
    release_dir: str | os.PathLike | None = None,
    *,
    page_size: int = PAGE_SIZE,
    backgrounds_budget_s: float = 300.0,
) -> Path:
    """Write ``<work>/report/`` from the work directory's tables; return the path of ``index.html``.

    ``release_dir`` is a release (``<out>/<name>-<version>``, or the ``--release-out`` directory
    holding one); None uses the one recorded in ``flow_state/build_report.json``, if any.
    A kept clip without a saved scenic background gets one computed (a few seconds of decoding
    each) until ``backgrounds_budget_s`` is spent (0: none); computed ones are kept, so the next
    run goes on where this one stopped, and the page says how many are still missing.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    work = Path(work)
    if not work.is_dir():
        raise FileNotFoundError(f"work directory {work} does not exist")
    report = work / REPORT_DIR
    data = read_work(work, release_dir)
    rows = sorted(
        data.screening,
        key=lambda r: (not r["kept"], Path((data.clips.get(r["clip_id"]) or {}).get("path") or "").name, r["clip_id"]),
    )
    budget = _Budget(backgrounds_budget_s)
    cards = {r["clip_id"]: _card_html(r, data, report, work, budget=budget) for r in rows}

    nav, written, first_page = _write_pages(report, rows, cards, page_size)
    hists = _histograms(data, report)
    sections = [
        ("Summary", _summary_html(data)),
        ("Screening by reason", _screening_reasons_html(data)),
        ("Ingest rejections", _ingest_html(data)),
        ("Virality scores per challenge", _scores_html(data, hists)),
        ("Feature extraction", _extraction_html(data)),
        ("Release", _release_html(data)),
    ]
    body = f'<h1>vdv build report</h1><p class="note">work directory <code>{_e(work.resolve())}</code></p>{nav}'
    if budget.skipped:
        body += (
            f'<p class="note">{budget.skipped} kept clip(s) have no scenic background yet: the time budget of '
            "this run was spent; `vdv report` computes more</p>"
        )
    body += "".join(f"<h2>{_e(title)}</h2>{content}" for title, content in sections)
    body += first_page
    index = report / "index.html"
    _write_text(index, _page("vdv build report", body))
    # pages of an earlier report whose view no longer exists (a reason that no longer occurs)
    for stale in report.glob("*-[0-9][0-9][0-9].html"):
        if stale.name not in written:
            stale.unlink(missing_ok=True)
    log.info("report: %s (%d clip card(s))", index, len(cards))
    return index


def _write_pages(report: Path, rows: list[dict], cards: Mapping[str, str], page_size: int) -> tuple[str, set[str], str]:
    """The paged views (all, kept, rejected, one per reason): their navigation bar, the page names
    written, and the first page of "all" (shown on the index)."""
    reasons = Counter(reason for r in rows if not r["kept"] for reason in r["reasons"])
    views: list[tuple[str, str, list[dict]]] = [
        ("all", "all clips", rows),
        ("kept", "kept", [r for r in rows if r["kept"]]),
        ("rejected", "rejected", [r for r in rows if not r["kept"]]),
    ]
    views += [
        (f"reason-{_slug(reason)}", f"rejected: {reason}", [r for r in rows if reason in r["reasons"]])
        for reason, _ in reasons.most_common()
    ]
    nav = _nav([(kind, label, len(members)) for kind, label, members in views])
    written = set()
    first_page = ""
    for kind, label, members in views:
        pages = max(1, math.ceil(len(members) / page_size))
        for page in range(1, pages + 1):
            chunk = members[(page - 1) * page_size : page * page_size]
            body = "".join(cards[r["clip_id"]] for r in chunk) or '<p class="note">no clip</p>'
            pager = _pager(kind, page, pages)
            block = f'<h2>{_e(label)}: {len(members)} clip(s)</h2>{pager}<div class="cards">{body}</div>{pager}'
            name = _page_name(kind, page)
            _write_text(
                report / name, _page(f"vdv report: {label}, page {page}", f"<h1>vdv build report</h1>{nav}{block}")
            )
            written.add(name)
            if kind == "all" and page == 1:
                first_page = block
    return nav, written, first_page


__all__ = ["backgrounds_dir", "read_work", "rule_rows", "thumbnails_dir", "write_report"]
