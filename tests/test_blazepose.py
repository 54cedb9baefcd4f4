"""BlazePose in torch: its networks against TFLite's own interpreter, its graph against mediapipe.

- Layer check: on the same real input tensors (a letterboxed frame, a rotated landmark crop),
  every output of the torch networks equals ``ai_edge_litert``'s in float32 to 1e-4 in the
  units the graph reads them in (landmarks and boxes divided by the input size, scores,
  visibility, presence, segmentation and heatmap through their sigmoid). The raw outputs are
  checked against their own magnitude, to 2e-4 of it: they reach hundreds (segmentation logits
  up to 1,700), where float32 after a hundred layers is only that close. Measured on these
  inputs: TFLite's own two kernels (XNNPACK and reference) differ by 5e-5 of the magnitude, and
  each of them and torch differs from the same graph in float64 by 4e-5 to 1.3e-4.
- Agreement: on the clips with one person, the tracking graph against ``mp.solutions.pose``
  (what the mediapipe backend runs) on the pose grid (25 fps, 640 px): PCK@0.05 of torso size,
  whether a person is found, and the person mask's IoU at scenic's threshold on scenic's grid.
- Batch independence: a clip's landmarks do not depend on which clips shared its steps.

Each clip contributes its first ``FRAMES`` grid frames: tracking, re-detection after a lost
track and the filters' warm-up all happen within them, and the whole module stays about a minute.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pipeline.blazepose import calculators as calc
from pipeline.blazepose.backends import BlazePose, model_path
from pipeline.blazepose.engine import Networks, PoseEngine
from pipeline.blazepose.settings import TrackOptions
from pipeline.core.decode import DecodeParams, iter_samples, target_size
from pipeline.core.errors import WeightsError
from pipeline.modalities.scenic import resized
from pipeline.weights import cache, fetch, registry
from tests.conftest import ROOT, SHARED_CLIPS

# every sample clip with one person in view (SOURCES.md; pose2sim has a bystander)
ONE_PERSON = [
    "musepose_dance",
    "hybrik_taiji",
    "stgcn_ta_chi",
    "stgcn_clean_and_jerk",
    "tfjs_pose_1",
    "tfjs_pose_squats",
    "mmhuman3d_single_person_demo",
    "controlvideo_moonwalk",
    "tuneavideo_man-surfing",
    "tokenflow_woman-running",
    "liveportrait_d18_face",
    "liveportrait_d19_face",
]
FRAMES = 40
GRID = DecodeParams(fps=25.0, max_side=640)  # the pose grid ([pose] fps, max_side)
MASK_SHORT_SIDE = 256  # scenic's short_side; the mask is compared where scenic thresholds it
MASK_THRESHOLD = 0.5  # [scenic] mask_threshold


@pytest.fixture(scope="module")
def weights_dir(blazepose_weights):
    return blazepose_weights


@pytest.fixture(scope="module")
def nets(weights_dir):
    return Networks("cpu", "float32", cache_dir=weights_dir)


def test_an_empty_cache_is_filled_from_the_wheel(tmp_path, blazepose_weights):
    """Without the networks in its cache, the engine imports them from the mediapipe wheel; an
    import anywhere gives the same file (its sha256 is every torch pose shard's weights identity)."""
    loaded = Networks("cpu", "float32", cache_dir=tmp_path)
    assert loaded.landmark_sha256 == cache.verify_weights("blazepose_landmark_full", cache_dir=tmp_path)
    assert cache.status("blazepose_detector", cache_dir=tmp_path) == "ok"
    for name in ("blazepose_detector", "blazepose_landmark_full"):
        assert (
            cache.read_lock(name, cache_dir=tmp_path)["sha256"]
            == cache.read_lock(name, cache_dir=blazepose_weights)["sha256"]
        )


@pytest.fixture(scope="module")
def frames():
    return {
        clip: [s.image for s in iter_samples(SHARED_CLIPS / f"{clip}.mp4", GRID, clip) if s.index < FRAMES]
        for clip in ONE_PERSON
    }


def _mask_size(image: np.ndarray) -> tuple[int, int]:
    return target_size(image.shape[1], image.shape[0], DecodeParams(short_side=MASK_SHORT_SIDE))


@pytest.fixture(scope="module")
def reference(frames):
    """mediapipe's tracking BlazePose on each clip: landmarks, and the mask at scenic's size, as
    the mediapipe backend runs it: without the two options modules mp.solutions never imports."""
    import sys

    from pipeline.blazepose.backends import _OPTIONS_MEDIAPIPE_DROPS

    assert not [m for m in _OPTIONS_MEDIAPIPE_DROPS if m in sys.modules], "a test imported them: mediapipe changed"
    out = {}
    for clip, images in frames.items():
        with BlazePose(TrackOptions(segmentation=True)) as pose:
            tracked = [pose.process(image) for image in images]
        out[clip] = [
            (t.landmarks, None if t.segmentation is None else resized(t.segmentation, _mask_size(im)))
            for t, im in zip(tracked, images, strict=True)
        ]
    return out


def _run_together(nets, frames, options, start_every: int = 1):
    """Every clip on one engine, clip k starting at step k * ``start_every``: the batches grow and
    shrink, and each holds a different mix of clips. Returns each clip's results."""
    engine = PoseEngine(nets, options, capacity=2)  # grows while clips open
    clips = list(frames)
    slots: dict[str, int] = {}
    results: dict[str, list] = {clip: [] for clip in clips}
    step = 0
    while any(len(results[c]) < len(frames[c]) for c in clips):
        active = []
        for k, clip in enumerate(clips):
            if step >= k * start_every and len(results[clip]) < len(frames[clip]):
                if clip not in slots:
                    slots[clip] = engine.open()
                active.append(clip)
        images = [frames[c][len(results[c])] for c in active]
        sizes = [_mask_size(im) for im in images]
        for clip, result in zip(active, engine.step([slots[c] for c in active], images, sizes), strict=True):
            results[clip].append(result)
        step += 1
    return results


@pytest.fixture(scope="module")
def batched(nets, frames):
    return _run_together(nets, frames, TrackOptions(segmentation=True))


def _agreement(reference, results) -> dict:
    """Per clip: frames, frames where both found the person, found-agreement, PCK@0.05 hits, mask IoUs."""
    out = {}
    for clip, ref in reference.items():
        hits, ious, same = [], [], 0
        for (ref_lm, ref_mask), mine in zip(ref, results[clip], strict=True):
            same += (ref_lm is None) == (mine.landmarks is None)
            if ref_lm is None or mine.landmarks is None:
                continue
            torso = np.hypot(*(ref_lm[11, :2] - ref_lm[24, :2]))  # left shoulder to right hip
            hits.append(np.hypot(*(ref_lm[:, :2] - mine.landmarks[:, :2]).T) <= 0.05 * torso)
            if ref_mask is not None and mine.segmentation is not None:
                a, b = ref_mask > MASK_THRESHOLD, mine.segmentation > MASK_THRESHOLD
                if (a | b).any():
                    ious.append((a & b).sum() / (a | b).sum())
        out[clip] = {"frames": len(ref), "both": len(hits), "same": same, "hits": hits, "ious": ious}
    return out


def _summary(agreement: dict) -> tuple[float, float, list[float]]:
    frames = sum(a["frames"] for a in agreement.values())
    same = sum(a["same"] for a in agreement.values())
    hits = np.concatenate([np.concatenate(a["hits"]) for a in agreement.values() if a["hits"]])
    ious = [iou for a in agreement.values() for iou in a["ious"]]
    for clip, a in agreement.items():
        pck = np.concatenate(a["hits"]).mean() if a["hits"] else float("nan")
        iou = f", mask IoU {np.mean(a['ious']):.4f}" if a["ious"] else ""
        print(f"{clip}: {a['both']}/{a['frames']} frames both, PCK@0.05 {pck:.4f}{iou}")
    return same / frames, float(hits.mean()), ious


# -- the networks --------------------------------------------------------------------------


def _litert(name: str, x: np.ndarray, *, reference_kernels: bool = False) -> dict[str, np.ndarray]:
    """TFLite's interpreter on ``x``: its default (XNNPACK) kernels, or its reference kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kernels = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
    interpreter = Interpreter(model_path=str(registry.get_spec(name).bundled()), experimental_op_resolver_type=kernels)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.astype(np.float32))
    interpreter.invoke()
    return {o["name"]: interpreter.get_tensor(o["index"]).copy() for o in interpreter.get_output_details()}


def _torch(nets: Networks, net, x: np.ndarray) -> dict[str, np.ndarray]:
    out = nets.run(net, torch.from_numpy(x).permute(0, 3, 1, 2))
    return {k: (v.permute(0, 2, 3, 1) if v.ndim == 4 else v).numpy() for k, v in out.items()}


def _real_inputs(frames) -> tuple[np.ndarray, np.ndarray]:
    """A letterboxed frame as the detector sees it, and the landmark crop its detection gives."""
    image = frames["hybrik_taiji"][0]
    batch = torch.from_numpy(image)[None].permute(0, 3, 1, 2).float()
    box, _ = calc.letterbox(image.shape[1], image.shape[0])
    det = calc.crop(batch, torch.as_tensor(box[None]), calc.DETECTOR_SIZE, "zeros") * (2 / 255) - 1
    roi = np.array([[image.shape[1] * 0.5, image.shape[0] * 0.55, image.shape[0] * 0.8, 0.1]])
    crop = calc.crop(batch, torch.as_tensor(roi), calc.CROP_SIZE, "border") / 255
    return det.permute(0, 2, 3, 1).numpy(), crop.permute(0, 2, 3, 1).numpy()


def _decoded(name: str, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs in the units the graph reads them in (see the module docstring)."""
    sig = lambda v: 1 / (1 + np.exp(-np.clip(v.astype(np.float64), -calc.SCORE_CLIP, calc.SCORE_CLIP)))  # noqa: E731
    if name == "blazepose_detector":
        return {"boxes": out["Identity"] / calc.DETECTOR_SIZE, "scores": sig(out["Identity_1"])}
    lm = out["Identity"].reshape(-1, calc.NUM_LANDMARKS, 5)
    return {
        "landmarks": lm[..., :3] / calc.CROP_SIZE,
        "visibility": sig(lm[..., 3:]),
        "pose_flag": out["Identity_1"],
        "segmentation": sig(out["Identity_2"]),
        "heatmap": sig(out["Identity_3"]),
        "world": out["Identity_4"],
    }


@pytest.mark.parametrize("name", ["blazepose_detector", "blazepose_landmark_full"])
def test_networks_equal_tflite_s_interpreter(nets, frames, name):
    """Every output to 1e-4 in the graph's units, but the segmentation probability: its decoder
    (8 channels at 256 x 256, logits to 1,700) amplifies float32 rounding, so that TFLite's own
    two kernels differ there by 3.7e-4 on this crop. There the bound is three times that
    difference (torch: 7.3e-4 with two threads, 7.5e-4 with one) and the same mask at scenic's
    threshold."""
    det_input, crop_input = _real_inputs(frames)
    x = det_input if name == "blazepose_detector" else crop_input
    want = _litert(name, x)
    got = _torch(nets, nets.detector if name == "blazepose_detector" else nets.landmark, x)
    assert set(got) == set(want)
    for key in want:
        scale = float(np.abs(want[key]).max())
        err = float(np.abs(got[key] - want[key]).max())
        print(f"{name} {key}: max |raw| {scale:.3g}, max error {err:.3g} ({err / max(scale, 1):.2g} of it)")
        assert err <= 2e-4 * max(scale, 1.0), key
    tflite_itself = _decoded(name, _litert(name, x, reference_kernels=True))
    want, got = _decoded(name, want), _decoded(name, got)
    for key in want:
        err = float(np.abs(got[key] - want[key]).max())
        own = float(np.abs(tflite_itself[key] - want[key]).max())
        print(f"{name} {key} (decoded): max error {err:.3g}; TFLite's reference kernels against its default {own:.3g}")
        if key == "segmentation":
            assert err <= max(1e-4, 3 * own) and err <= 1e-3
            assert np.array_equal(got[key] > MASK_THRESHOLD, want[key] > MASK_THRESHOLD)
        else:
            assert err <= 1e-4, key


def test_weights_come_from_the_wheel_verified(weights_dir, nets):
    """The cache holds both networks as tensors with their sha256 recorded, from the pinned files."""
    for name in ("blazepose_detector", "blazepose_landmark_full"):
        lock = cache.read_lock(name, cache_dir=weights_dir)
        assert lock["source_verified"] and lock["source_sha256"] == registry.get_spec(name).source_sha256
        assert cache.verify_weights(name, cache_dir=weights_dir) == lock["sha256"]
    assert nets.landmark_sha256 == cache.read_lock("blazepose_landmark_full", cache_dir=weights_dir)["sha256"]


def test_a_changed_cached_file_stops_the_load_naming_the_fix(tmp_path, weights_dir):
    import shutil

    for suffix in (".safetensors", ".lock.json"):
        shutil.copy(weights_dir / f"blazepose_detector{suffix}", tmp_path / f"blazepose_detector{suffix}")
    data = bytearray((tmp_path / "blazepose_detector.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "blazepose_detector.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="vdv weights fetch blazepose_detector"):
        Networks("cpu", "float32", cache_dir=tmp_path)


def test_another_graph_is_refused(tmp_path):
    """A .tflite that is not one of the two BlazePose graphs never reaches the cache."""
    other = model_path().parents[1] / "selfie_segmentation" / "selfie_segmentation.tflite"
    with pytest.raises(WeightsError, match="sha256"):
        fetch.import_weights("blazepose_detector", other, cache_dir=tmp_path)
    with pytest.raises(WeightsError):
        fetch.import_weights("blazepose_detector", other, cache_dir=tmp_path, allow_other_source=True)
    assert cache.status("blazepose_detector", cache_dir=tmp_path) == "missing"


# -- the graph's constants against the wheel's own graph ------------------------------------


def _option(text: str, key: str) -> str:
    found = re.findall(rf"\b{key}: ([^\n]+)", text)
    assert found, (key, text)
    return found[0].strip().strip('"')


def test_the_graph_s_constants_are_the_wheel_s():
    """Each constant of ``calculators`` against the subgraph the installed wheel runs (read from
    its native library, in a child process; the wheel has no graph text). One difference: the
    heatmap kernel is 9 where the graph says 7, as mp.solutions runs it (tests below)."""
    from tests.support.mediapipe_graphs import node_texts

    detection = dict(node_texts("PoseDetectionCpu"))
    tensor = detection["ImageToTensorCalculator"]
    assert int(_option(tensor, "output_tensor_width")) == calc.DETECTOR_SIZE
    assert _option(tensor, "border_mode") == "BORDER_ZERO" and "min: -1" in tensor
    anchors = detection["SsdAnchorsCalculator"]
    assert tuple(int(v) for v in re.findall(r"strides: (\d+)", anchors)) == calc.ANCHOR_STRIDES
    assert len(calc.ssd_anchors()) == int(_option(detection["TensorsToDetectionsCalculator"], "num_boxes"))
    decode = detection["TensorsToDetectionsCalculator"]
    assert float(_option(decode, "score_clipping_thresh")) == calc.SCORE_CLIP
    assert float(_option(decode, "x_scale")) == calc.DETECTOR_SIZE and _option(decode, "reverse_output_order") == "true"
    assert int(_option(decode, "num_keypoints")) == calc.NUM_KEYPOINTS
    nms = detection["NonMaxSuppressionCalculator"]
    assert float(_option(nms, "min_suppression_threshold")) == calc.NMS_IOU and _option(nms, "algorithm") == "WEIGHTED"
    for roi_graph in ("PoseDetectionToRoi", "PoseLandmarksToRoi"):
        nodes = dict(node_texts(roi_graph))
        angle = float(_option(nodes["AlignmentPointsRectsCalculator"], "rotation_vector_target_angle_degrees"))
        assert np.radians(angle) == pytest.approx(calc.ROI_TARGET_ANGLE)
        rect = nodes["RectTransformationCalculator"]
        assert float(_option(rect, "scale_x")) == float(_option(rect, "scale_y")) == calc.ROI_SCALE
    crop = dict(node_texts("PoseLandmarkByRoiCpu"))["ImageToTensorCalculator"]
    assert int(_option(crop, "output_tensor_width")) == calc.CROP_SIZE and "border_mode" not in crop  # replicate
    tensors = node_texts("TensorsToPoseLandmarksAndSegmentation")
    landmarks = [t for c, t in tensors if c == "TensorsToLandmarksCalculator"]
    assert all(int(_option(t, "num_landmarks")) == calc.NUM_LANDMARKS for t in landmarks)
    refine = dict(tensors)["RefineLandmarksFromHeatmapCalculator"]
    assert int(_option(refine, "kernel_size")) == 7 and calc.HEATMAP_KERNEL == 9  # the documented difference
    filtering = node_texts("PoseLandmarkFiltering")
    euro = [
        tuple(float(_option(t, k)) for k in ("min_cutoff", "beta", "derivate_cutoff"))
        for c, t in filtering
        if "one_euro_filter" in t and "disable_value_scaling" not in t
    ]
    assert calc.LANDMARK_FILTER in euro and calc.AUX_FILTER in euro
    assert {float(v) for _, t in filtering for v in re.findall(r"alpha: ([\d.]+)", t)} == {calc.VISIBILITY_ALPHA}


# -- the graph against mediapipe -----------------------------------------------------------


def test_landmarks_and_masks_agree_with_mediapipe(reference, batched):
    """Targets: PCK@0.05 >= 0.95, the same person-found decision in >= 98 % of frames, mask IoU
    >= 0.95 (measured: PCK 0.99, 100 %, IoU 0.99; the margins are about 0.04, 2 % and 0.04)."""
    found_agreement, pck, ious = _summary(_agreement(reference, batched))
    print(
        f"found agreement {found_agreement:.4f}, PCK@0.05 {pck:.4f}, mask IoU mean {np.mean(ious):.4f} min {min(ious):.3f}"
    )
    assert found_agreement >= 0.98
    assert pck >= 0.95
    assert np.mean(ious) >= 0.95


def test_importing_an_options_module_changes_mediapipe_and_the_backend_says_so():
    """The reason for HEATMAP_KERNEL = 9 (calculators' comment), shown in a fresh process:
    importing the heatmap refinement's options module moves mediapipe's landmarks, and the
    mediapipe backend warns when it finds it imported."""
    import subprocess
    import sys

    code = """
import logging, sys, numpy as np
from pipeline.core.decode import DecodeParams, iter_samples
from pipeline.blazepose.backends import BlazePose
from tests.conftest import ROOT, SHARED_CLIPS
frames = [s.image for s in iter_samples(SHARED_CLIPS / "stgcn_ta_chi.mp4", DecodeParams(fps=25, max_side=640)) if s.index < 12]
def run():
    with BlazePose() as pose:
        return [pose.process(f).landmarks for f in frames]
plain = run()
import mediapipe.calculators.util.refine_landmarks_from_heatmap_calculator_pb2
logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
moved = run()
print("MOVED", max(float(np.abs(a - b).max()) for a, b in zip(plain, moved)))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    moved = float(done.stdout.split("MOVED")[1])
    print(f"mediapipe's landmarks move by {moved:.2f} px once the options module is imported")
    assert moved > 1.0 and "heatmap kernel 7" in done.stdout


def test_the_graph_s_own_choices_are_mediapipe_s(nets, frames, reference):
    """Where mediapipe as its Python API runs it departs from its graph, the engine follows it: the
    heatmap refinement kernel is 9 (the graph says 7), and the mask is not blended with the
    previous one. Kernel 7 loses PCK on the same frames, which shows this test can tell them apart."""
    subset = {clip: frames[clip] for clip in ("stgcn_ta_chi", "tuneavideo_man-surfing", "tokenflow_woman-running")}
    ref = {clip: reference[clip] for clip in subset}
    _, pck9, _ = _summary(_agreement(ref, _run_together(nets, subset, TrackOptions())))
    kernel = calc.HEATMAP_KERNEL
    try:
        calc.HEATMAP_KERNEL = 7
        _, pck7, _ = _summary(_agreement(ref, _run_together(nets, subset, TrackOptions())))
    finally:
        calc.HEATMAP_KERNEL = kernel
    print(f"PCK@0.05 kernel 9: {pck9:.4f}, kernel 7: {pck7:.4f}")
    assert pck9 > pck7 + 0.01


def test_float16_the_gpu_s_precision_agrees_too(weights_dir, frames, reference, monkeypatch):
    """float16, the torch backend's precision on CUDA, as the GPU computes it: weights and every
    activation stored in float16, each operator accumulating in float32 (cuDNN's and cuBLAS's
    half-precision convolutions do). This CPU has no fast float16 convolution (1.6 frames/s), so
    the storage is emulated: each operator's inputs and output are rounded to float16."""
    nets16 = Networks("cpu", "float32", cache_dir=weights_dir)
    for net in (nets16.detector, nets16.landmark):
        for p in net.parameters():
            p.data = p.data.half().float()
        run = net._run
        monkeypatch.setattr(
            net, "_run", lambda k, op, xs, run=run: run(k, op, [x.half().float() for x in xs]).half().float()
        )
    subset = {clip: frames[clip] for clip in ("stgcn_ta_chi", "tuneavideo_man-surfing", "musepose_dance")}
    ref = {clip: reference[clip] for clip in subset}
    found_agreement, pck, _ = _summary(_agreement(ref, _run_together(nets16, subset, TrackOptions())))
    print(f"float16: found agreement {found_agreement:.4f}, PCK@0.05 {pck:.4f}")
    assert found_agreement >= 0.98 and pck >= 0.95


def test_a_clip_s_landmarks_do_not_depend_on_its_batches(nets, frames, batched):
    """hybrik_taiji alone, and inside the batches of every clip (clips joining at every step)."""
    engine = PoseEngine(nets, TrackOptions(segmentation=True))
    slot = engine.open()
    images = frames["hybrik_taiji"]
    alone = [engine.step([slot], [im], [_mask_size(im)])[0] for im in images]
    shared = batched["hybrik_taiji"]
    assert [a.landmarks is None for a in alone] == [b.landmarks is None for b in shared]
    worst = max(
        float(np.abs(a.landmarks - b.landmarks).max())
        for a, b in zip(alone, shared, strict=True)
        if a.landmarks is not None
    )
    mask = max(
        float(np.abs(a.segmentation - b.segmentation).max())
        for a, b in zip(alone, shared, strict=True)
        if a.segmentation is not None
    )
    print(f"largest difference alone against batched: {worst:.2e} px, mask {mask:.2e}")
    assert worst <= 1e-4 and mask <= 1e-4
