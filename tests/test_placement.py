"""One placement per run (pipeline/placement.py): the rules, the record in the work directory and
what reads it back. The flags reaching the pixel rules through a build: tests/test_flows.py."""

from __future__ import annotations

import pytest

from pipeline import placement as pl
from pipeline.extraction import plan_extraction
from pipeline.runtime import DeviceError
from pipeline.visual import counter_settings


def test_the_rules_on_a_resolved_device():
    # decided from the device string alone: no GPU is needed to test the CUDA side
    assert pl.pose_backend_for("auto", "cuda:0") == "torch" and pl.pose_backend_for("auto", "cpu") == "mediapipe"
    assert pl.pose_backend_for("mediapipe", "cuda") == "mediapipe"
    assert pl.vibe_backend_for("auto", "cuda") == "torch" and pl.vibe_backend_for("auto", "cpu") == "numpy"
    assert pl.blazepose_precision_for("bfloat16", "cuda") == "float16"
    assert pl.blazepose_precision_for("bfloat16", "cpu") == "float32"
    assert pl.blazepose_precision_for("float32", "cuda") == "float32"
    with pytest.raises(ValueError, match="backend"):
        pl.pose_backend_for("tflite", "cpu")


def test_one_value_reaches_the_counter_and_the_plan():
    config = {"pose": {"backend": "torch"}, "scenic": {"vibe_backend": "auto"}}
    place = pl.resolve_placement(config, "cpu", "float32")
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
    assert pl.run_placement(tmp_path, {}, None, None) == recorded
    # a configured backend follows the configuration; a flag wins over the record
    assert pl.run_placement(tmp_path, {"pose": {"backend": "torch"}}, "cpu", None).pose_backend == "torch"
    # a device recorded by a GPU build is not silently swapped for this machine's: one clear error
    pl.write_placement(tmp_path, pl.Placement("cuda", "bfloat16", "torch", "torch", "float16"), "build")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(DeviceError, match="recorded placement runs on cuda"):
            pl.run_placement(tmp_path, {}, None, None)
    assert pl.run_placement(tmp_path, {}, "cpu", "float32").device == "cpu"
