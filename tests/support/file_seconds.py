"""Seconds each test file took in a full run, so that the suite starts its longest files first.

``pytest -n 2 --dist loadfile`` hands whole files to its two workers in the order they were
collected. A long file handed out last runs alone at the end while the other worker idles, so
``tests/conftest.py`` orders the files by the seconds recorded in ``file_seconds.json`` (longest
first; a file not in it goes after them, in its usual place). The figures only change the order,
never what runs: stale ones cost time, not correctness. Refresh them from a full run:

    make test PYTEST_ARGS=--durations=0 | tee run.log
    python tests/support/file_seconds.py run.log
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

FILE = Path(__file__).with_name("file_seconds.json")
_LINE = re.compile(r"^(\d+(?:\.\d+)?)s (?:call|setup|teardown)\s+(tests/[^:]+\.py)::")


def load() -> dict[str, float]:
    """Recorded seconds per test file (``tests/test_x.py``); empty when there is no record."""
    try:
        return {str(k): float(v) for k, v in json.loads(FILE.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def from_log(text: str) -> dict[str, float]:
    """Per-file totals of the ``--durations=0`` lines of a pytest run's output."""
    seconds: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        found = _LINE.match(line)
        if found:
            seconds[found.group(2)] += float(found.group(1))
    return dict(seconds)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/support/file_seconds.py PYTEST_LOG", file=sys.stderr)
        return 2
    seconds = from_log(Path(argv[0]).read_text())
    if not seconds:
        print(f"file_seconds: no --durations=0 lines in {argv[0]}", file=sys.stderr)
        return 2
    ordered = dict(sorted(((k, round(v)) for k, v in seconds.items()), key=lambda kv: (-kv[1], kv[0])))
    FILE.write_text(json.dumps(ordered, indent=1) + "\n")
    print(f"file_seconds: {len(ordered)} files, {sum(ordered.values())} s, written to {FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
