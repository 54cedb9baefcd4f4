"""Holds a write open so that a test can kill the process mid-write (``tests/test_crash.py``).

Put this directory on ``PYTHONPATH`` of a child process. When ``$VDV_TEST_PAUSE_IN_WRITE`` names
a marker file, the first ``os.replace`` whose destination contains ``$VDV_TEST_PAUSE_MATCH``
writes its source (the hidden temporary file of ``pipeline.core.tables.atomic_write``) to the marker
and sleeps for ``$VDV_TEST_PAUSE_SECONDS`` (default 120) before renaming.
"""

import os
import time

_MARKER = os.environ.get("VDV_TEST_PAUSE_IN_WRITE")
_MATCH = os.environ.get("VDV_TEST_PAUSE_MATCH", "")

if _MARKER:
    _replace = os.replace

    def _paused_replace(src, dst, *args, **kwargs):
        if _MATCH in os.fspath(dst):
            with open(_MARKER, "w") as fh:
                fh.write(os.fspath(src))
            time.sleep(float(os.environ.get("VDV_TEST_PAUSE_SECONDS", "120")))
        return _replace(src, dst, *args, **kwargs)

    os.replace = _paused_replace
