"""The modality registry's contract, checked for every registered modality, and a toy sixth one.

Every record of :mod:`pipeline.modalities.registry` must: build with ``--untrained``, be described without
loading a network to the same identity, extract one real clip, write a shard whose schema and
width are the record's and whose rate is its grid's, be read by :mod:`models.data` at the frames
its span gives, and feed a fusion stream. A new modality gets these tests by being registered.

The toy modality (``tests/support/brightness.py``: mean brightness, a person found, a tiny network)
is one new module plus one registry entry, with a configuration section, a network of its own in
the weights registry and the tracking BlazePose it shares with pose; it goes through ``vdv
extract``, a release and a training step, and is removed again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import data as model_data
from models.fusion import MultiModalConfig, MultiModalModel
from pipeline.core import tables
from pipeline.core.decode import DecodeParams, iter_samples
from pipeline.extraction import stage as extraction
from pipeline.modalities import registry as modalities
from pipeline.modalities.features import FeatureExtractor, shard_dim
from pipeline.weights.registry import REGISTRY
from tests.support import brightness

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIP_ID = "e" * 64
SMALL_STREAMS = {"psgcn": {"channels": (4, 8, 8)}, "rtcn": {"channels": (4, 4, 4, 4, 8, 8), "heads": 2}}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The first second of a real clip (tai chi, 340 x 256), encoded as a clip of its own."""
    import av

    frames = [s.image for s in iter_samples(SHARED / "clips" / "stgcn_ta_chi.mp4", DecodeParams(fps=25, end_s=1.0))]
    out = tmp_path_factory.mktemp("clip") / "ta_chi_1s.mp4"
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return out


def _score(work: Path, clip_ids: list[str]) -> None:
    rows = [
        {
            "clip_id": cid,
            "video_id": cid[:8],
            "challenge": "c",
            "existing_days": 1.0,
            "raw_score": i,
            "score": i / max(1, len(clip_ids) - 1),
            "out_of_scale": False,
            "degenerate_challenge": False,
        }
        for i, cid in enumerate(clip_ids)
    ]
    tables.replace_table(rows, tables.SCORES, work)


def _fusion_of(name: str, dim: int) -> MultiModalModel:
    torch.manual_seed(0)
    dims = {name: dim} if modalities.get(name).stream == "sequence" else {}
    return MultiModalModel(MultiModalConfig(streams=(name,), dims=dims, fusion_hidden=4, **SMALL_STREAMS)).eval()


@pytest.mark.parametrize("name", modalities.names())
def test_every_record_is_complete(name: str) -> None:
    record = modalities.get(name)
    assert record in modalities.registered() and modalities.canonical(name) == name
    assert record.config().__class__ is record.config and record.section({}) == record.config()
    assert record.default_rate() > 0 and record.dim > 0 and record.span_s > 0
    assert set(record.networks) <= set(REGISTRY), "a network the weights registry does not describe"
    assert record.stream in ("skeleton", "sequence")


@pytest.mark.slow
@pytest.mark.parametrize("name", modalities.names())
def test_every_modality_extracts_a_real_clip_that_the_models_read(name: str, clip: Path, tmp_path: Path) -> None:
    record = modalities.get(name)
    plan = extraction.plan_extraction([name], {}, untrained=True, device="cpu", precision="float32")
    (extractor,) = extraction.load_extractors(plan).values()
    assert isinstance(extractor, FeatureExtractor)
    assert (extractor.modality, extractor.dim) == (record.name, record.dim)
    if getattr(extractor, "network", None):
        assert extractor.network in record.networks
    # the identity, told without loading a network, is the one the shard carries
    described = modalities.describe(name, plan.section(name), untrained=True, device="cpu", precision="float32")
    assert described.identity(CLIP_ID) == extractor.identity(CLIP_ID)

    work = tmp_path / "work"
    # CLIP_ID is not the file's sha256: no ingest to confirm the file against
    (item,) = extraction.extract_clip({"clip_id": CLIP_ID, "path": str(clip)}, {name: extractor}, work, confirm=False)
    assert item.status == extraction.COMPUTED, item.message
    (shard,) = tables.table_files(work, tables.feature_table(name))
    assert shard_dim(shard) == record.dim
    row = tables.read_file(shard, tables.feature_spec(name, record.dim)).to_pylist()[0]
    assert row["identity"] == described.identity(CLIP_ID) and row["modality"] == name
    assert row["fps"] == pytest.approx(record.rate(record.section(plan.section(name))))
    assert np.isfinite(np.asarray(row["features"], dtype=np.float32)).all() and row["untrained"] in (True, False)

    _score(work, [CLIP_ID])
    ds = model_data.ViralityDataset(model_data.open_source(work), (name,))
    frames = model_data.DataConfig().frames(name, row["fps"])
    sample = ds[0]
    expected = (3, frames, 16) if record.stream == "skeleton" else (frames, record.dim)
    assert ds.frames == {name: frames} and sample[name].shape == expected
    model = _fusion_of(name, ds.dims[name])
    with torch.no_grad():
        out = model({name: (torch.from_numpy(sample[name])[None], torch.ones(1, frames, dtype=torch.bool))})
    assert torch.isfinite(out.score).all() and out.weights.shape == (1, 1)


# -- a toy sixth modality --------------------------------------------------------------------------


