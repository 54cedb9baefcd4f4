"""Small real builds for the flow tests: sample clips of ``../shared/data`` with their crawler
records, and a configuration whose grids and sizes keep a build within seconds on two cores.

The shapes of the real pipeline are unchanged; the demo and the default configuration use the
SPEC's rates and sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# file -> (video id in the crawler sample, challenge); two static single-person clips (Kinetics),
# the rendered dancer and a runner
SAMPLE_CLIPS: dict[str, tuple[str, str]] = {
    "stgcn_ta_chi.mp4": ("6911379416308305158", "#taichi"),
    "stgcn_clean_and_jerk.mp4": ("6894714574797393158", "#taichi"),
    "tfjs_pose_1.mp4": ("6898094572598037766", "#dance"),
    "tokenflow_woman-running.mp4": ("6910708060310883589", "#dance"),
}

_HEAD = """\
[ingest]
crawl_time = "2021-01-06T15:51:49Z"  # the sample file's name stamp (SPEC section 1)

[screen]
max_followers = 0  # the sample's only creator has 398,700 followers
min_duration_s = 3.0  # tfjs_pose_1 lasts 4 s
visual = {visual}
"""

_SECTIONS = {
    "pose": "fps = {pose_fps}\nmax_side = 256",
    "holistic": "fps = 5.0\nshort_side = 64\ncrop = 64\nend_s = 2.0",
    "facial": "fps = 1.0\nmax_side = 320\ndetect_max_side = 320\nend_s = 3.0",
    "scenic": "fps = 5.0\nshort_side = 48\nwindow = 10\nhop = 5",
    "release": "group_by_uploader = false  # every record has the same uploader",
}


def sample_clips(*names: str) -> dict[str, tuple[str, str]]:
    """The named entries of :data:`SAMPLE_CLIPS`, in that order."""
    return {name: SAMPLE_CLIPS[name] for name in names}


def small_config(*sections: str, visual: str = "false", pose_fps: str = "5.0") -> str:
    """The TOML of a small build: ingest and screen (pixel rules ``visual``), then ``sections``."""
    parts = [_HEAD.format(visual=visual)]
    parts += [f"[{name}]\n{_SECTIONS[name].format(pose_fps=pose_fps)}\n" for name in sections]
    return "\n".join(parts)


def child_env(root: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a ``vdv`` command a test starts: this process's, less its Prefect and
    Dask settings, with Prefect's state under ``root/prefect``. ``api_url`` points it at a
    running Prefect server (conftest's ``prefect_server``); without it the command starts a
    temporary server of its own, as a user's first run does. ``VDV_TEST_PAUSE_IN_WRITE`` in
    ``extra`` puts ``tests/support/pause_in_write`` on its ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    env.update({"PREFECT_HOME": str(root / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING", **extra})
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if "VDV_TEST_PAUSE_IN_WRITE" in extra:
        paths = [str(ROOT / "tests" / "support" / "pause_in_write"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env
