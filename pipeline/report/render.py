"""The build report's HTML: pages of clip cards and the overview sections, from what
:mod:`pipeline.report.gather` read. Plain HTML and image files beside it (no network, no script
needed, opens from disk); every file is written atomically (``tables.atomic_write``). The
extraction section shows the flow run that finished last, a build or a re-extraction (both
flows write the page), and says which.

A clip card shows the decision (automatic, override), every rule's measured value next to its
threshold (followers, duration, people per frame, joint visibility, camera speed, cut distance),
the contact sheet screening wrote and the pictures extraction saved (scenic's background), the
scores, and for a rejected clip the override line to paste into the reviewer file. Measured
values carry ``data-rule``/``data-key`` attributes so that a test can compare them with the
``screening`` table.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core import tables
from pipeline.modalities import registry as modalities
from pipeline.report.gather import WorkTables

THUMBS_DIR = tables.THUMBS_DIR
IMG_DIR = "img"  # <work>/report/img/: the score histograms, drawn here
PAGE_SIZE = 50
SLOWEST = 10
ROW_LIMIT = 1000  # rows of a table shown inline; the rest are counted


# -- small HTML helpers -----------------------------------------------------------------------------


def escape(value: Any) -> str:
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
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
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


def html_page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def write_text(path: Path, text: str) -> None:
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
    return escape(json.dumps(value, sort_keys=True))


def _rules_html(row: Mapping[str, Any]) -> str:
    details = row["details"]
    lines = []
    for rule in row["rules_evaluated"]:
        d = details.get(rule, {})
        passed = d.get("passed")
        verdict = "pass" if passed else "fail"
        entries = rule_rows(rule, d)
        for i, (key, value, threshold) in enumerate(entries):
            rule_cell = (
                f'<td rowspan="{len(entries)}" class="{verdict}">{escape(rule)}: {verdict}</td>' if i == 0 else ""
            )
            lines.append(
                f"<tr>{rule_cell}<td>{escape(key)}</td>"
                f'<td class="measured" data-rule="{escape(rule)}" data-key="{escape(key)}" data-value="{_value_attr(value)}">'
                f"{escape(_fmt(value))}</td><td>{escape(threshold)}</td></tr>"
            )
    if not lines:
        return '<p class="note">no rule evaluated</p>'
    return (
        '<table class="rules"><thead><tr><th>rule</th><th>measured</th><th>value</th><th>threshold</th></tr>'
        f"</thead><tbody>{''.join(lines)}</tbody></table>"
    )


# -- images ---------------------------------------------------------------------------------------


def histograms(data: WorkTables, report: Path) -> list[tuple[str, str]]:
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


def summary_html(data: WorkTables) -> str:
    kept = sum(r["kept"] for r in data.screening)
    ingest = [r for r in data.rejections if r["stage"] == "ingest"]
    parts = [
        f"<p>{len(data.clips)} clip(s) ingested, {len(ingest)} record(s) or file(s) rejected at ingest; "
        f"{len(data.screening)} screened: <b>{kept} kept</b>, {len(data.screening) - kept} rejected; "
        f"{len(data.scores)} scored.</p>"
    ]
    notes = (data.build.get("screen") or {}).get("notes") or []
    parts += [f'<p class="warn">{escape(n)}</p>' for n in notes]
    return "".join(parts)


def screening_reasons_html(data: WorkTables) -> str:
    counts = Counter(reason for r in data.screening if not r["kept"] for reason in r["reasons"] or ["override_reject"])
    if not counts:
        return '<p class="note">no clip was rejected by screening</p>'
    rows = [
        (reason, n, f'<a href="{_page_name(f"reason-{_slug(reason)}", 1)}">cards</a>')
        for reason, n in counts.most_common()
    ]
    body = "".join(f"<tr><td>{escape(r)}</td><td>{n}</td><td>{link}</td></tr>" for r, n, link in rows)
    return (
        "<p>A clip rejected for several reasons counts under each.</p>"
        f"<table><thead><tr><th>reason</th><th>clips</th><th></th></tr></thead><tbody>{body}</tbody></table>"
    )


def ingest_html(data: WorkTables) -> str:
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


def scores_html(data: WorkTables, hists: list[tuple[str, str]]) -> str:
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
        f'<figure class="hist"><img src="{escape(p)}" alt="score histograms of {escape(c)}" data-challenge="{escape(c)}"></figure>'
        for c, p in hists
    )
    return scale + imgs


def extraction_html(data: WorkTables) -> str:
    run = data.latest
    items = run.get("items") or []
    summaries = run.get("extract") or {}
    failed_rows = Counter(r["stage"].split(":", 1)[-1] for r in data.rejections if r["stage"].startswith("extract"))
    rows = []
    for modality in modalities.names():
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
    out = runs_html(data)
    out += _table(("modality", "computed", "skipped", "failed", "seconds", "shards on disk", "untrained shards"), rows)
    out += decoding_html(run)
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
        out += f'<p class="note">the {escape(data.last_run)} report has no per-clip timings (items)</p>'
    return out


def decoding_html(run: dict) -> str:
    """Decoded frames per kept clip in the run (``decoding`` of its report, pipeline.core.decode.decoded_per_clip)."""
    d = run.get("decoding") or {}
    if not d.get("clips"):
        return ""
    how = "screened and extracted in one pass" if d.get("one_pass") else "screened and extracted in separate passes"
    return (
        f'<p class="decoding">decoded frames per kept clip: <b>{d["ratio"]:.2f}x</b> its frame count '
        f"(worst clip {d['max_ratio']:.2f}x; {d['decoded_frames']} frames out of the codec for {d['frame_count']} "
        f"frames of {d['clips']} kept clip(s) decoded in this run, {d.get('not_decoded', 0)} reused; {how})</p>"
    )


def runs_html(data: WorkTables) -> str:
    """Which flow run the counts below come from, and when each flow last finished."""
    if not data.runs:
        return ""
    ends = "; ".join(
        f"last {escape(kind)}: {escape(run.get('finished') or 'time not recorded')}"
        + (f" ({escape(run['failed'])})" if run.get("failed") else "")
        for kind, run in data.runs.items()
    )
    return f'<p class="runs">counts of the last run, <b>{escape(data.last_run)}</b>. {ends}</p>'


def release_html(data: WorkTables) -> str:
    if data.release is None:
        return '<p class="note">no release given or recorded</p>'
    m = data.release
    out = f"<p>{escape(m.get('name'))} {escape(m.get('version'))} at <code>{escape(data.release_path)}</code></p>"
    if m.get("untrained"):
        out += f'<p class="warn">UNTRAINED features: {escape(", ".join(m.get("untrained_modalities") or []))}</p>'
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
    out += "".join(f'<p class="note">{escape(n)}</p>' for n in m.get("notes") or [])
    return out


# -- the cards --------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text)


def _page_name(kind: str, page: int) -> str:
    return f"{kind}-{page:03d}.html"


def card_html(row: Mapping[str, Any], data: WorkTables, report: Path) -> str:
    """One clip's card (``report``: the report directory, where the thumbnails are looked for)."""
    clip_id = row["clip_id"]
    clip = data.clips.get(clip_id) or {}
    kept = row["kept"]
    decision = "kept" if kept else "rejected"
    name = Path(clip.get("path") or "").name or "?"
    title = (
        f'<h3><span class="badge {decision}">{decision.upper()}</span> {escape(row.get("video_id"))} '
        f'<span class="note">{escape(name)} &middot; {escape(clip.get("challenge"))} &middot; {escape(clip_id[:12])}</span></h3>'
    )
    decision_line = f"automatic decision: {'keep' if row['automatic_kept'] else 'reject'}"
    if row.get("override"):
        decision_line += f"; reviewer override: {row['override']}" + (
            f" ({row['override_note']})" if row.get("override_note") else ""
        )
    if row["reasons"]:
        decision_line += "; reasons: " + ", ".join(row["reasons"])
    parts = [title, f'<p class="decision">{escape(decision_line)}</p>']

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
            f'<figure><img class="thumb" src="{escape(src)}" loading="lazy" alt="frame at {f["t"]:.1f} s" '
            f'data-joints="{_value_attr(f.get("joints"))}" data-min-conf="{escape(sheet.get("min_conf"))}">'
            f"<figcaption>{f['t']:.1f} s, {found}</figcaption></figure>"
        )
    if kept:
        figures += [_preview_html(*found) for found in data.previews.get(clip_id, [])]
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
            f'<p>to keep it, add to the reviewer file: <code class="override">{escape(key)},keep,reviewed</code></p>'
        )
    return f'<section class="card {decision}" id="clip-{escape(clip_id)}" data-clip-id="{escape(clip_id)}">{"".join(parts)}</section>'


