"""Host waits of the torch path (pipeline.core.hostwaits): the counter sees every kind, and the ViBe
and BlazePose steps wait for the host once a step (their one download), whatever their clips do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.blazepose.engine import Networks, PoseEngine, TrackOptions
from pipeline.core.decode import DecodeParams, iter_samples, target_size
from pipeline.core.hostwaits import HostWaits
from pipeline.modalities.vibe import ViBeParams
from pipeline.modalities.vibe_torch import ViBeBank
from tests.conftest import SHARED_CLIPS

ONE_DOWNLOAD = {("step", "download"): 1}


def test_the_counter_sees_every_kind_of_host_wait():
    waits = HostWaits()
    with waits.counting(), waits.component("x"):
        t = torch.arange(10)
        mask = t > 4
        _ = t[mask]  # boolean mask
        t[mask] = 0  # boolean mask
        bool(t.any())  # scalar read
        t.sum().item()  # scalar read
        torch.nonzero(t)  # data-dependent shape
        torch.where(mask)  # data-dependent shape
        torch.unique(t)  # data-dependent shape
        torch.masked_select(t, mask)  # data-dependent shape
        t.cpu().numpy()  # one download
        t.tolist()  # download
        torch.where(mask, t, 0)  # none of these: shapes known, nothing read
        t.index_select(0, torch.tensor([1]))
    assert waits.counts == {
        ("x", "boolean mask"): 2,
        ("x", "scalar read"): 2,
        ("x", "data-dependent shape"): 4,
        ("x", "download"): 2,
    }
    assert not any(c == "other" for c, _ in waits.counts)


def _counted_steps(step, batches) -> list[dict]:
    """The host waits of each call ``step(*batch)``, one Counter per step."""
    out = []
    for batch in batches:
        waits = HostWaits()
        with waits.counting(), waits.component("step"):
            step(*batch)
        out.append(dict(waits.counts))
    return out


def test_a_vibe_step_waits_only_for_its_one_download():
    """Clips of two sizes, joining, initialising, with person masks, one of them reset by a
    changed scene and one re-drawing uncovered pixels: one download a step, nothing else."""
    ys, xs = np.mgrid[0:24, 0:32]
    big = np.stack([60 + 2 * xs, 70 + 2 * ys, 90 + xs + ys], axis=-1).astype(np.uint8)  # a smooth wall
    small = np.ascontiguousarray(big[:16, :20])
    person = np.zeros((24, 32), dtype=bool)
    person[4:12, 4:12] = True
    bank = ViBeBank(ViBeParams(), 0, "cpu")
    a, b, c = bank.open(), bank.open(), bank.open()
    none = np.zeros((16, 20), dtype=bool)
    batches = [
        ([a, b], [(big, person), (small, none)]),
        ([a, b, c], [(big, ~person & False), (small, none), (big, person)]),  # a: person leaves; c joins
        ([a, b, c], [(255 - big, person), (small, none), (big, person)]),  # a: the scene changed
    ]
    counted = _counted_steps(bank.step, batches)
    assert counted == [ONE_DOWNLOAD] * 3
    assert bank.clips[a].resets == 1  # the reset did happen inside a counted step


@pytest.fixture(scope="module")
def nets(blazepose_weights):
    return Networks("cpu", "float32", cache_dir=blazepose_weights)


def _frames(clip: str, n: int) -> list[np.ndarray]:
    params = DecodeParams(fps=25.0, max_side=320, end_s=n / 25.0)
    return [s.image for s in iter_samples(SHARED_CLIPS / f"{clip}.mp4", params, clip)][:n]


def test_a_blazepose_step_waits_only_for_its_one_download(nets):
    """Tracking with the mask (detector steps, tracked steps, two frame sizes, a frame with
    nobody) and the people counter's static mode: one download a step, nothing else."""
    dancer, other = _frames("hybrik_taiji", 3), _frames("stgcn_ta_chi", 3)
    empty = np.zeros_like(dancer[0])

    def size(im):
        return target_size(im.shape[1], im.shape[0], DecodeParams(short_side=128))

    engine = PoseEngine(nets, TrackOptions(segmentation=True))
    slots = [engine.open() for _ in range(3)]
    batches = [
        (slots, [dancer[i], other[i], empty if i == 1 else dancer[i]], [size(dancer[0]), size(other[0]), None])
        for i in range(3)
    ]
    results = []
    counted = _counted_steps(lambda *b: results.append(engine.step(*b)), batches)
    assert counted == [ONE_DOWNLOAD] * 3
    assert all(r[0].landmarks is not None and r[0].segmentation is not None for r in results)
    assert results[1][2].landmarks is None  # nobody in the empty frame
    assert results[0][1].segmentation.shape[::-1] == size(other[0])
    static = PoseEngine(nets, TrackOptions(static=True))
    rows = [static.open() for _ in range(2)]
    assert _counted_steps(static.step, [(rows, [dancer[0], empty])]) == [ONE_DOWNLOAD]


def test_the_scenic_path_waits_once_a_frame_in_each_step_and_nowhere_else(monkeypatch):
    """The whole scenic path of a real clip on the torch path (1 s of stgcn_ta_chi, 25 grid frames
    at a 64 px grid, the mask by torch BlazePose, the torch ViBe): one download a frame in the
    tracking BlazePose step, one in ViBe's, and the scene network's one download a batch of
    images; no wait outside the steps (the mask's resize and dilation, the windows, the glue), so a
    per-frame ``.item()`` or ``.cpu()`` that comes back fails here. BlazePose's network loads
    (weights read into tensors, once per load, not per frame) are counted apart. The process's
    batch servers are made afresh inside the count, so their threads are counted too."""
    from pipeline.core import batching
    from pipeline.modalities import scenic

    waits = HostWaits()

    def counted(method, component):
        def run(self, *args, **kwargs):
            with waits.component(component):
                return method(self, *args, **kwargs)

        return run

    monkeypatch.setattr(batching, "_SERVERS", {})
    monkeypatch.setattr(ViBeBank, "step", counted(ViBeBank.step, "vibe"))
    monkeypatch.setattr(PoseEngine, "step", counted(PoseEngine.step, "pose+mask"))
    monkeypatch.setattr(Networks, "__init__", counted(Networks.__init__, "loading"))
    waits.install()  # this thread and every thread started from here on (the servers')
    try:
        config = {"end_s": 1.0, "short_side": 64, "vibe_backend": "torch", "mask_backend": "torch"}
        extractor = scenic.MODALITY.build(config, untrained=True, device="cpu")
        seq = extractor.compute(SHARED_CLIPS / "stgcn_ta_chi.mp4", "0" * 64)
    finally:
        waits.uninstall()
    per_frame = {key: n for key, n in waits.counts.items() if key[0] != "loading"}
    assert len(seq.timestamps) == 2  # windows ending at grid frames 11 and 23
    assert per_frame == {("vibe", "download"): 25, ("pose+mask", "download"): 25, ("other", "download"): 1}
