"""Dask worker preload for tests: a worker that is given a clip whose file name starts with
``die-`` records its pid and dies at once (as a worker killed by the kernel's OOM killer would).

Loaded only by ``tests/test_dask.py`` through ``LocalCluster(preload=[...])``; nothing in the
package knows about it.
"""

import os
from pathlib import Path

from pipeline import extraction

_real = extraction.extract_clip


def _dying(clip, *args, **kwargs):
    path = Path(clip["path"])
    if path.name.startswith("die-"):
        with open(path.parent.parent / "deaths.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        os._exit(1)
    return _real(clip, *args, **kwargs)


extraction.extract_clip = _dying
