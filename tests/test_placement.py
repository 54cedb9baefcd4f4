"""One placement per run (pipeline/core/placement.py): the rules, the record in the work directory and
what reads it back. The flags reaching the pixel rules through a build: tests/test_flows.py."""

from __future__ import annotations

import pytest

from pipeline.core import placement as pl
from pipeline.core.runtime import DeviceError
from pipeline.extraction.stage import plan_extraction
from pipeline.modalities import registry as modalities
from pipeline.screening.visual import counter_settings


def test_the_rules_on_a_resolved_device():
    # decided from the device string alone: no GPU is needed to test the CUDA side
    pose, vibe = pl.POSE_BACKENDS, pl.VIBE_BACKENDS
    assert pl.backend_for("auto", "cuda:0", pose) == "torch" and pl.backend_for("auto", "cpu", pose) == "mediapipe"
    assert pl.backend_for("mediapipe", "cuda", pose) == "mediapipe"
    assert pl.backend_for("auto", "cuda", vibe) == "torch" and pl.backend_for("auto", "cpu", vibe) == "numpy"
    assert pl.blazepose_precision_for("bfloat16", "cuda") == "float16"
    assert pl.blazepose_precision_for("bfloat16", "cpu") == "float32"
    assert pl.blazepose_precision_for("float32", "cuda") == "float32"
    with pytest.raises(ValueError, match="backend"):
        pl.backend_for("tflite", "cpu", pose)


def test_one_value_reaches_the_counter_and_the_plan():
    config = {"pose": {"backend": "torch"}, "scenic": {"vibe_backend": "auto"}}
    assert modalities.backend_settings(config) == {"pose_backend": "torch", "vibe_backend": "auto"}
    place = pl.resolve_placement(config, "cpu", "float32", backends=modalities.backend_settings(config))
    assert place == pl.Placement("cpu", "float32", "torch", "numpy", "float32")
    counter = counter_settings(config, place)
    assert (counter.backend, counter.device, counter.precision) == ("torch", "cpu", "float32")
    plan = plan_extraction(["pose", "scenic"], config, untrained=True, placement=place)
    assert plan.placement == place
    assert plan.section("pose")["backend"] == "torch" and plan.section("scenic")["mask_backend"] == "torch"
    assert plan.section("scenic")["vibe_backend"] == "numpy"


def test_the_record_is_read_back_and_flags_win(tmp_path):
    assert pl.read_placement(tmp_path) is None
    recorded = pl.Placement("cpu", "float32", "mediapipe", "numpy", "float32")
    pl.write_placement(tmp_path, recorded, "build")
    assert pl.read_placement(tmp_path) == recorded
    assert pl.recorded_place(tmp_path, {"precision": "bfloat16", "device": "cuda"}) == ("float32", "cpu")
    assert pl.run_placement(tmp_path, {}, None, None, backends={}) == recorded
    # a configured backend follows the configuration; a flag wins over the record
    assert pl.run_placement(tmp_path, {}, "cpu", None, backends={"pose_backend": "torch"}).pose_backend == "torch"
    # a device recorded by a GPU build is not silently swapped for this machine's: one clear error
    pl.write_placement(tmp_path, pl.Placement("cuda", "bfloat16", "torch", "torch", "float16"), "build")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(DeviceError, match="recorded placement runs on cuda"):
            pl.run_placement(tmp_path, {}, None, None, backends={})
    assert pl.run_placement(tmp_path, {}, "cpu", "float32", backends={}).device == "cpu"


# -- the layout: clips in flight per process ---------------------------------------------------------


def test_cuda_defaults_fill_the_pose_batch_and_the_cpu_keeps_its_defaults():
    from flows.runners import resolve_layout

    thread = resolve_layout("thread", None, None, device="cuda", max_batch=64)
    assert (thread.workers, thread.per_process, thread.warning) == (64, 64, None)
    dask = resolve_layout("dask", None, None, device="cuda:0", max_batch=32)
    assert (dask.workers, dask.threads_per_worker, dask.per_process, dask.warning) == (1, 32, 32, None)
    cpu = resolve_layout("thread", None, None, device="cpu", max_batch=64)
    assert (cpu.workers, cpu.per_process, cpu.warning) == (2, 2, None)
    cpu_dask = resolve_layout("dask", None, None, device="cpu", max_batch=64)
    assert (cpu_dask.workers, cpu_dask.threads_per_worker) == (2, 1)
    # what the user gives is kept
    assert resolve_layout("thread", 8, None, device="cuda", max_batch=64).workers == 8
    assert resolve_layout("dask", 2, 16, device="cuda", max_batch=64).threads_per_worker == 16
    # a remote cluster sets its own threads: nothing to say
    assert resolve_layout("dask", None, None, device="cuda", max_batch=64, remote=True).warning is None


@pytest.mark.parametrize(
    ("runner", "workers", "threads", "fix"),
    [("thread", 1, None, "--workers"), ("dask", 4, 1, "--threads-per-worker"), ("process", None, None, "--runner")],
)
def test_one_clip_per_forward_on_cuda_is_said(runner, workers, threads, fix):
    from flows.runners import resolve_layout

    layout = resolve_layout(runner, workers, threads, device="cuda", max_batch=64)
    assert layout.per_process == 1 and "one clip per process" in layout.warning and fix in layout.warning
    assert resolve_layout(runner, workers, threads, device="cpu", max_batch=64).warning is None


def test_the_default_cuda_layout_fits_the_host_memory_of_a_node():
    from flows.runners import resolve_layout
    from pipeline.core.decode import host_bytes_in_flight

    per_process = resolve_layout("thread", None, None, device="cuda", max_batch=64).per_process
    one = host_bytes_in_flight(1)
    assert host_bytes_in_flight(per_process) == per_process * one  # per clip, whatever the others
    # 17 RGB samples (6,220,800 B each at 1080p) and 35 YUV pictures (3,110,400 B): 214,617,600 B a clip
    assert one == 214_617_600
    assert host_bytes_in_flight(per_process) < 32 * 2**30
