"""The progress helper: a bar with a rate and an estimate on a terminal, log lines printed above
it instead of through it, and nothing at all off a terminal or under ``CI=true``."""

from __future__ import annotations

import io
import logging
import re

from pipeline.core.progress import progress, progress_enabled, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_enabled_only_on_a_terminal_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert progress_enabled(Terminal())
    assert not progress_enabled(io.StringIO())
    for value in ("true", "TRUE", "1"):
        monkeypatch.setenv("CI", value)
        assert not progress_enabled(Terminal())
    monkeypatch.setenv("CI", "false")
    assert progress_enabled(Terminal())


def test_bar_shows_count_rate_and_estimate(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    out = Terminal()
    assert list(track(range(5), "pose", unit="clip", stream=out)) == [0, 1, 2, 3, 4]
    text = out.getvalue()
    assert "pose" in text and "5/5" in text
    assert re.search(r"clip/s|s/clip", text)  # the rate
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", text)  # elapsed < remaining


def test_log_lines_do_not_break_the_bar(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    out = Terminal()
    monkeypatch.setattr("sys.stderr", out)
    handler = logging.StreamHandler(out)  # a console handler on stderr, as `vdv -v` installs
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with progress(3, "scenic", stream=out) as bar:
            for i in range(3):
                logging.getLogger("pipeline.test").warning("missing shard %d", i)
                bar.update()
    finally:
        root.removeHandler(handler)
    # every record is a whole line of its own: the bar was cleared, the line written, the bar redrawn
    lines = re.split(r"[\r\n]", out.getvalue())
    for i in range(3):
        assert f"missing shard {i}" in lines
    # after the bar closes the handler writes to the stream directly again
    assert handler.stream is out


def test_quiet_off_a_terminal(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    out = io.StringIO()
    with progress(3, "facial", stream=out) as bar:
        bar.update(3)
    assert out.getvalue() == ""
    monkeypatch.setenv("CI", "true")
    out = Terminal()
    assert list(track([1, 2], "holistic", stream=out)) == [1, 2]
    assert out.getvalue() == ""
