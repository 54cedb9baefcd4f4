"""A full disk is the machine's fault: one line naming the directory, the command stops, no clip
is blamed, and a rerun with space goes on. A release leaves no hidden staging directory behind
(and sweeps the ones a killed release left). Files written atomically honour the umask."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_sample_run
from test_release import CLIPS, colour_extractors, make_work

import models  # noqa: F401 - registers the models' configuration sections
from cli import main
from flows import tasks
from pipeline import release
from pipeline.core import tables
from pipeline.core.errors import DiskFull
from pipeline.release.package import sweep_stale
from pipeline.screening.stage import _run_visual
from tests.support.full_disk import FullDisk
from tests.support.runs import sample_clips, small_config


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    disk = FullDisk(tmp_path / "disk", monkeypatch)
    yield disk
    disk.close()


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and " WARNING " not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_full_disk_stops_extract_in_one_line_blames_no_clip_and_a_rerun_continues(full_disk, tmp_path, capsys):
    raw, pairing, config = write_sample_run(tmp_path, sample_clips("tfjs_pose_1.mp4"), small_config("pose"))
    work = full_disk.directory / "work"
    common = ["--work", str(work), "--config", str(config)]
    assert main(["ingest", str(raw), "--pairing", str(pairing), *common]) == 0
    assert main(["screen", *common]) == 0 and main(["score", *common]) == 0
    capsys.readouterr()
    full_disk.fill(leave_bytes=12 * 1024)  # the lock and the attempt's mark fit (a page each), the shard not
    assert main(["extract", "pose", *common]) == 1
    line = _one_line(capsys.readouterr().err)
    # the shard, or its checksum record after it (pipeline.core.checksums), is what did not fit
    assert re.match(
        rf"vdv extract: error: no space left on the device of {re.escape(str(work))}/(features/pose \(writing pose\.|checksums \(writing checksums\.)",
        line,
    ), line
    assert "free space there and run the command again" in line
    assert not (work / "rejections" / "rejections.extract-pose.parquet").exists()  # no clip blamed
    assert not (work / "attempts").exists()  # and its attempt is no failure
    assert not list(work.rglob("*.tmp"))
    full_disk.free()
    assert main(["extract", "pose", *common]) == 0
    assert "1 computed, 0 skipped" in capsys.readouterr().out
    assert not (work / "rejections" / "rejections.extract-pose.parquet").exists()


def test_pixel_rules_on_a_full_disk_stop_instead_of_rejecting_the_clip():
    def full(_clip):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFull):
        _run_visual(full, {"path": "a.mp4"})
    failed = _run_visual(lambda _clip: 1 / 0, {"path": "a.mp4"})  # any other failure is the clip's
    assert failed[0].reasons[0].value == "extract_failed"


class _State:
    def __init__(self, err):
        self.err = err

    def result(self):
        raise self.err


def test_a_full_disk_is_not_retried_while_other_io_errors_are():
    assert not tasks.transient_io(None, None, _State(OSError(errno.ENOSPC, "No space left on device")))
    assert not tasks.transient_io(None, None, _State(OSError(errno.EDQUOT, "Disk quota exceeded")))
    assert tasks.transient_io(None, None, _State(OSError(errno.EIO, "Input/output error")))


# -- releases -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("work")
    make_work(root, CLIPS[:3], untrained_modality="facial")
    return root


def _hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def test_a_release_on_a_full_disk_is_one_line_and_leaves_no_staging_directory(small_work, full_disk, capsys):
    out = full_disk.directory / "out"
    command = ["release", "--work", str(small_work), "--out", str(out), "--no-flow", "--salt", "s"]
    command += ["--allow-untrained", "--allow-missing"]
    full_disk.fill(leave_bytes=4096)
    assert main(command) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"vdv release: error: no space left on the device of {out}/.vdv-0.1.0.partial-{os.getpid()}")
    assert _hidden(out) == [] and not (out / "vdv-0.1.0").exists()
    full_disk.free()
    assert main(command) == 0 and (out / "vdv-0.1.0" / "SHA256SUMS").is_file()
    assert _hidden(out) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_release_sweeps_the_staging_directories_of_releases_that_died(small_work, tmp_path):
    out = tmp_path / "out"
    dead = _dead_pid()
    for name in (f".vdv-0.1.0.partial-{dead}", f".vdv-0.0.9.old-{dead}"):
        (out / name / "data").mkdir(parents=True)
        (out / name / "data" / "x.parquet").write_bytes(b"left by a killed release")
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        alive = out / f".vdv-0.1.0.partial-{running.pid}"
        alive.mkdir()  # another release in progress: left alone
        release.package_release(
            small_work, out, allow_untrained=True, allow_missing=True, salt="s", extractors=colour_extractors("facial")
        )
        assert _hidden(out) == [alive.name]
    finally:
        running.kill()
        running.wait()
    assert sweep_stale(out) == [alive]  # its process is gone now


def test_files_written_atomically_get_0666_less_the_umask(small_work, tmp_path):
    old = os.umask(0o027)
    try:
        written = tables.write_table([], tables.REJECTIONS, tmp_path / "r.parquet")
        assert stat.S_IMODE(written.stat().st_mode) == 0o640
        os.umask(0o022)
        summary = release.package_release(
            small_work, tmp_path / "out", allow_untrained=True, salt="s", extractors=colour_extractors("facial")
        )
    finally:
        os.umask(old)
    modes = {p.relative_to(summary.path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in summary.path.rglob("*")}
    files = {name: mode for name, mode in modes.items() if (summary.path / name).is_file()}
    assert any(name.startswith("data/") for name in files) and "SHA256SUMS" in files
    assert set(files.values()) == {0o644}, json.dumps({k: oct(v) for k, v in files.items()})
