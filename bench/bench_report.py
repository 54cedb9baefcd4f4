"""The build report at VDV scale: write time, page sizes and browser load time for 4,292 clips.

    python bench/bench_report.py out/demo/work --clips 4292 --out out/bench_report

Makes a work directory of ``--clips`` clips by repeating the real rows of a built one (its
``clips``, ``screening`` with the contact-sheet details, ``scores``, ``score_scale`` and
rejections; every copy gets its own clip id and points at the same thumbnails), writes the
report into it without computing backgrounds, and prints the seconds taken, the number of pages,
the largest page, and, when Chromium is installed, how long it takes to render the index and
one card page (start-up included).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import tables  # noqa: E402
from pipeline.core.tables import REPORT_DIR, THUMBS_DIR  # noqa: E402
from pipeline.report import write_report  # noqa: E402


def scale_work(source: Path, target: Path, n: int) -> None:
    clips = {r["clip_id"]: r for r in tables.read_table(source, tables.CLIPS).to_pylist()}
    screening = tables.read_table(source, tables.SCREENING).to_pylist()
    scores = {r["clip_id"]: r for r in tables.read_table(source, tables.SCORES).to_pylist()}
    out_clips, out_screen, out_scores = [], [], []
    for i in range(n):
        row = dict(screening[i % len(screening)])
        new_id = hashlib.sha256(f"{row['clip_id']}:{i}".encode()).hexdigest()
        clip = dict(clips[row["clip_id"]], clip_id=new_id, video_id=f"{7_000_000_000_000_000_000 + i}")
        if row["clip_id"] in scores:
            out_scores.append(dict(scores[row["clip_id"]], clip_id=new_id, video_id=clip["video_id"]))
        out_screen.append(dict(row, clip_id=new_id, video_id=clip["video_id"]))
        out_clips.append(clip)
    tables.replace_table(out_clips, tables.CLIPS, target)
    tables.replace_table(out_screen, tables.SCREENING, target)
    tables.replace_table(out_scores, tables.SCORES, target)
    tables.replace_table(tables.read_table(source, tables.SCORE_SCALE), tables.SCORE_SCALE, target)
    for shard in tables.table_files(source, "rejections"):
        (target / "rejections").mkdir(parents=True, exist_ok=True)
        shutil.copy(shard, target / "rejections" / shard.name)
    thumbs = source / REPORT_DIR / THUMBS_DIR
    if thumbs.is_dir():
        shutil.copytree(thumbs, target / REPORT_DIR / THUMBS_DIR, dirs_exist_ok=True)
    state = source / "flow_state" / "build_report.json"
    if state.is_file():
        (target / "flow_state").mkdir(parents=True, exist_ok=True)
        report = json.loads(state.read_text())
        report.pop("release", None)
        (target / "flow_state" / "build_report.json").write_text(json.dumps(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="a built work directory (e.g. out/demo/work) with its report/thumbs")
    parser.add_argument("--clips", type=int, default=4292)
    parser.add_argument("--out", type=Path, default=Path("out/bench_report"))
    args = parser.parse_args(argv)
    if not (args.work / "screening").is_dir():
        print(f"{args.work} has no screening table; build it first (make demo)", file=sys.stderr)
        return 2
    shutil.rmtree(args.out, ignore_errors=True)
    work = args.out / "work"
    scale_work(args.work, work, args.clips)
    started = time.monotonic()
    index = write_report(work)
    seconds = time.monotonic() - started
    pages = sorted(index.parent.glob("*.html"))
    largest = max(pages, key=lambda p: p.stat().st_size)
    print(f"{args.clips} clips: report written in {seconds:.1f} s; {len(pages)} pages")
    print(
        f"  index.html {index.stat().st_size / 1024:.0f} KiB; largest page {largest.name} {largest.stat().st_size / 1024:.0f} KiB"
    )
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from screenshot_report import find_browser, screenshot

    browser = find_browser()
    if browser is None:
        print("  no Chromium: load time not measured")
        return 0
    for page in (index, index.parent / "all-050.html"):
        if page.exists():
            took = screenshot(browser, page, args.out / "shots" / f"{page.stem}.png", 1280, 2000)
            print(f"  Chromium rendered {page.name} in {took:.1f} s (start-up included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
