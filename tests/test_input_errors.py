"""Bad input ends in one clear line that names the file, section or value, with exit code 2."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import pytest
from conftest import DEMO, ROOT, SCRAPER_SAMPLE, SHARED, SHARED_CLIPS

import models  # noqa: F401 - registers the models' configuration sections ([psgcn], [train], ...)
from cli import main
from pipeline.core.config import ConfigError
from pipeline.core.errors import InputError
from pipeline.ingest.stage import read_pairing
from pipeline.sections import load_config
from tests.support.runs import child_env

# every command that reads --config; none gets as far as touching its inputs
COMMANDS = [
    ["ingest", "RAW"],
    ["screen"],
    ["score"],
    ["summary"],
    ["extract", "pose"],
    ["extract", "holistic", "--untrained"],
    ["build", "RAW"],
    ["reextract"],
    ["release"],
    ["train", "--out", "OUT"],
    ["models"],
]


def _argv(command: list[str], tmp_path, config) -> list[str]:
    argv = [str(SHARED) if a == "RAW" else str(tmp_path / "out") if a == "OUT" else a for a in command]
    return [*argv, "--work", str(tmp_path / "work"), "--config", str(config)]


def _one_clear_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _pairing_missing_video_id(tmp_path):
    bad = tmp_path / "pairing.csv"
    bad.write_text("file,challenge\nstgcn_ta_chi.mp4,#dance\n")
    return bad


def test_pairing_without_a_column_is_a_typed_error_naming_file_and_column(tmp_path):
    bad = _pairing_missing_video_id(tmp_path)
    with pytest.raises(InputError) as caught:
        read_pairing(bad)
    assert str(bad) in str(caught.value) and "video_id" in str(caught.value)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="lacks columns file, video_id"):
        read_pairing(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("file,video_id\ncaf\xe9.mp4,1\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_pairing(latin)
    twice = tmp_path / "twice.csv"
    twice.write_text("file,video_id\na.mp4,1\n# comment\na.mp4,2\n")
    with pytest.raises(InputError, match="a.mp4 is paired twice"):
        read_pairing(twice)


def test_ingest_with_a_bad_pairing_file_is_one_line_exit_2(tmp_path, capsys):
    bad = _pairing_missing_video_id(tmp_path)
    code = main(["ingest", str(SHARED), "--pairing", str(bad), "--work", str(tmp_path / "w")])
    line = _one_clear_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("vdv ingest: error: ") and str(bad) in line and "video_id" in line
    assert not (tmp_path / "w" / "clips").exists()


def test_build_with_a_bad_pairing_file_ends_in_the_same_error(tmp_path, capsys):
    """The command line reads the pairing file before a flow run starts: one line naming it, exit
    2 (the flow raises the same error type: the next test)."""
    bad = _pairing_missing_video_id(tmp_path)
    code = main(["build", str(SHARED), "--pairing", str(bad), "--work", str(tmp_path / "w"), "--modalities", "pose"])
    err = capsys.readouterr().err
    assert code == 2
    ours = [line for line in err.splitlines() if line.startswith("vdv build: error: ")]
    assert len(ours) == 1 and str(bad) in ours[0] and "video_id" in ours[0], err


def test_build_flow_raises_the_pairing_error_type(tmp_path):
    from flows import tasks

    bad = _pairing_missing_video_id(tmp_path)
    with pytest.raises(InputError, match="video_id"):
        tasks.ingest.fn(str(SHARED), str(tmp_path / "w"), {}, str(bad), None)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_unknown_section_is_refused_by_every_command(command, tmp_path, capsys):
    config = tmp_path / "typo.toml"
    config.write_text((DEMO / "config.toml").read_text() + "\n[scren]\nmax_followers = 0\n")
    code = main(_argv(command, tmp_path, config))
    line = _one_clear_line(capsys.readouterr().err)
    assert code == 2
    assert str(config) in line and "unknown section [scren]" in line and "did you mean [screen]" in line
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_bad_value_is_refused_by_every_command(command, tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[holistic]\nshort_side = 256\ncrop = 300\n")
    code = main(_argv(command, tmp_path, config))
    line = _one_clear_line(capsys.readouterr().err)
    assert code == 2
    assert str(config) in line and "[holistic]" in line and "crop = 300" in line and "short_side = 256" in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[screen]\nmax_folowers = 0\n", "[screen] has unknown keys ['max_folowers']"),
        ("[visual]\nfps = 0\n", "[visual] needs fps > 0"),
        ('[ingest]\nprobe_budget_s = "fast"\n', "[ingest]"),
        ("max_followers = 0\n", "max_followers = 0 is not a [section]"),
        ("[psgcn]\nno_such_field = 1\n", "[psgcn] has unknown keys"),
        ("[screen\n", "bad.toml"),
        ('[screen]\nmax_followers = "many"\n', "[screen] max_followers = 'many' is not int"),
        ("[pose]\nmax_side = 1.5\n", "[pose] max_side = 1.5 is not int | None"),
        ("[ingest]\nchallenge_hashtags = [1, 2]\n", "[ingest] challenge_hashtags = (1, 2) is not tuple[str, ...]"),
        ("[visual]\nfps = true\n", "[visual] fps = True is not float"),
    ],
)
def test_load_config_names_file_section_and_value(text, expected, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert expected in str(caught.value) and str(config) in str(caught.value)


def test_the_demo_configuration_is_accepted():
    assert load_config(DEMO / "config.toml")["screen"] == {"max_followers": 0}


def test_unparseable_metadata_is_named_in_the_summaries(make_raw, tmp_path, capsys):
    """The real sample parses; a truncated copy of it and a broken JSON-lines file are named with
    the parser's line and column in `vdv ingest` and `vdv summary`, and the run goes on."""
    sample = SCRAPER_SAMPLE.read_text()
    raw = make_raw(
        {"stgcn_ta_chi.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4"},
        {
            SCRAPER_SAMPLE.name: sample,
            "cut_1609948309033.json": sample[: len(sample) // 2],
            "more.jsonl": '{"video_id": "a", "likes": 1}\n{"video_id": "b", likes: 2}\n',
        },
    )
    work = str(tmp_path / "work")
    pairing = tmp_path / "pairing.csv"
    pairing.write_text("file,video_id,challenge\nstgcn_ta_chi.mp4,6911379416308305158,#dance\n")
    assert (
        main(["ingest", str(raw), "--pairing", str(pairing), "--crawl-time", "2021-01-06T15:51:49Z", "--work", work])
        == 0
    )
    out = capsys.readouterr().out
    cut = raw / "metadata" / "cut_1609948309033.json"
    jsonl = raw / "metadata" / "more.jsonl"
    assert "1 clip(s) in the manifest" in out
    lines = [line for line in out.splitlines() if "bad metadata:" in line]
    assert len(lines) == 2, out
    assert str(cut) in lines[0] and "cannot parse metadata file" in lines[0] and "line " in lines[0]
    assert str(jsonl) in lines[1] and "line 2" in lines[1] and "column" in lines[1]
    assert main(["summary", "--work", work]) == 0
    summary = capsys.readouterr().out
    assert f"bad metadata: {lines[0].split('bad metadata: ')[1]}" in summary
    assert str(jsonl) in summary


def test_a_table_of_an_older_schema_version_is_one_line(tmp_path, capsys):
    """A work directory written before the clips table's v2 (content signatures)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.core import tables

    work = tmp_path / "work"
    old = tables.CLIPS.schema.remove(tables.CLIPS.schema.get_field_index("content_signature"))
    old = old.with_metadata({b"vdv.table": b"clips", b"vdv.schema_version": b"1"})
    path = tables.shard_path(work, "clips", 0)
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([], schema=old), path)
    assert main(["screen", "--no-visual", "--work", str(work)]) == 2
    line = _one_clear_line(capsys.readouterr().err)
    assert str(path) in line and "v1" in line and f"v{tables.CLIPS.version}" in line


def test_the_build_summary_names_unparseable_metadata(make_raw, tmp_path, capsys):
    """The ingest task's summary (what `vdv build` prints) carries the file and the parse error."""
    import argparse

    from cli.build import _print_report
    from flows import tasks

    raw = make_raw(
        {"stgcn_ta_chi.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4"},
        {SCRAPER_SAMPLE.name: SCRAPER_SAMPLE.read_text(), "broken.json": '[{"id": "1",}]'},
    )
    summary = tasks.ingest.fn(str(raw), str(tmp_path / "w"), {}, None, "2021-01-06T15:51:49Z")
    broken = raw / "metadata" / "broken.json"
    assert summary["reasons"]["bad_metadata"] == 1
    assert len(summary["metadata_problems"]) == 1 and str(broken) in summary["metadata_problems"][0]
    _print_report({"ingest": summary}, argparse.Namespace(json=False, work=str(tmp_path / "w")))
    out = capsys.readouterr().out
    assert f"bad metadata: {broken}: cannot parse metadata file: " in out and "line 1 column" in out


# -- set-up a new user gets wrong: one line naming the flag, key or path; exit 2; nothing left -------


def _writable(directory: Path) -> bool:
    try:
        fd, probe = tempfile.mkstemp(dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


@pytest.fixture
def unwritable(tmp_path):
    """A directory this process cannot write in: a read-only one, or, for root (whom permission
    bits do not stop), ``/sys/kernel``, where the kernel refuses new files whoever asks."""
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if not _writable(read_only):
            yield read_only
            return
        for candidate in (Path("/sys/kernel"), Path("/sys")):
            if candidate.is_dir() and not _writable(candidate):
                yield candidate
                return
        pytest.skip("no directory here that this process cannot write in")
    finally:
        read_only.chmod(0o755)


def _leftovers(tmp_path, *names: str) -> list[str]:
    return [name for name in names if (tmp_path / name).exists()]


@pytest.mark.parametrize(
    "command",
    [["ingest", "RAW"], ["build", "RAW"], ["screen"], ["score"], ["extract", "pose"], ["reextract"], ["report"]],
    ids=lambda c: c[0],
)
def test_a_work_directory_that_cannot_be_written_is_one_line(command, unwritable, tmp_path, capsys):
    argv = [str(SHARED) if a == "RAW" else a for a in command]
    code = main([*argv, "--work", str(unwritable)])
    line = _one_clear_line(capsys.readouterr().err)
    assert code == 2
    assert line == f"vdv {command[0]}: error: --work {unwritable}: cannot write in it: Permission denied", line


def test_release_from_a_work_directory_that_cannot_be_written_is_one_line(unwritable, tmp_path, capsys):
    code = main(["release", "--work", str(unwritable), "--out", str(tmp_path / "out")])
    assert _one_clear_line(capsys.readouterr().err).startswith(f"vdv release: error: --work {unwritable}: ")
    assert code == 2 and not _leftovers(tmp_path, "out")


@pytest.mark.parametrize("command", [["ingest", "RAW"], ["build", "RAW"], ["extract", "pose"]], ids=lambda c: c[0])
def test_a_work_directory_that_cannot_be_made_is_one_line(command, tmp_path, capsys):
    argv = [str(SHARED) if a == "RAW" else a for a in command]
    under_proc = Path("/proc") / f"vdv-{os.getpid()}" / "work"  # /proc makes no directory for anyone
    assert main([*argv, "--work", str(under_proc)]) == 2
    line = _one_clear_line(capsys.readouterr().err)
    assert line.startswith(f"vdv {command[0]}: error: --work {under_proc}: cannot create the directory: "), line
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory")
    assert main([*argv, "--work", str(a_file / "work")]) == 2
    line = _one_clear_line(capsys.readouterr().err)
    assert f"--work {a_file / 'work'}: cannot create the directory" in line and f"({a_file} is a file)" in line
    assert main([*argv, "--work", str(a_file)]) == 2
    assert f"--work {a_file}: not a directory" in _one_clear_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "command, flag",
    [
        (["train"], "--out"),
        (["evaluate"], "--out"),
        (["feedback"], "--out"),
        (["sports"], "--out"),
        (["build", "RAW"], "--release-out"),
        (["build", "RAW"], "--train-dir"),
    ],
    ids=lambda c: c if isinstance(c, str) else c[0],
)
def test_an_output_directory_that_cannot_be_made_is_one_line_before_any_work(command, flag, tmp_path, capsys):
    words, parser = next((w, p) for w, p in _leaf_commands() if list(w) == command[:1])
    under_proc = Path("/proc") / f"vdv-{os.getpid()}" / "out"
    argv = [str(SHARED) if a == "RAW" else a for a in command]
    required = _required_arguments(parser, tmp_path)
    if flag in required:
        del required[required.index(flag) : required.index(flag) + 2]
    assert main([*argv, *required[len(argv) - 1 :], flag, str(under_proc), "--work", str(tmp_path / "work")]) == 2
    line = _one_clear_line(capsys.readouterr().err)
    assert line.startswith(f"vdv {command[0]}: error: {flag} {under_proc}: cannot create the directory: "), line
    assert not _leftovers(tmp_path, "work")


def test_a_work_directory_that_must_exist_is_named(tmp_path, capsys):
    for command in (["screen"], ["score"], ["reextract"], ["report"]):
        assert main([*command, "--work", str(tmp_path / "typo")]) == 2
        line = _one_clear_line(capsys.readouterr().err)
        assert f"--work {tmp_path / 'typo'}: no such work directory; run `vdv ingest` first" in line
    assert not _leftovers(tmp_path, "typo")


@pytest.mark.parametrize("command", ["build", "ingest"])
def test_raw_dir_that_is_a_file_is_one_line_and_leaves_no_work_directory(command, tmp_path, capsys):
    not_a_dir = SHARED / "SOURCES.md"
    code = main([command, str(not_a_dir), "--work", str(tmp_path / "work")])
    line = _one_clear_line(capsys.readouterr().err)
    assert code == 2
    assert line == (
        f"vdv {command}: error: RAW_DIR {not_a_dir}: not a directory (expected RAW_DIR/clips/ and RAW_DIR/metadata/)"
    )
    assert not _leftovers(tmp_path, "work")  # ingest made it for its lock, and removed it again
    assert main([command, str(SHARED_CLIPS), "--work", str(tmp_path / "work")]) == 2
    assert "no clips/ directory in it" in _one_clear_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("pose", "fps", "-25", "[pose] fps = -25 must be positive"),
        ("holistic", "fps", "0.0", "[holistic] fps = 0.0 must be positive"),
        ("facial", "end_s", "-1.0", "[facial] end_s = -1.0 must be positive"),
        ("scenic", "fps", "-3.0", "[scenic] fps = -3.0 must be positive"),
        ("pose", "max_side", "0", "[pose] max_side = 0 must be at least 1"),
    ],
)
def test_a_grid_no_clip_can_be_sampled_on_is_a_config_error(section, key, value, expected, tmp_path, capsys):
    """Refused when the file is read, not by every clip's task inside the build."""
    config = tmp_path / "grid.toml"
    config.write_text(f"[{section}]\n{key} = {value}\n")
    code = main(["build", str(SHARED), "--config", str(config), "--work", str(tmp_path / "work")])
    line = _one_clear_line(capsys.readouterr().err)
    assert code == 2 and str(config) in line and expected in line, line
    assert not _leftovers(tmp_path, "work")


