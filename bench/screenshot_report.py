"""Screenshot a build report with headless Chromium, to look at the page as a browser draws it.

    python bench/screenshot_report.py out/demo/work/report/index.html --out out/report_shots

Writes ``<out>/<page>.png`` for the page given and, with ``--pages``, for each card page it links
to, and prints how long Chromium took per page (a rough load-time figure: it includes Chromium's
own start-up). Needs the Debian package ``chromium`` (``apt-get install chromium``); without it
the script says so and exits 1. CI does not run it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(browser: str, page: Path, target: Path, width: int, height: int) -> float:
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--allow-file-access-from-files",
            f"--window-size={width},{height}",
            f"--screenshot={target}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="the report's index.html")
    parser.add_argument("--out", type=Path, default=Path("out/report_shots"), help="where the PNGs go")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000, help="height of the captured area in pixels")
    parser.add_argument("--pages", action="store_true", help="also capture every linked card page")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print("no Chromium found (apt-get install chromium); nothing captured", file=sys.stderr)
        return 1
    if not args.page.is_file():
        print(f"{args.page} does not exist", file=sys.stderr)
        return 2
    pages = [args.page]
    if args.pages:
        links = sorted(set(re.findall(r'href="([a-z0-9_-]+-\d{3}\.html)"', args.page.read_text())))
        pages += [args.page.parent / link for link in links]
    for page in pages:
        target = args.out / f"{page.stem}.png"
        seconds = screenshot(browser, page, target, args.width, args.height)
        print(f"{page.name}: {target} ({seconds:.1f} s in Chromium, start-up included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
