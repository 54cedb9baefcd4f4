"""Bad input ends in one clear line that names the file, section or value, with exit code 2."""

from __future__ import annotations

import pytest
from conftest import DEMO, SCRAPER_SAMPLE, SHARED, SHARED_CLIPS

import models  # noqa: F401 - registers the models' configuration sections ([psgcn], [train], ...)
from cli import main
from pipeline.config import ConfigError
from pipeline.errors import InputError
from pipeline.ingest import read_pairing
from pipeline.sections import load_config

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


@pytest.mark.slow
def test_build_with_a_bad_pairing_file_ends_in_the_same_error(tmp_path, capsys):
    """The flow does not wrap the data error: the command line receives InputError, exit 2."""
    from prefect.testing.utilities import prefect_test_harness

    bad = _pairing_missing_video_id(tmp_path)
    with prefect_test_harness(server_startup_timeout=120):
        code = main(
            ["build", str(SHARED), "--pairing", str(bad), "--work", str(tmp_path / "w"), "--modalities", "pose"]
        )
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

    from pipeline import tables

    work = tmp_path / "work"
    old = tables.CLIPS.schema.remove(tables.CLIPS.schema.get_field_index("content_signature"))
    old = old.with_metadata({b"vdv.table": b"clips", b"vdv.schema_version": b"1"})
    path = tables.shard_path(work, "clips", 0)
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([], schema=old), path)
    assert main(["screen", "--no-visual", "--work", str(work)]) == 2
    line = _one_clear_line(capsys.readouterr().err)
    assert str(path) in line and "v1" in line and "v2" in line


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