def _no_gpu() -> bool:
    import torch

    return not torch.cuda.is_available()


@pytest.mark.parametrize(
    "command", [["build", "RAW", "--modalities", "holistic"], ["extract", "holistic"]], ids=lambda c: c[0]
)
def test_a_device_this_machine_lacks_is_one_line_naming_the_flag(command, tmp_path, capsys):
    argv = [str(SHARED) if a == "RAW" else a for a in command]
    work = ["--untrained", "--work", str(tmp_path / "work")]
    assert main([*argv, *work, "--device", "tpu"]) == 2
    line = _one_clear_line(capsys.readouterr().err)
    assert line == f"vdv {command[0]}: error: --device tpu: not a device torch knows (cpu, cuda, cuda:N, mps, ...)"
    if _no_gpu():
        assert main([*argv, *work, "--device", "cuda"]) == 2
        line = _one_clear_line(capsys.readouterr().err)
        assert line.startswith(f"vdv {command[0]}: error: --device cuda: torch finds no CUDA GPU on this machine")
        assert line.endswith("leave --device out to run on the CPU")
    assert not _leftovers(tmp_path, "work")


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_dask_address_where_nothing_listens_is_one_line(tmp_path, capsys):
    address = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    code = main(["build", str(SHARED), "--runner", "dask", "--dask-address", address, "--work", str(tmp_path / "w")])
    line = _one_clear_line(capsys.readouterr().err)
    assert code == 2 and time.monotonic() - started < 10  # not the client's 30 s connect timeout
    port = address.split(":")[1]
    assert line == (
        f"vdv build: error: --dask-address {address}: no Dask scheduler there: a TCP connection to 127.0.0.1 "
        f"port {port} failed: Connection refused; start one with `dask scheduler`, or leave --dask-address out "
        "for a local cluster"
    )
    assert main(["build", str(SHARED), "--dask-address", address, "--work", str(tmp_path / "w")]) == 2
    assert "needs --runner dask" in _one_clear_line(capsys.readouterr().err)
    assert not _leftovers(tmp_path, "w")


