"""Shared fixtures: the real data in ../shared/data (used in place) and a raw-layout builder."""

from __future__ import annotations

import atexit
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SHARED_CLIPS = SHARED / "clips"
SCRAPER_SAMPLE = SHARED / "metadata" / "tiktok_scraper_sample.json"
# the sample's original crawler file name was thebigbradwolf_1609948309033.json (SOURCES.md)
SAMPLE_CRAWL_TIME = datetime.fromtimestamp(1609948309.033, tz=UTC)
SAMPLE_FOLLOWERS = 398_700  # the sample's only creator
DEMO = ROOT / "data" / "demo"

# Prefect reads these when it first loads its settings: each test process (pytest-xdist's workers
# inherit the controller's environment) keeps its state, its temporary server's database included,
# in a folder of its own, removed at exit, and no test reaches a server the person running the tests
# has configured
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="vdv-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)  # after the server stops
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)


def pytest_collection_modifyitems(config, items) -> None:
    """Longest test files first (seconds of a full run, tests/support/file_seconds.py), each
    file's tests in their own order: the two workers of ``make test`` then end together instead
    of one running a long file alone at the end."""
    from tests.support.file_seconds import load

    seconds = load()
    first = {}
    for i, item in enumerate(items):
        first.setdefault(item.location[0], i)

    def key(item) -> tuple:
        path = item.location[0]
        return (path not in seconds, -seconds.get(path, 0.0), first[path])

    items.sort(key=key)


@pytest.fixture(autouse=True)
def prefect_console_on_a_live_stream():
    """Prefect's console log handlers keep the stream they were made with. Made during a test that
    captured stderr, that stream is closed once the test ends, and a later test's Prefect log line
    becomes a "Logging error" traceback in its stderr: point such handlers at today's stderr."""
    import logging
    import sys

    if "prefect.logging.handlers" in sys.modules:
        from prefect.logging.handlers import PrefectConsoleHandler

        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for handler in (h for lg in loggers for h in getattr(lg, "handlers", ())):
            if isinstance(handler, PrefectConsoleHandler) and getattr(handler.stream, "closed", False):
                handler.stream = sys.stderr  # not setStream: it flushes the closed one
                handler.console.file = sys.stderr
    yield


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """The API address of this test process's temporary Prefect server, the one its own flows
    run against. A test that starts a build as a subprocess, and is not about the temporary
    server's own life (tests/test_stopping.py is), points it here (``runs.child_env``) instead of
    paying a server start of its own (about 20 s on two cores)."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process's default server: started once, stopped at exit
    server.start(timeout=180)
    return server.api_url


@pytest.fixture(scope="session")
def shared() -> Path:
    """``../shared/data`` beside the repository (clips/, keypoints/, metadata/)."""
    if not SHARED_CLIPS.is_dir():
        pytest.fail(f"the real test data is missing: {SHARED}")
    return SHARED


@pytest.fixture(scope="session", autouse=True)
def decoded_cache(tmp_path_factory):
    """The training loader's decoded cache (models/decoded.py) in a folder of the session, for
    every test and the processes they start: never ``~/.cache``."""
    folder = tmp_path_factory.mktemp("decoded-cache")
    before = os.environ.get("VDV_DECODED_CACHE")
    os.environ["VDV_DECODED_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("VDV_DECODED_CACHE", None)
    else:
        os.environ["VDV_DECODED_CACHE"] = before


@pytest.fixture(scope="session")
def blazepose_weights(tmp_path_factory) -> Path:
    """A weights cache holding the torch backend's two BlazePose networks, imported once from
    the installed mediapipe wheel (no download), so tests never touch ``~/.cache``."""
    from pipeline.weights.fetch import fetch_weights

    cache = tmp_path_factory.mktemp("blazepose-weights")
    for name in ("blazepose_detector", "blazepose_landmark_full"):
        fetch_weights(name, cache_dir=cache)
    return cache


class _VisualAnalyses(dict):
    """``[(clip name, backend)]`` -> the pixel rules' analysis of that clip (default settings),
    computed once per session: test_visual's rules and the two backends' agreement share them."""

    def __init__(self, weights: Path):
        super().__init__()
        self.weights = weights

    def __missing__(self, key):
        from pipeline.blazepose.settings import TrackSettings
        from pipeline.screening.visual import VisualConfig, analyse_frames, sample_frames

        clip, backend = key
        pose = TrackSettings(backend=backend, weights_dir=str(self.weights) if backend == "torch" else None)
        frames = sample_frames(SHARED_CLIPS / f"{clip}.mp4", clip, VisualConfig())
        self[key] = analyse_frames(frames, VisualConfig(), pose=pose)
        return self[key]


@pytest.fixture(scope="session")
def visual_analyses(blazepose_weights) -> _VisualAnalyses:
    return _VisualAnalyses(blazepose_weights)


@pytest.fixture
def make_raw(tmp_path):
    """Build ``RAW_DIR/{clips,metadata}`` in tmp: ``make_raw(clips, metadata)``.

    ``clips`` maps a file name to a real clip (Path, linked, never copied into the repo) or to
    bytes (written). ``metadata`` maps a file name to rows: a list of dicts written as CSV
    (``.csv``), JSON lines (``.jsonl``) or JSON (``.json``), or to raw text/bytes.
    """

    def build(
        clips: Mapping[str, Path | bytes], metadata: Mapping[str, object] | None = None, name: str = "raw"
    ) -> Path:
        raw = tmp_path / name
        (raw / "clips").mkdir(parents=True)
        (raw / "metadata").mkdir()
        for file_name, source in clips.items():
            target = raw / "clips" / file_name
            if isinstance(source, bytes):
                target.write_bytes(source)
            else:
                os.symlink(Path(source).resolve(), target)
        for file_name, rows in (metadata or {}).items():
            target = raw / "metadata" / file_name
            if isinstance(rows, bytes):
                target.write_bytes(rows)
            elif isinstance(rows, str):
                target.write_text(rows)
            elif file_name.endswith(".csv"):
                columns = sorted({k for row in rows for k in row})
                with open(target, "w", newline="") as fh:
                    writer = csv.DictWriter(fh, columns)
                    writer.writeheader()
                    writer.writerows(rows)
            elif file_name.endswith(".jsonl"):
                target.write_text("".join(json.dumps(row) + "\n" for row in rows))
            else:
                target.write_text(json.dumps(rows))
        return raw

    return build


def write_sample_run(root: Path, clips: Mapping[str, tuple[str, str]], config: str) -> tuple[Path, Path, Path]:
    """A build's inputs under ``root``: ``raw/`` with real clips and the real metadata sample
    linked in place, ``pairing.csv`` (``clips`` maps a file name to (video id, challenge)) and
    ``config.toml``. Returns (raw dir, pairing file, config file); safe to call twice."""
    raw = root / "raw"
    (raw / "clips").mkdir(parents=True, exist_ok=True)
    (raw / "metadata").mkdir(exist_ok=True)
    links = {raw / "clips" / name: SHARED_CLIPS / name for name in clips}
    links[raw / "metadata" / SCRAPER_SAMPLE.name] = SCRAPER_SAMPLE
    for target, source in links.items():
        if not target.exists():
            os.symlink(source, target)
    pairing = root / "pairing.csv"
    pairing.write_text("file,video_id,challenge\n" + "".join(f"{f},{v},{c}\n" for f, (v, c) in clips.items()))
    config_path = root / "config.toml"
    config_path.write_text(config)
    return raw, pairing, config_path
