"""The build report: ``<work>/report/index.html``, a static site people look at to check decisions.

It reads what screening and extraction wrote (:mod:`~pipeline.report.gather`) and renders plain
HTML and image files beside it (:mod:`~pipeline.report.render`; no network, no script needed,
opens from disk). It computes no feature and decodes no clip:

- ``index.html``: totals, screening by reason, ingest rejections with their reasons, the
  per-challenge histograms of raw and normalised virality scores, extraction totals per modality
  and the slowest clips, the release (split counts per track, untrained features), then the
  first page of clip cards;
- ``all-NNN.html``, ``kept-NNN.html``, ``rejected-NNN.html`` and ``reason-<code>-NNN.html``:
  the clip cards, ``page_size`` to a page, so 4,292 clips stay quick to open and can be filtered
  by decision or reason;
- ``thumbs/``: the contact-sheet thumbnails that screening wrote while it decoded the clip
  (``pipeline.screening.visual.screen_visual(..., thumbnails=tables.thumbnails_dir(work))``), the detected
  skeletons drawn on them;
- each modality's pictures, where its record has a preview (scenic: ``backgrounds/``, one
  background image of each clip, written by the extraction pass that computed its features);
- ``img/``: the score histograms, drawn here.

The folders are named with the work directory's layout (:mod:`pipeline.core.tables`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.core import tables
from pipeline.report.gather import WorkTables, read_work
from pipeline.report.render import (
    PAGE_SIZE,
    card_html,
    escape,
    extraction_html,
    histograms,
    html_page,
    ingest_html,
    release_html,
    rule_rows,
    scores_html,
    screening_reasons_html,
    summary_html,
    write_pages,
    write_text,
)

log = logging.getLogger(__name__)


def write_report(
    work: str | os.PathLike, release_dir: str | os.PathLike | None = None, *, page_size: int = PAGE_SIZE
) -> Path:
    """Write ``<work>/report/`` from the work directory's tables; return the path of ``index.html``.

    ``release_dir`` is a release (``<out>/<name>-<version>``, or the ``--release-out`` directory
    holding one); None uses the one recorded in ``flow_state/build_report.json``, if any.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    work = Path(work)
    if not work.is_dir():
        raise FileNotFoundError(f"work directory {work} does not exist")
    report = tables.report_dir(work)
    data = read_work(work, release_dir)
    rows = sorted(
        data.screening,
        key=lambda r: (not r["kept"], Path((data.clips.get(r["clip_id"]) or {}).get("path") or "").name, r["clip_id"]),
    )
    cards = {r["clip_id"]: card_html(r, data, report) for r in rows}
    nav, written, first_page = write_pages(report, rows, cards, page_size)
    sections = [
        ("Summary", summary_html(data)),
        ("Screening by reason", screening_reasons_html(data)),
        ("Ingest rejections", ingest_html(data)),
        ("Virality scores per challenge", scores_html(data, histograms(data, report))),
        ("Feature extraction", extraction_html(data)),
        ("Release", release_html(data)),
    ]
    body = f'<h1>vdv build report</h1><p class="note">work directory <code>{escape(work.resolve())}</code></p>{nav}'
    body += "".join(f"<h2>{escape(title)}</h2>{content}" for title, content in sections)
    body += first_page
    index = report / "index.html"
    write_text(index, html_page("vdv build report", body))
    # pages of an earlier report whose view no longer exists (a reason that no longer occurs)
    for stale in report.glob("*-[0-9][0-9][0-9].html"):
        if stale.name not in written:
            stale.unlink(missing_ok=True)
    log.info("report: %s (%d clip card(s))", index, len(cards))
    return index


__all__ = ["WorkTables", "read_work", "rule_rows", "write_report"]