def test_a_server_that_is_not_a_dask_scheduler_is_named():
    """A listener that accepts and says nothing, and a Dask worker: the TCP try passes, Dask's
    handshake tells them from a scheduler, which passes."""
    from distributed import LocalCluster

    from flows.runners import SchedulerUnreachable, check_scheduler

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(SchedulerUnreachable) as caught:
            check_scheduler(address, "--dask-address", timeout_s=2)
        assert time.monotonic() - started < 10
    assert str(caught.value).startswith(f"--dask-address {address}: no Dask scheduler answered within 2 s")
    with LocalCluster(n_workers=1, processes=False, protocol="tcp", dashboard_address=None) as cluster:
        check_scheduler(cluster.scheduler_address)  # a scheduler: no error
        worker = next(iter(cluster.workers.values())).address
        with pytest.raises(SchedulerUnreachable, match=f"{worker}: a Dask Worker answered, not a scheduler"):
            check_scheduler(worker)


def test_release_with_no_kept_clips_is_one_line(tmp_path, capsys):
    """The real sample screened with the default follower rule: its only creator is rejected."""
    work = str(tmp_path / "work")
    pairing = DEMO / "pairing.csv"
    crawl = "2021-01-06T15:51:49Z"
    assert main(["ingest", str(SHARED), "--pairing", str(pairing), "--crawl-time", crawl, "--work", work]) == 0
    assert main(["screen", "--no-visual", "--work", work]) == 0
    assert main(["score", "--work", work]) == 0
    capsys.readouterr()
    for extra in ([], ["--no-flow"]):
        assert main(["release", "--work", work, "--out", str(tmp_path / "out"), *extra]) == 2
        line = _one_clear_line(capsys.readouterr().err)
        assert line == (
            f"vdv release: error: --work {work}: no kept clips to release: screening rejected all 19 clip(s) "
            f"(`vdv summary --work {work}` gives the reasons)"
        )
    assert main(["release", "--work", str(tmp_path / "never"), "--out", str(tmp_path / "out")]) == 2
    assert "no such work directory; run `vdv build`" in _one_clear_line(capsys.readouterr().err)
    assert not _leftovers(tmp_path, "out", "never")