def _preview_html(modality: str, src: str, caption: str) -> str:
    """A picture extraction saved (``<clip_id[:16]>.<ms>ms.png``), captioned with its time."""
    stamp = re.search(r"\.(\d+)ms\.png$", src)
    when = f" at {int(stamp.group(1)) / 1000:.1f} s" if stamp else ""
    folder = src.split("/", 1)[0]  # the preview folder under report/, whatever its fan-out
    return (
        f'<figure><img class="preview {escape(folder)}" src="{escape(src)}" loading="lazy" alt="{escape(caption)}" '
        f'data-modality="{escape(modality)}"><figcaption>{escape(caption)}{when}</figcaption></figure>'
    )


def _nav(views: Sequence[tuple[str, str, int]]) -> str:
    links = ['<a href="index.html">overview</a>']
    links += [f'<a href="{_page_name(kind, 1)}">{escape(label)} ({n})</a>' for kind, label, n in views]
    return f"<nav>{''.join(links)}</nav>"


def _pager(kind: str, page: int, pages: int) -> str:
    if pages <= 1:
        return ""
    links = []
    for p in range(1, pages + 1):
        links.append(f"<b>{p}</b>" if p == page else f'<a href="{_page_name(kind, p)}">{p}</a>')
    return f'<nav class="pager">page {" ".join(links)}</nav>'


# -- the pages --------------------------------------------------------------------------------------


def write_pages(report: Path, rows: list[dict], cards: Mapping[str, str], page_size: int) -> tuple[str, set[str], str]:
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
            block = f'<h2>{escape(label)}: {len(members)} clip(s)</h2>{pager}<div class="cards">{body}</div>{pager}'
            name = _page_name(kind, page)
            write_text(
                report / name, html_page(f"vdv report: {label}, page {page}", f"<h1>vdv build report</h1>{nav}{block}")
            )
            written.add(name)
            if kind == "all" and page == 1:
                first_page = block
    return nav, written, first_page
