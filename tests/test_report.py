"""The build report, on a work directory made by the real stages on real clips.

Three real clips go through ingest, the cheap rules and the real pixel rules (with thumbnails
written while screening decodes them), and scoring: ``stgcn_ta_chi`` is kept,
``sports2d_demo`` is rejected for a second person, ``controlvideo_moonwalk`` (2.5 s) for its
duration before any pixel is decoded. The report's HTML is parsed with the standard library's
parser and checked against the tables: every screened clip has a card, every image it names
exists, every measured value on a card equals the ``screening`` details, the override line
parses as a reviewer file entry, and in every thumbnail the skeleton colour sits at the stored
joints and not all over the image (a blank or uniformly painted image fails).
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import write_sample_run
from PIL import Image

from cli import main as vdv
from pipeline import report
from pipeline.core import tables
from pipeline.extraction import stage as extraction
from pipeline.ingest.stage import IngestConfig, prepare_clips, read_pairing
from pipeline.report import render
from pipeline.scoring.virality import score_clips
from pipeline.screening import stage as screen
from pipeline.screening import visual

CLIPS = {
    # records of the real metadata sample, as data/demo/pairing.csv pairs them
    "stgcn_ta_chi.mp4": ("6899121222454463749", "#dancechallenge"),
    "controlvideo_moonwalk.mp4": ("6902498301707357446", "#dancechallenge"),
    "sports2d_demo.mp4": ("6900582589468380422", "#workoutchallenge"),
}
CONFIG = '[ingest]\ncrawl_time = "2021-01-06T15:51:49Z"\n[screen]\nmax_followers = 0\n'
SCENIC = {"short_side": 48, "end_s": 3.0, "mask_max_side": 256}  # small: a background is all the report needs


class Page(HTMLParser):
    """Elements of interest with their attributes and the card they sit in."""

    def __init__(self):
        super().__init__()
        self.cards: list[dict] = []  # {"clip_id", "classes", "measured": [...], "imgs": [...], "text"}
        self.imgs: list[dict] = []
        self.codes: list[str] = []
        self._card = None
        self._depth = 0
        self._in_code = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "card" in (a.get("class") or "").split():
            self._card = {"clip_id": a["data-clip-id"], "classes": a["class"].split(), "measured": [], "imgs": []}
            self._card["text"] = []
            self.cards.append(self._card)
            self._depth = 0
        if self._card is not None and tag == "section":
            self._depth += 1
        if tag == "img":
            self.imgs.append(a)
            if self._card is not None:
                self._card["imgs"].append(a)
        if tag == "td" and "measured" in (a.get("class") or "") and self._card is not None:
            self._card["measured"].append(a)
        if tag == "code" and "override" in (a.get("class") or ""):
            self._in_code = True
            self.codes.append("")

    def handle_endtag(self, tag):
        if tag == "section" and self._card is not None:
            self._depth -= 1
            if self._depth == 0:
                self._card = None
        if tag == "code":
            self._in_code = False

    def handle_data(self, data):
        if self._in_code:
            self.codes[-1] += data
        if self._card is not None:
            self._card["text"].append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    raw, pairing, _ = write_sample_run(root, CLIPS, CONFIG)
    work = root / "work"
    ingest = prepare_clips(
        raw,
        config=IngestConfig(),
        pairing=read_pairing(pairing),
        crawl_time="2021-01-06T15:51:49Z",
        output_dir=work,
    )
    vcfg = visual.VisualConfig()

    def pixel_rules(clip):
        return visual.screen_visual(clip["path"], clip["clip_id"], vcfg, thumbnails=tables.thumbnails_dir(work))

    screened = screen.screen_clips(
        ingest.clips, screen.ScreenConfig(max_followers=0), visual=pixel_rules, output_dir=work
    )
    score_clips(ingest.clips, kept=screened.kept, output_dir=work)
    # the kept clip's scenic background is the one its extraction pass saves for the report
    plan = extraction.plan_extraction(["scenic"], {"scenic": SCENIC}, untrained=True, device="cpu")
    kept = [c for c in ingest.clips if c["clip_id"] in screened.kept]
    extraction.run_extraction(work, kept, plan, show_progress=False)
    index = report.write_report(work)
    return work, index


@pytest.mark.slow
def test_every_clip_has_a_card_and_every_image_exists(built):
    work, index = built
    page = parse(index)
    screening = tables.read_table(work, tables.SCREENING).to_pylist()
    assert {c["clip_id"] for c in page.cards} == {r["clip_id"] for r in screening}
    assert len(screening) == len(CLIPS)
    referenced = [Path(index.parent, img["src"]) for img in page.imgs]
    assert referenced and all(p.is_file() and p.stat().st_size > 0 for p in referenced)
    for img in referenced:
        Image.open(img).verify()  # a real image file, not a placeholder
    # the kept clip has its thumbnails and the scenic background its extraction saved next to them
    kept = {r["clip_id"] for r in screening if r["kept"]}
    assert len(kept) == 1
    (card,) = [c for c in page.cards if c["clip_id"] in kept]
    assert any("background" in (i.get("class") or "") for i in card["imgs"])
    assert sum("thumb" in (i.get("class") or "") for i in card["imgs"]) >= 4
    # the clip rejected by its duration was never decoded: no thumbnail, and the card says why
    clips = {r["clip_id"]: r for r in tables.read_table(work, tables.CLIPS).to_pylist()}
    (short,) = [c for c in page.cards if Path(clips[c["clip_id"]]["path"]).name == "controlvideo_moonwalk.mp4"]
    assert not short["imgs"] and "not decoded" in "".join(short["text"])


@pytest.mark.slow
def test_card_values_equal_the_screening_table(built):
    work, index = built
    rows = {r["clip_id"]: r for r in tables.read_table(work, tables.SCREENING).to_pylist()}
    page = parse(index)
    checked = set()
    for card in page.cards:
        details = json.loads(rows[card["clip_id"]]["details"])
        seen_rules = set()
        for cell in card["measured"]:
            rule, key = cell["data-rule"], cell["data-key"]
            assert json.loads(cell["data-value"]) == details[rule][key], (card["clip_id"], rule, key)
            seen_rules.add(rule)
            checked.add((rule, key))
        # every evaluated rule is on the card
        assert seen_rules == set(rows[card["clip_id"]]["rules_evaluated"])
        decision = "kept" if rows[card["clip_id"]]["kept"] else "rejected"
        assert decision in card["classes"]
    for needed in [
        ("duration", "duration_s"),
        ("one_dancer", "people_per_frame"),
        ("upper_body_visible", "median_confidence"),
        ("camera_motion", "median_speed"),
        ("camera_motion", "max_hist_distance"),
    ]:
        assert needed in checked
    # the thresholds shown come from the configuration the rules ran with
    text = index.read_text()
    assert f"&gt;= {visual.VisualConfig().min_person_share:g}" in text


@pytest.mark.slow
def test_skeleton_pixels_sit_at_the_stored_joints(built):
    work, index = built
    page = parse(index)
    thumbs = [i for i in page.imgs if "thumb" in (i.get("class") or "")]
    with_people = 0
    for img in thumbs:
        joints = json.loads(img["data-joints"])
        if joints is None:
            continue
        pixels = np.asarray(Image.open(index.parent / img["src"]).convert("RGB"), dtype=int)
        height, width = pixels.shape[:2]
        colour = np.array(visual.MAIN_COLOUR)
        near = np.abs(pixels - colour).max(axis=2) <= 60
        drawn = [
            (int(round(x)), int(round(y)))
            for x, y, c in joints
            if c >= float(img["data-min-conf"]) and 0 <= round(x) < width and 0 <= round(y) < height
        ]
        assert drawn, img["src"]
        on_joint = [near[y, x] for x, y in drawn]
        assert all(on_joint), (img["src"], sum(on_joint), len(on_joint))
        # and the colour is the skeleton's, not the whole picture's
        assert near.mean() < 0.15, img["src"]
        with_people += 1
    assert with_people >= 6  # the kept clip's and the two-person clip's frames


@pytest.mark.slow
def test_filters_overrides_histograms_and_regeneration(built, tmp_path, capsys):
    work, index = built
    rows = {r["clip_id"]: r for r in tables.read_table(work, tables.SCREENING).to_pylist()}
    kept = parse(index.parent / "kept-001.html")
    rejected = parse(index.parent / "rejected-001.html")
    assert {c["clip_id"] for c in kept.cards} == {k for k, r in rows.items() if r["kept"]}
    assert {c["clip_id"] for c in rejected.cards} == {k for k, r in rows.items() if not r["kept"]}
    by_reason = parse(index.parent / "reason-multiple_people-001.html")
    assert [c["clip_id"] for c in by_reason.cards] == [k for k, r in rows.items() if "multiple_people" in r["reasons"]]
    # the override line of each rejected clip is a valid reviewer-file entry that keeps it
    assert len(rejected.codes) == len(rejected.cards)
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("id,decision,note\n" + "".join(line + "\n" for line in rejected.codes))
    parsed = screen.read_overrides(overrides)
    assert {k: o.decision for k, o in parsed.items()} == {r["video_id"]: "keep" for r in rows.values() if not r["kept"]}
    # one histogram image per scored challenge
    page = parse(index)
    scores = tables.read_table(work, tables.SCORES).to_pylist()
    hist = {i["data-challenge"] for i in page.imgs if "data-challenge" in i}
    assert hist == {s["challenge"] for s in scores}
    # ingest rejections are listed with their reasons
    ingest = [r for r in tables.read_table(work, tables.REJECTIONS).to_pylist() if r["stage"] == "ingest"]
    assert ingest and index.read_text().count("<td>no_clip</td>") >= min(len(ingest), render.ROW_LIMIT)
    # `vdv report` regenerates the page; a missing work directory is one line and exit 2
    index.unlink()
    assert vdv(["report", "--work", str(work)]) == 0
    assert index.is_file() and str(index) in capsys.readouterr().out
    assert vdv(["report", "--work", str(tmp_path / "nope")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # a thumbnail deleted since screening is not referenced, and the card says so
    thumbs = sorted((work / "report" / "thumbs").rglob("*.jpg"))
    moved = tmp_path / thumbs[0].name
    thumbs[0].rename(moved)
    try:
        index = report.write_report(work)
        page = parse(index)
        assert all(Path(index.parent, img["src"]).is_file() for img in page.imgs)
        assert "1 thumbnail(s) recorded by screening are missing" in index.read_text()
    finally:
        moved.rename(thumbs[0])
        report.write_report(work)


def test_build_report_items_and_release(tmp_path):
    """Extraction totals, slowest clips and the release section, from a build report and a manifest."""
    work = tmp_path / "work"
    items = [
        {"clip_id": f"{i:064x}", "modality": m, "status": s, "worker": "w1", "seconds": sec}
        for i, (m, s, sec) in enumerate(
            [
                ("pose", "computed", 12.5),
                ("pose", "skipped", 0.1),
                ("facial", "rejected", 3.0),
                ("scenic", "computed", 40.0),
            ]
        )
    ]
    (work / "flow_state").mkdir(parents=True)
    (work / "flow_state" / "build_report.json").write_text(json.dumps({"items": items}))
    release = tmp_path / "release" / "vdv-0.1.0"
    release.mkdir(parents=True)
    manifest = {
        "name": "vdv",
        "version": "0.1.0",
        "untrained": True,
        "untrained_modalities": ["scenic"],
        "configs": {"scores": {"num_rows": {"train": 7, "test": 2}}},
        "tracks": {"all": {"challenge": None, "train": 7, "test": 2}},
        "notes": [],
    }
    (release / "manifest.json").write_text(json.dumps(manifest))
    index = report.write_report(work, tmp_path / "release")
    text = index.read_text()
    # modality, computed, skipped, failed, seconds (totals of the items)
    assert "<tr><td>pose</td><td>1</td><td>1</td><td>0</td><td>12.6</td>" in text
    assert "<tr><td>facial</td><td>0</td><td>0</td><td>1</td><td>3</td>" in text
    slowest = text.split('class="slowest"')[1]
    assert slowest.index("40") < slowest.index("12.5") < slowest.index(">3<")
    assert "UNTRAINED features: scenic" in text
    assert "<tr><td>scores</td><td>7</td><td>2</td></tr>" in text
    # a damaged manifest hides the release section; a damaged table is one line and exit 2
    (release / "manifest.json").write_text("{not json")
    assert "no release given or recorded" in report.write_report(work, release).read_text()
    (work / "screening").mkdir()
    (work / "screening" / "screening.000000.parquet").write_bytes(b"not parquet")
    assert vdv(["report", "--work", str(work)]) == 2


@pytest.mark.slow
def test_contact_sheet_shows_the_frame_that_rejected_a_second_person(built):
    work, index = built
    rows = tables.read_table(work, tables.SCREENING).to_pylist()
    (multi,) = [r for r in rows if "multiple_people" in r["reasons"]]
    one_dancer = json.loads(multi["details"])["one_dancer"]
    frames = one_dancer["contact_sheet"]["frames"]
    per_frame = one_dancer["people_per_frame"]
    # each thumbnail's count is the rule's count for that sampled frame
    assert [f["counted"] for f in frames] == [per_frame[f["index"]] for f in frames]
    assert max(f["counted"] for f in frames) == max(per_frame) >= 2
    (card,) = [c for c in parse(index).cards if c["clip_id"] == multi["clip_id"]]
    assert f"{max(per_frame)} counted" in "".join(card["text"])


def test_the_page_shows_the_flow_run_that_finished_last(tmp_path):
    """A re-extraction writes the page too, and the page shows its counts and says so; after a
    later build it shows the build's again."""
    work = tmp_path / "work"
    (work / "flow_state").mkdir(parents=True)

    def run(kind: str, finished: str, statuses: list[str]) -> None:
        items = [
            {"clip_id": f"{i:064x}", "modality": "pose", "status": s, "worker": "w1", "seconds": 1.0}
            for i, s in enumerate(statuses)
        ]
        state = {"kind": kind, "finished": finished, "items": items}
        (work / "flow_state" / f"{kind}_report.json").write_text(json.dumps(state))

    run("build", "2026-01-05T10:00:00+00:00", ["computed", "computed", "computed"])
    run("reextract", "2026-01-06T03:00:00+00:00", ["computed", "skipped", "skipped"])
    text = report.write_report(work).read_text()
    assert "counts of the last run, <b>reextract</b>" in text
    assert "last build: 2026-01-05T10:00:00+00:00; last reextract: 2026-01-06T03:00:00+00:00" in text
    assert "<tr><td>pose</td><td>1</td><td>2</td><td>0</td><td>3</td>" in text  # the re-extraction's
    run("build", "2026-01-07T10:00:00+00:00", ["skipped", "skipped", "skipped"])
    text = report.write_report(work).read_text()
    assert "counts of the last run, <b>build</b>" in text
    assert "<tr><td>pose</td><td>0</td><td>3</td><td>0</td><td>3</td>" in text


@pytest.mark.slow
def test_the_report_reads_and_computes_nothing(built, monkeypatch):
    """Writing the report decodes no clip and computes no feature: it shows what screening and
    extraction left. A kept clip whose background extraction did not save has none on its card."""
    import shutil

    from pipeline.core import decode

    def refuse(*args, **kwargs):
        raise AssertionError("the report decoded a clip")

    monkeypatch.setattr(decode, "decode_pass", refuse)
    monkeypatch.setattr(decode, "iter_samples", refuse)
    work, _ = built
    saved = work / "report" / "backgrounds"
    aside = work.parent / "backgrounds-aside"
    shutil.move(saved, aside)
    try:
        page = parse(report.write_report(work))
        (card,) = [
            c
            for c in page.cards
            if any("thumb" in (i.get("class") or "") for i in c["imgs"]) and "KEPT" in "".join(c["text"])
        ]
        assert not any("preview" in (i.get("class") or "") for i in card["imgs"])
    finally:
        shutil.move(aside, saved)
    page = parse(report.write_report(work))
    assert any("preview backgrounds" in (i.get("class") or "") for c in page.cards for i in c["imgs"])