def test_training_or_evaluating_without_clips_or_features_is_one_line(tmp_path, capsys):
    """An empty work directory names the stage to run; scored clips without shards name extract.
    Neither leaves the --out directory behind."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in (["train"], ["evaluate"]):
        assert main([*command, "--work", str(empty), "--out", str(tmp_path / "out")]) == 2
        line = _one_clear_line(capsys.readouterr().err)
        assert (
            line
            == f"vdv {command[0]}: error: {empty} has no scored clips: run `vdv build` (or ingest, screen and score) first"
        )
    work = str(tmp_path / "work")
    config = DEMO / "config.toml"
    assert (
        main(["ingest", str(SHARED), "--pairing", str(DEMO / "pairing.csv"), "--work", work, "--config", str(config)])
        == 0
    )
    assert main(["screen", "--no-visual", "--work", work, "--config", str(config)]) == 0
    assert main(["score", "--work", work, "--config", str(config)]) == 0
    capsys.readouterr()
    argv = ["train", "--work", work, "--out", str(tmp_path / "out"), "--config", str(config)]
    assert main(argv) == 2
    line = _one_clear_line(capsys.readouterr().err)
    assert line.startswith("vdv train: error: track all: none of its ") and line.endswith(
        "training clip(s) has a pose or holistic or facial or scenic shard (run `vdv extract` first)"
    ), line
    assert not _leftovers(tmp_path, "out")
    under_proc = Path("/proc") / f"vdv-{os.getpid()}" / "release"
    assert main(["release", "--work", work, "--out", str(under_proc), "--config", str(config)]) == 2
    line = _one_clear_line(capsys.readouterr().err)
    assert line.startswith(f"vdv release: error: --out {under_proc}: cannot create the directory: "), line


# -- the sweep: every subcommand, bad set-up, no traceback ---------------------------------------


def _leaf_commands(parser=None, prefix: tuple[str, ...] = ()):
    """``(words, parser)`` of every runnable ``vdv`` subcommand, found in the parser itself."""
    import argparse

    from cli import build_parser

    parser = parser or build_parser()
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield prefix, parser
        return
    for name, sub in subparsers[0].choices.items():
        yield from _leaf_commands(sub, (*prefix, name))


def _required_arguments(parser, tmp_path) -> list[str]:
    """Values for a subcommand's required arguments: a choice where there are choices, else a path
    that does not exist (``tmp_path/missing-<name>``)."""
    argv = []
    for action in parser._actions:
        positional = not action.option_strings and action.dest != "help" and action.nargs not in ("?", "*")
        if not (positional or (action.option_strings and action.required)):
            continue
        value = str(action.choices[0]) if action.choices else str(tmp_path / f"missing-{action.dest}")
        argv += [value] if positional else [action.option_strings[-1], value]
    return argv


SWEPT = [" ".join(words) for words, _ in _leaf_commands()]


@pytest.mark.slow
@pytest.mark.parametrize("command", SWEPT)
def test_every_command_meets_bad_set_up_without_a_traceback(command, unwritable, tmp_path):
    """A non-writable --work, a missing --config and an unknown flag, for every subcommand the
    parser knows (a new one is swept too): never a traceback on stderr. A command that writes its
    work directory says so in one line naming --work and exits with code 2; the others may run."""
    import subprocess
    import sys

    words, parser = next((w, p) for w, p in _leaf_commands() if " ".join(w) == command)
    base = [sys.executable, "-m", "cli", *words, *_required_arguments(parser, tmp_path)]
    closed = f"http://127.0.0.1:{_closed_port()}"  # `weights fetch` must not reach the network
    env = child_env(
        tmp_path,
        PREFECT_LOGGING_LEVEL="INFO",  # Prefect's default: every line it would print is seen
        VDV_WEIGHTS_DIR=str(unwritable / "vdv-weights"),
        http_proxy=closed,
        https_proxy=closed,
        HTTP_PROXY=closed,
        HTTPS_PROXY=closed,
        no_proxy="",
        NO_PROXY="",
    )
    missing_config = tmp_path / "missing.toml"
    cases = {
        "unwritable --work": ["--work", str(unwritable)],
        "missing --config": ["--config", str(missing_config), "--work", str(tmp_path / "work")],
        "unknown flag": ["--no-such-flag", "--work", str(tmp_path / "work")],
    }
    for case, extra in cases.items():
        done = subprocess.run([*base, *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        said = f"{command} ({case}): rc {done.returncode}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, said
        last = (done.stderr.strip().splitlines() or [""])[-1]
        if case == "missing --config":
            assert done.returncode == 2 and f"configuration file {missing_config} does not exist" in last, said
        elif case == "unknown flag":
            assert done.returncode == 2 and "unrecognized arguments: --no-such-flag" in last, said
        elif parser.get_default("work_access") is not None:
            assert done.returncode == 2 and f"--work {unwritable}: " in last, said
        else:
            assert done.returncode in (0, 1, 2), said
    assert not (tmp_path / "work").exists()


def test_a_flow_failure_the_run_explains_is_logged_without_a_traceback():
    """Prefect logs a failed flow with its traceback; for a failure vdv explains in one line (a
    release or build that cannot go on, bad input, missing weights) only the message is kept.
    Any other exception keeps its traceback, and so does every one at -vv."""
    import logging
    import sys

    from cli.flows import load_flow
    from pipeline.release import ReleaseError

    load_flow("release")

    def filtered(name: str, err: Exception, level: int) -> logging.LogRecord:
        """The record as Prefect's logger ``name`` passes it to its handlers (its filters applied)."""
        try:
            raise err
        except type(err):
            record = logging.LogRecord(name, logging.ERROR, __file__, 1, "failed: %r", (err,), sys.exc_info())
        logging.getLogger().setLevel(level)
        assert logging.getLogger(name).filter(record)
        return record

    root_level = logging.getLogger().level
    try:
        for name in ("prefect.flow_runs", "prefect.task_runs"):
            record = filtered(name, ReleaseError("pose: 5 kept clip(s) have only stale shards"), logging.INFO)
            assert record.exc_info is None and "stale shards" in record.getMessage()
            assert filtered(name, KeyError("a bug"), logging.INFO).exc_info is not None
            assert filtered(name, ReleaseError("stale"), logging.DEBUG).exc_info is not None
    finally:
        logging.getLogger().setLevel(root_level)


def test_a_weights_cache_that_cannot_be_written_is_named_by_where_its_path_came_from(tmp_path, capsys, monkeypatch):
    under_proc = Path("/proc") / f"vdv-{os.getpid()}" / "weights"
    monkeypatch.setenv("VDV_WEIGHTS_DIR", str(under_proc))
    for command in (["fetch", "blazepose_detector"], ["import", "blazepose_detector", str(tmp_path / "none.pth")]):
        assert main(["weights", *command]) == 2
        line = _one_clear_line(capsys.readouterr().err)
        assert line.startswith(f"vdv weights: error: $VDV_WEIGHTS_DIR {under_proc}: cannot create the directory"), line
    assert main(["weights", "fetch", "blazepose_detector", "--dir", str(under_proc / "d")]) == 2
    line = _one_clear_line(capsys.readouterr().err)
    assert line.startswith(f"vdv weights: error: --dir {under_proc / 'd'}: cannot create the directory"), line
