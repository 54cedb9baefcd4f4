"""``vdv ingest | screen | score | summary`` end to end on the real clips, and their help."""

from __future__ import annotations

import argparse

import pytest
from conftest import DEMO, SHARED

from cli import build_parser, main
from pipeline.core import tables

STAGE_COMMANDS = ("ingest", "screen", "score", "summary")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", STAGE_COMMANDS)
def test_help_explains_every_argument(command, capsys):
    sub = _subparsers()[command]
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for action in sub._actions:
        name = action.option_strings[-1] if action.option_strings else action.metavar or action.dest
        assert name in text, f"{command} --help does not mention {name}"
        assert action.help and action.help != argparse.SUPPRESS, f"{command}: {name} has no help text"
    for common in ("--work", "--config", "--verbose"):
        assert common in text


def test_top_level_help_lists_the_stage_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(command in text for command in STAGE_COMMANDS)


def test_demo_stages_on_the_real_clips(tmp_path, capsys):
    work = str(tmp_path / "work")
    common = ["--work", work, "--config", str(DEMO / "config.toml")]
    assert main(["ingest", str(SHARED), "--pairing", str(DEMO / "pairing.csv"), *common]) == 0
    out = capsys.readouterr().out
    assert "ingest: 19 clip(s) in the manifest, 46 rejection(s): no_clip 46" in out

    assert main(["screen", "--no-visual", *common]) == 0
    out = capsys.readouterr().out
    assert "follower rule DISABLED" in out and "pixel rules" in out
    assert "12 of 19 clip(s) kept; rejected: too_long 1, too_short 6" in out

    assert main(["score", *common]) == 0
    out = capsys.readouterr().out
    assert "12 clip(s) scored" in out

    assert main(["summary", *common]) == 0
    out = capsys.readouterr().out
    assert "clips kept after screening: 12 of 19" in out
    assert "the follower rule was disabled" in out
    for line in ("ingest   no_clip", "screen   too_short", "screen   too_long"):
        assert line in out
    scores = tables.read_table(work, tables.SCORES).to_pylist()
    challenges = {row["challenge"] for row in scores}
    assert challenges == {"#dancechallenge", "#workoutchallenge", "#lipsyncchallenge"}
    for challenge in challenges:
        values = [row["score"] for row in scores if row["challenge"] == challenge]
        assert min(values) == 0.0 and max(values) == 1.0, challenge
        assert f"{challenge}" in out

    # the stored scale scores the same clips identically
    assert main(["score", "--scale", work, *common]) == 0
    assert "stored scale" in capsys.readouterr().out
    again = tables.read_table(work, tables.SCORES).to_pylist()
    assert sorted((r["clip_id"], r["score"]) for r in again) == sorted((r["clip_id"], r["score"]) for r in scores)

    # the default follower rule, without the demo configuration, rejects the sample's creator
    assert main(["screen", "--no-visual", "--work", work]) == 0
    assert "0 of 19 clip(s) kept" in capsys.readouterr().out
    screening = tables.read_table(work, tables.SCREENING).to_pylist()
    assert all("too_many_followers" in row["reasons"] for row in screening)


def test_stage_out_of_order_is_a_clear_error(tmp_path, capsys):
    assert main(["score", "--work", str(tmp_path / "empty")]) == 2
    assert "run `vdv ingest` first" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "nowhere"), "--work", str(tmp_path / "w")]) == 2
    assert "clips" in capsys.readouterr().err


def test_bad_crawl_time_option_is_a_clear_error(tmp_path, capsys):
    assert main(["ingest", str(SHARED), "--crawl-time", "last tuesday", "--work", str(tmp_path / "w")]) == 2
    assert "crawl time" in capsys.readouterr().err
