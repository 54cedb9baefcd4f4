"""The suite's own scheduling: the recorded seconds per file that put the longest files first."""

from __future__ import annotations

from pathlib import Path

from tests.support import file_seconds

ROOT = Path(__file__).resolve().parents[1]


def test_durations_lines_are_summed_per_file() -> None:
    log = "\n".join(
        [
            "============================= slowest durations ==============================",
            "120.50s call     tests/test_a.py::test_one[x]",
            "3.25s setup    tests/test_a.py::test_one[x]",
            "0.75s teardown tests/test_b.py::TestK::test_two",
            "7.00s call     tests/test_b.py::TestK::test_three",
            "(12 durations < 0.005s hidden.  Use -vv to show these durations.)",
            "tests/test_c.py::test_four PASSED",
        ]
    )
    assert file_seconds.from_log(log) == {"tests/test_a.py": 123.75, "tests/test_b.py": 7.75}


def test_every_recorded_file_exists_and_the_longest_run_first(request) -> None:
    recorded = file_seconds.load()
    assert recorded, "tests/support/file_seconds.json is missing or empty"
    missing = [name for name in recorded if not (ROOT / name).is_file()]
    assert not missing, f"renamed or removed: {missing}; refresh with tests/support/file_seconds.py"
    order = list(dict.fromkeys(item.location[0] for item in request.session.items))
    timed = [name for name in order if name in recorded]
    assert timed == sorted(timed, key=lambda name: -recorded[name])  # longest first, as recorded
    assert set(order[: len(timed)]) == set(timed)  # and before every file with no record
