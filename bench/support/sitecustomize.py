"""Benchmark instrumentation (never installed): counts ``av.open`` calls per file in every process.

``bench/bench_build.py`` puts this directory first on ``PYTHONPATH`` of the builds it times, so
that the probe's child process and Dask workers are counted too. Each open appends
``<pid> <path>`` to the file named by ``$VDV_BENCH_OPENS``.
"""

import os

_log = os.environ.get("VDV_BENCH_OPENS")
if _log:
    try:
        import av

        _real_open = av.open

        def _counting_open(file, *args, **kwargs):
            with open(_log, "a", encoding="utf-8") as fh:
                fh.write(f"{os.getpid()} {file}\n")
            return _real_open(file, *args, **kwargs)

        av.open = _counting_open
    except ImportError:
        pass
