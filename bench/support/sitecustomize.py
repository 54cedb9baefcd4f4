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

# Host waits (bench/bench_host.py): with $VDV_BENCH_HOSTWAITS set, the counter of
# $VDV_BENCH_HOSTWAITS_CODE (this checkout's pipeline/core/hostwaits.py, loaded by path so that a build
# of another checkout is counted the same way) counts in every thread of the process, each step of
# BlazePose and ViBe under its component's name (BlazePose's network loads under "loading": once
# per load, not per frame), and writes the counts there (JSON) at exit.
_waits_out = os.environ.get("VDV_BENCH_HOSTWAITS")
if _waits_out:
    import atexit
    import importlib.util
    import json

    _spec = importlib.util.spec_from_file_location("vdv_bench_hostwaits", os.environ["VDV_BENCH_HOSTWAITS_CODE"])
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    _counter = _module.HostWaits()
    _frames = {"vibe_rows": 0, "pose_rows": 0, "people_rows": 0}

    def _wrap(cls, component, rows_key):
        real = cls.step

        def step(self, slots, *args, **kwargs):
            name = component(self) if callable(component) else component
            key = rows_key(self) if callable(rows_key) else rows_key
            _frames[key] += len(slots)
            with _counter.component(name):
                return real(self, slots, *args, **kwargs)

        cls.step = step

    def _wrap_load(cls):
        real = cls.__init__

        def init(self, *args, **kwargs):
            with _counter.component("loading"):  # once per network load, not per frame
                real(self, *args, **kwargs)

        cls.__init__ = init

    try:
        from pipeline.blazepose.engine import Networks, PoseEngine
        from pipeline.modalities.vibe_torch import ViBeBank

        _wrap_load(Networks)

        _wrap(ViBeBank, "vibe", "vibe_rows")
        _static = lambda engine: engine.options.static  # noqa: E731
        _wrap(
            PoseEngine,
            lambda e: "pixel rules" if _static(e) else "pose+mask",
            lambda e: "people_rows" if _static(e) else "pose_rows",
        )
    except ImportError:
        pass
    _counter.install()

    @atexit.register
    def _write_waits():
        record = {
            "pid": os.getpid(),
            "counts": [[c, k, n] for (c, k), n in _counter.counts.items()],
            "ops": dict(_counter.ops),
            **_frames,
        }
        with open(_waits_out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


# Host waits on a GPU (bench/gpu_node.sh): with $VDV_BENCH_SYNCS set, the process runs under
# torch.cuda.set_sync_debug_mode("warn") and prints at exit how many synchronising CUDA calls it
# made, and where the most came from.
if os.environ.get("VDV_BENCH_SYNCS"):
    import atexit
    import collections
    import sys
    import warnings

    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("warn")
            _syncs = collections.Counter()
            _show = warnings.showwarning

            def _count(message, category, filename, lineno, file=None, line=None):
                if "synchroniz" in str(message):
                    _syncs[f"{filename}:{lineno}"] += 1
                    return
                _show(message, category, filename, lineno, file, line)

            warnings.showwarning = _count
            warnings.filterwarnings("always", message=".*synchroniz.*")

            @atexit.register
            def _print_syncs():
                top = ", ".join(f"{where} {n}" for where, n in _syncs.most_common(5))
                print(f"host waits (CUDA syncs) in {sys.argv[0]}: {sum(_syncs.values())}; most at {top}", flush=True)
    except ImportError:
        pass
