"""Help texts stand on their own: they say what a rule does (no "SPEC section N", a file that is
not in the repository), and each default is printed once."""

from __future__ import annotations

import re

import pytest

from cli import build_parser

COMMANDS = [
    ["ingest"],
    ["screen"],
    ["score"],
    ["summary"],
    ["report"],
    ["weights"],
    ["weights", "list"],
    ["weights", "fetch"],
    ["weights", "import"],
    ["weights", "verify"],
]


def help_text(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_help_stands_alone(argv, capsys):
    text = help_text(argv, capsys)
    assert "SPEC" not in text
    assert "(default: None)" not in text
    # one default per option: split the options block at each option's first line
    options = re.split(r"\n  (?=-)", text.split("options:", 1)[-1])
    for option in options:
        assert len(re.findall(r"\bdefault\b", option)) <= 1, option


def test_screen_help_names_each_rule_and_its_threshold(capsys):
    from pipeline.screening.stage import ScreenConfig
    from pipeline.screening.visual import VisualConfig

    text = " ".join(help_text(["screen"], capsys).split())
    for rule in ("followers", "duration", "one_dancer", "upper_body_visible", "camera_motion"):
        assert rule in text
    screen, visual = ScreenConfig(), VisualConfig()
    # the numbers in the help are the configured defaults
    assert f"max_followers followers ({screen.max_followers}" in text
    assert f"{screen.min_duration_s:g} to {screen.max_duration_s:g} s" in text
    assert f"min_person_share {visual.min_person_share:g}" in text
    assert f"multi_person_share {visual.multi_person_share:g}" in text
    assert f"at least {visual.min_relative_height:g} as tall" in text
    assert f"confidence >= {visual.joint_confidence:g}" in text
    assert f"{visual.max_moving_share:.0%}".replace("%", " %") in text
    assert f"faster than {visual.max_camera_speed:g} frame diagonals" in text
    assert f"above {visual.cut_distance:g}; max_cuts {visual.max_cuts}" in text
    assert f"{visual.fps:g} sampled frames per second, at most {visual.max_frames}" in text