@pytest.fixture()
def toy():
    """The brightness modality registered for one test, then removed (its network with it)."""
    assert brightness.NETWORK not in REGISTRY
    modalities.register(brightness.MODALITY)
    try:
        yield brightness.MODALITY
    finally:
        modalities.unregister(brightness.MODALITY.name)
    assert "brightness" not in modalities.names() and brightness.NETWORK not in REGISTRY


def test_a_toy_modality_brings_its_section_network_and_shared_track(toy, clip, tmp_path, monkeypatch, caplog):
    from pipeline.blazepose.backends import BlazePose
    from pipeline.sections import load_config

    # its section is known to the configuration, its network to the weights registry
    config_file = tmp_path / "run.toml"
    config_file.write_text("[brightness]\nfps = 25.0\nmax_side = 640\n")
    config = load_config(config_file)
    assert REGISTRY[brightness.NETWORK] is brightness.SPEC and brightness.NETWORK in toy.networks
    # its BlazePose follows the build's backend, which [pose] alone decides
    assert modalities.backend_settings({"pose": {"backend": "torch"}}) == {
        "pose_backend": "torch",
        "vibe_backend": "auto",
    }
    resolved = modalities.resolved_sections(["pose", "brightness"], {"pose": {"backend": "torch"}}, "cpu")
    assert resolved["brightness"]["backend"] == resolved["pose"]["backend"] == "torch"

    # on pose's grid the two share one tracking BlazePose: one run per grid frame, not two
    runs: list[int] = []
    real = BlazePose.process

    def counting(self, image, mask_size=None):
        runs.append(1)
        return real(self, image, mask_size)

    monkeypatch.setattr(BlazePose, "process", counting)
    plan = extraction.plan_extraction(["pose", "brightness"], config, untrained=True, device="cpu", precision="float32")
    extractors = extraction.load_extractors(plan)
    assert extractors["pose"].shared_run() == extractors["brightness"].shared_run()
    items = extraction.extract_clip({"clip_id": CLIP_ID, "path": str(clip)}, extractors, tmp_path, confirm=False)
    assert [i.status for i in items] == ["computed", "computed"]
    pose_row, toy_row = (
        tables.read_file(p, tables.feature_spec(m, modalities.get(m).dim)).to_pylist()[0]
        for m in ("pose", "brightness")
        for p in tables.table_files(tmp_path, tables.feature_table(m))
    )
    frames = len(pose_row["timestamps"])
    assert frames == 25 and len(runs) == frames and toy_row["timestamps"] == pose_row["timestamps"]
    # the person it reports is the one pose found, frame by frame, from the same run
    found = np.asarray(toy_row["features"], dtype=np.float32).reshape(frames, 3)[:, 1]
    np.testing.assert_array_equal(found == 1.0, np.asarray(pose_row["valid"]))
    assert found.any()

    # on another grid it cannot share, and the build says so
    other = extraction.plan_extraction(["pose", "brightness"], {}, untrained=True, device="cpu", precision="float32")
    extraction.load_extractors(other)
    assert "BlazePose runs twice per frame: pose and brightness" in caplog.text


@pytest.mark.slow
def test_a_toy_modality_goes_through_extraction_release_and_training(toy, tmp_path: Path, capsys) -> None:
    from cli import main
    from models.train import TrainConfig, fit
    from pipeline.release import release_stage
    from pipeline.sections import load_config
    from tests.test_release import make_work

    work = tmp_path / "work"
    ids = make_work(work, modalities=())  # five real clips, their scores and scale, no shard yet
    # the command line, the configuration file and the extraction loop know it from its record
    config = tmp_path / "run.toml"
    config.write_text("[brightness]\nfps = 2.0\n")
    assert load_config(config) == {"brightness": {"fps": 2.0}}
    args = ["extract", "brightness", "--all", "--untrained", "--work", str(work), "--config", str(config)]
    assert main([*args, "--no-progress"]) == 0
    assert "extract brightness: 5 computed" in capsys.readouterr().out
    shards = tables.table_files(work, "features/brightness")
    assert len(shards) == 5 and all(shard_dim(p) == 3 for p in shards)

    # the release takes the shards whose identity its configuration describes
    run = release_stage(work, tmp_path / "release", load_config(config), salt="toy", allow_untrained=True)
    assert run.checked.ok and sum(run.summary.counts["brightness"].values()) == 5
    manifest = json.loads((run.summary.path / "manifest.json").read_text())
    assert set(manifest["features"]["brightness"]["identities"]) == set(ids.values())
    with pytest.raises(Exception, match="stale"):  # another rate: other identities, so the shards are stale
        release_stage(work, tmp_path / "other", {"brightness": {"fps": 1.0}}, salt="toy", allow_untrained=True)

    # one training step of a fused model on it, from the release
    source = model_data.open_source(run.summary.path)
    ds = model_data.ViralityDataset(source, ("brightness",))
    assert ds.frames == {"brightness": 16} and ds[0]["brightness"].shape == (16, 3)  # 8 s at 2 fps
    cfg = TrainConfig(modalities=("brightness",), epochs=1, batch_size=8, device="cpu")
    result = fit(ds, cfg, sections=SMALL_STREAMS, out_dir=tmp_path / "run")
    assert len(result.history) == 1 and np.isfinite(result.history[0]["loss"])
    assert list(result.model.streams) == ["brightness"]
