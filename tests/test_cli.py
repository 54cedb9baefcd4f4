"""The ``vdv`` command line as a whole: every subcommand is reachable and explains itself."""

from __future__ import annotations

import argparse
import subprocess
import sys

from cli import build_parser


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ("vdv",)):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*prefix, name))


def test_every_argument_of_every_subcommand_has_help():
    undocumented = [
        (" ".join(path), action.option_strings or action.dest)
        for path, parser in _subcommands(build_parser())
        for action in parser._actions
        if action.help is None and not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
    ]
    assert undocumented == []


def test_the_expected_commands_are_registered():
    names = {path[1] for path, _ in _subcommands(build_parser()) if len(path) == 2}
    expected = {"ingest", "screen", "score", "summary", "extract", "weights", "models", "train", "evaluate"}
    expected |= {"feedback", "build", "reextract", "release"}
    assert expected <= names


def test_console_help_is_fast_and_lists_the_stages():
    # --help must not import torch or mediapipe: it runs in a fresh interpreter
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from cli import main; main(['--help'])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert "ingest" in out.stdout and "build" in out.stdout and "release" in out.stdout
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('torch', 'mediapipe', 'prefect') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and check.stdout.strip() == ""
