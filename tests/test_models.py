"""Every registered model: shapes, masks, gradients, ablation switches, checkpoints, golden values."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import (
    MODELS,
    AttentiveFusion,
    StreamOutput,
    SVRBaseline,
    average_fusion,
    build_model,
    load_checkpoint,
    parameter_count,
    save_checkpoint,
)
from models.fusion import FusionOutput
from pipeline.modalities import registry as modalities

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SQUATS = SHARED / "keypoints" / "tfjs_pose_squats.full.json"  # 65 frames x 33 BlazePose landmarks (x, y, z)

# Small widths keep every forward pass CPU-cheap; the defaults are exercised by test_defaults_*.
SMALL = {
    "psgcn": {"channels": (8, 16, 32)},
    "stgcn": {"channels": (8, 8, 16, 16, 32)},
    "rtcn": {"input_dim": 24, "channels": (16, 16, 32, 32, 64, 64)},
    "tcn": {"input_dim": 24, "channels": (16, 16, 32, 32, 64, 64)},
    "lstm": {"input_dim": 24, "hidden": 32},
    "multimodal": {
        "dims": {"holistic": 24, "facial": 12, "scenic": 12},
        "psgcn": {"channels": (8, 16, 32)},
        "rtcn": {"channels": (16, 16, 32, 32, 64, 64)},
        "fusion_hidden": 16,
    },
}


def real_skeletons(t: int = 16) -> torch.Tensor:
    """Three real skeleton excerpts (3, 3, t, 16), t <= 33: BlazePose landmarks of a real clip mapped to MPII.

    Coordinates are centred on the pelvis and scaled by the frame height (1280 px); the third
    channel is a confidence of 1 (the file carries depth, not confidence).
    """
    from pipeline.modalities.skeleton import blazepose_to_mpii

    frames = np.asarray(json.loads(SQUATS.read_text()), dtype=np.float64)
    frames[:, :, 2] = 1.0
    mpii = np.stack([blazepose_to_mpii(f) for f in frames])  # (65, 16, 3)
    mpii[:, :, :2] = (mpii[:, :, :2] - mpii[:, 6:7, :2]) / 1280.0
    if t > 33:
        raise ValueError("the excerpts start at frames 0, 16 and 32 of 65")
    clips = np.stack([mpii[s : s + t] for s in (0, 16, 32)])  # (3, t, 16, 3)
    return torch.from_numpy(clips).float().permute(0, 3, 1, 2).contiguous()


def make_inputs(model, n: int = 2, t: int = 16, seed: int = 0):
    """Seeded inputs for any registered model: real skeletons, seeded appearance features."""
    gen = torch.Generator().manual_seed(seed)
    if model.input_kind == "skeleton":
        return (real_skeletons(t)[:n], torch.ones(n, t, dtype=torch.bool))
    if model.input_kind == "sequence":
        return (torch.randn(n, t, model.config.input_dim, generator=gen), torch.ones(n, t, dtype=torch.bool))
    cfg = model.config
    inputs = {}
    for name in cfg.streams:
        if modalities.get(name).stream == "skeleton":
            inputs[name] = (real_skeletons(t)[:n], torch.ones(n, t, dtype=torch.bool))
        else:
            steps = {"holistic": t, "facial": max(2, t // 8), "scenic": max(2, t // 12)}[name]
            x = torch.randn(n, steps, cfg.input_dim(name), generator=gen)
            inputs[name] = (x, torch.ones(n, steps, dtype=torch.bool))
    return (inputs,)


def small(name: str, **overrides):
    torch.manual_seed(0)
    return build_model(name, **{**SMALL[name], **overrides})


def run(model, inputs):
    return model(*inputs)


def scores_of(out) -> torch.Tensor:
    return out.score


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_has_a_small_configuration(name):
    assert name in SMALL, f"add {name} to SMALL so the registry tests cover it"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shapes_and_determinism(name):
    model = small(name).eval()
    inputs = make_inputs(model, n=2, t=16)
    with torch.no_grad():
        out = run(model, inputs)
        again = run(model, inputs)
    if model.input_kind == "multimodal":
        assert isinstance(out, FusionOutput)
        m = len(model.config.streams)
        assert out.score.shape == (2,) and out.weights.shape == (2, m) and out.stream_scores.shape == (2, m)
        torch.testing.assert_close(out.weights.sum(dim=1), torch.ones(2))
    else:
        assert isinstance(out, StreamOutput)
        assert out.score.shape == (2,) and out.feature.shape == (2, model.feature_dim)
        assert not torch.equal(out.feature[0], out.feature[1])  # two different clips, two features
    assert torch.isfinite(out.score).all()
    torch.testing.assert_close(out.score, again.score)


def pad(inputs, extra: int, garbage: float):
    """Append ``extra`` invalid frames full of ``garbage`` to every sequence of ``inputs``."""

    def pad_one(x, mask, time_dim):
        shape = list(x.shape)
        shape[time_dim] = extra
        x = torch.cat([x, torch.full(shape, garbage)], dim=time_dim)
        mask = torch.cat([mask, torch.zeros(mask.shape[0], extra, dtype=torch.bool)], dim=1)
        return x, mask

    (first, *rest) = inputs
    if isinstance(first, dict):
        return ({k: pad_one(x, m, 2 if x.dim() == 4 else 1) for k, (x, m) in first.items()},)
    x, mask = inputs
    return pad_one(x, mask, 2 if x.dim() == 4 else 1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_padding_with_masked_frames_changes_nothing(name):
    # trailing frames masked as invalid, whatever they hold, must not move the score (eval mode)
    model = small(name).eval()
    inputs = make_inputs(model, n=2, t=13)
    with torch.no_grad():
        alone = run(model, inputs)
        padded = run(model, pad(inputs, extra=7, garbage=1e3))
    torch.testing.assert_close(padded.score, alone.score, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["psgcn", "stgcn", "rtcn", "lstm"])
def test_invalid_frames_inside_a_clip_are_ignored_whatever_they_hold(name):
    model = small(name).eval()
    x, mask = make_inputs(model, n=2, t=16)
    mask = mask.clone()
    mask[0, 5:9] = False  # e.g. no person found in four frames
    time_dim = 2 if x.dim() == 4 else 1
    noisy = x.clone()
    noisy.narrow(time_dim, 5, 4)[0] = 50.0
    with torch.no_grad():
        a = model(x, mask).score
        b = model(noisy, mask).score
        full = model(x, torch.ones_like(mask)).score
    torch.testing.assert_close(a, b)
    assert abs(float(a[0] - full[0])) > 1e-6  # the mask does act on the valid clip
    torch.testing.assert_close(a[1], full[1])  # the other clip of the batch is untouched


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_reach_every_parameter(name):
    model = small(name).train()
    inputs = make_inputs(model, n=3, t=16)
    out = run(model, inputs)
    (out.score * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    dead = [n for n, p in model.named_parameters() if float(p.grad.abs().sum()) == 0.0]
    # the learnable edge weights B start at zero but still receive gradient
    assert not dead, f"zero gradient for {dead}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpoint_rebuilds_the_model_exactly(name, tmp_path):
    model = small(name).eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    path = save_checkpoint(tmp_path / "m.pt", model, optimizer=opt, epoch=3, extra={"src": 0.25})
    rebuilt, ckpt = load_checkpoint(path)
    rebuilt.eval()
    assert type(rebuilt) is type(model) and rebuilt.config == model.config
    assert ckpt["epoch"] == 3 and ckpt["extra"] == {"src": 0.25} and ckpt["optimizer"] is not None
    inputs = make_inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(run(rebuilt, inputs).score, run(model, inputs).score)
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_keeps_ablation_switches(tmp_path):
    model = small("psgcn", downsample=False)
    rebuilt, _ = load_checkpoint(save_checkpoint(tmp_path / "p.pt", model))
    assert rebuilt.config.downsample is False and rebuilt.vertices == [16] * 9
    mm = small("multimodal", streams=("pose", "facial"), average_fusion=True)
    rebuilt, _ = load_checkpoint(save_checkpoint(tmp_path / "mm.pt", mm))
    assert rebuilt.config.streams == ("pose", "facial") and rebuilt.config.average_fusion
    assert rebuilt.config.psgcn.channels == (8, 16, 32)


def test_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a vdv model checkpoint"):
        load_checkpoint(path)


def test_psgcn_pyramid_and_the_downsampling_ablation():
    model = small("psgcn")
    flat = small("psgcn", downsample=False)
    assert model.vertices == [16, 16, 16, 7, 7, 7, 4, 4, 4]
    assert flat.vertices == [16] * 9
    assert len(model.blocks) == 9 and model.feature_dim == 32
    # learnable B per block (paper section 4.1), sized to each block's graph operator
    assert [tuple(b.gcn.B.shape) for b in model.blocks][2:5] == [(3, 16, 16), (3, 16, 7), (3, 7, 7)]
    assert parameter_count(model) != parameter_count(flat)
    # temporal stride 2 at the two down-sampling blocks: 16 frames -> 8 -> 4
    seen = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append(tuple(o[0].shape[2:]))) for b in model.blocks]
    model.eval()(*make_inputs(model, t=16))
    for h in hooks:
        h.remove()
    assert seen == [(16, 16)] * 3 + [(8, 7)] * 3 + [(4, 4)] * 3
    fixed = small("psgcn", learnable_edges=False)
    assert not any(n.endswith(".B") for n, _ in fixed.named_parameters())


def test_psgcn_defaults_are_the_paper_architecture():
    model = build_model("psgcn")
    cfg = model.config
    assert (cfg.channels, cfg.temporal_kernel, cfg.dropout) == ((64, 128, 256), 7, 0.5)
    assert model.blocks[3].tcn.conv.kernel_size == (7, 1) and model.blocks[3].tcn.conv.stride == (2, 1)
    assert model.blocks[0].dropout.p == 0.5
    assert parameter_count(model) == 2_502_219


def test_rtcn_structure_and_the_relational_pooling_ablation():
    model = build_model("rtcn")
    assert [b.conv1.out_channels for b in model.blocks] == [256, 256, 512, 512, 1024, 1024]
    assert [b.conv1.dilation[0] for b in model.blocks] == [1, 2, 4, 8, 16, 32]
    assert model.blocks[0].conv1.kernel_size == (7,) and model.reduce.kernel_size == (1,)
    assert sorted(model.pools) == ["1", "3", "5"]  # after blocks 2, 4 and 6
    assert all(p.attention.num_heads == 4 for p in model.pools.values())
    tcn = build_model("tcn")
    assert len(tcn.pools) == 0 and tcn.config.relational_pooling is False
    assert build_model("rtcn", relational_pooling=False).config == tcn.config
    assert parameter_count(model) - parameter_count(tcn) == sum(parameter_count(p) for p in model.pools.values())


def test_relational_pooling_halves_time_and_relates_distant_frames():
    model = small("rtcn").eval()
    x, mask = make_inputs(model, n=1, t=64)
    far = x.clone()
    far[0, -1] += 3.0  # change only the last frame
    seen = {}

    def keep(key):
        return lambda m, i, o: seen.setdefault(key, []).append(o if isinstance(o, torch.Tensor) else o[0])

    hooks = [model.blocks[1].register_forward_hook(keep("conv"))]
    hooks += [p.register_forward_hook(keep(f"pool{i}")) for i, p in model.pools.items()]
    with torch.no_grad():
        model(x, mask)
        model(far, mask)
    for h in hooks:
        h.remove()
    assert [seen[f"pool{i}"][0].shape[2] for i in ("1", "3", "5")] == [32, 16, 8]
    # the first frames after block 2 are out of the convolutions' reach of frame 63 ...
    torch.testing.assert_close(seen["conv"][0][..., :2], seen["conv"][1][..., :2])
    # ... but self-attention relates every position to every other (paper Fig. 6b)
    assert (seen["pool1"][0][..., 0] - seen["pool1"][1][..., 0]).abs().max() > 1e-4
    assert small("tcn").eval()(x, mask).feature.shape == (1, 64)


def test_lstm_baseline_defaults():
    model = build_model("lstm")
    assert (model.lstm.num_layers, model.lstm.hidden_size) == (2, 512)


def test_fusion_weights_with_a_missing_stream_and_average_fusion():
    torch.manual_seed(0)
    fusion = AttentiveFusion((4, 3, 2), hidden=8)
    feats = [torch.randn(2, 4), torch.randn(2, 3), torch.randn(2, 2)]
    scores = torch.tensor([[0.2, 0.6, 0.9], [0.4, 0.1, 0.5]])
    present = torch.tensor([[True, False, True], [True, True, True]])
    out = fusion(feats, scores, present)
    assert out.weights[0, 1] == 0.0  # the missing stream gets no weight
    torch.testing.assert_close(out.weights.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(out.score, (out.weights * scores.masked_fill(~present, 0)).sum(dim=1))
    assert out.weights[1].std() > 0  # data-dependent weights, not uniform
    # a missing stream's feature does not steer the weights
    feats2 = [feats[0], feats[1] * 100, feats[2]]
    torch.testing.assert_close(fusion(feats2, scores, present).weights[0], out.weights[0])
    avg = average_fusion(scores, present)
    torch.testing.assert_close(avg.weights, torch.tensor([[0.5, 0.0, 0.5], [1 / 3, 1 / 3, 1 / 3]]))
    torch.testing.assert_close(avg.score, torch.tensor([0.55, 1.0 / 3]))
    assert AttentiveFusion((4, 3, 2), average=True)(feats, scores, present).score.allclose(avg.score)
    with pytest.raises(ValueError, match="no stream present"):
        fusion(feats, scores, torch.tensor([[False, False, False], [True, True, True]]))


def test_multimodal_missing_face_stream_dropping_and_average():
    model = small("multimodal").eval()
    (inputs,) = make_inputs(model, n=2, t=24)
    x, mask = inputs["facial"]
    inputs["facial"] = (x, mask.clone().index_fill_(0, torch.tensor([0]), False))  # no face in clip 0
    with torch.no_grad():
        out, streams = model.forward_streams(inputs)
    assert set(streams) == {"pose", "holistic", "facial", "scenic"}
    assert out.weights[0, 2] == 0.0 and out.weights[1, 2] > 0.0
    torch.testing.assert_close(out.stream_scores[1], torch.stack([s.score[1] for s in streams.values()]))
    # training through a clip without any face stays finite (no NaN from the empty attention)
    model.train()
    model(inputs).score.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    model.eval()
    dropped = small("multimodal", streams=("pose", "holistic", "scenic")).eval()
    assert "facial" not in dropped.streams and dropped.fusion.feature_dims == (32, 64, 64)
    assert dropped(inputs).weights.shape == (2, 3)  # extra inputs for dropped streams are ignored
    averaged = small("multimodal", average_fusion=True).eval()
    assert parameter_count(averaged) < parameter_count(model)
    with torch.no_grad():
        w = averaged(inputs).weights
    torch.testing.assert_close(w, torch.tensor([[1 / 3, 1 / 3, 0.0, 1 / 3], [0.25, 0.25, 0.25, 0.25]]))
    with pytest.raises(ValueError, match="lack streams"):
        model({"pose": inputs["pose"]})
    sports = small("multimodal", streams=("pose", "holistic"))  # SPEC section 8
    assert list(sports.streams) == ["pose", "holistic"]
    with pytest.raises(ValueError, match="streams"):
        build_model("multimodal", streams=("pose", "audio"))


def test_wrong_layouts_are_refused_with_a_message():
    with pytest.raises(ValueError, match=r"\(N, 3, T, 16\)"):
        small("psgcn")(torch.zeros(1, 3, 8, 17))
    with pytest.raises(ValueError, match="frame mask"):
        small("psgcn")(torch.zeros(1, 3, 8, 16), torch.ones(1, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(N, T, 24\)"):
        small("rtcn")(torch.zeros(1, 8, 25))
    with pytest.raises(ValueError, match="unknown model"):
        build_model("dmgnn")
    with pytest.raises(TypeError):
        build_model("psgcn", channel=(1, 2, 3))


def calibrated(model, inputs):
    """``model`` in eval mode with batch-norm statistics taken from ``inputs`` (one pass)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one pass sets the statistics exactly
    with torch.no_grad():
        model.train()(*inputs)
    return model.eval()


def test_golden_scores_do_not_drift():
    # seeded weights on real skeletons / seeded features: a change here is a change of the model
    p = small("psgcn")
    inputs = make_inputs(p, n=3, t=16)
    r = small("rtcn")
    seq = make_inputs(r, n=3, t=16)
    with torch.no_grad():
        ps = calibrated(p, inputs)(*inputs).score
        rs = calibrated(r, seq)(*seq).score
    torch.testing.assert_close(ps, torch.tensor(GOLDEN_PSGCN), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rs, torch.tensor(GOLDEN_RTCN), rtol=1e-4, atol=1e-5)


GOLDEN_PSGCN = [0.16834595799446106, 0.1382521390914917, 0.2772998809814453]  # degree-normalised graph
GOLDEN_RTCN = [0.23054584860801697, 0.22598928213119507, 0.21639668941497803]


def test_svr_baseline_on_pooled_features():
    rng = np.random.default_rng(0)
    seqs = [rng.normal(loc=rng.uniform(-1, 1), size=(int(rng.integers(8, 20)), 6)) for _ in range(40)]
    y = np.array([s[:, 0].mean() for s in seqs])
    masks = [np.ones(len(s), dtype=bool) for s in seqs]
    masks[0][:3] = False
    svr = SVRBaseline(C=10.0).fit(seqs[:30], y[:30], masks[:30])
    pred = svr.predict(seqs[30:])
    from scipy.stats import spearmanr

    assert spearmanr(pred, y[30:]).statistic > 0.8
    assert svr.features(seqs[:2]).shape == (2, 18)  # mean, std, max of 6 dims
    with pytest.raises(RuntimeError, match="before fit"):
        SVRBaseline().predict(seqs)


def test_vdv_models_prints_every_model_with_its_parameter_count():
    from cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["models", "--json"]) == 0
    listed = json.loads(buf.getvalue())
    assert sorted(listed) == sorted(MODELS)
    for name in ("psgcn", "tcn", "lstm"):
        assert listed[name]["parameters"] == parameter_count(build_model(name))
    assert listed["multimodal"]["streams"]["pose"] == listed["psgcn"]["parameters"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["models", "psgcn"]) == 0
    assert "psgcn" in buf.getvalue() and "2,502,219" in buf.getvalue()
    assert main(["models", "nope"]) == 2


def test_models_are_configured_from_the_run_configuration(tmp_path):
    from cli import main
    from models import build_from_config
    from pipeline.core.config import ConfigError
    from pipeline.sections import load_config

    path = tmp_path / "run.toml"
    path.write_text(
        "[psgcn]\ndownsample = false\nchannels = [8, 16, 32]\n\n"
        "[multimodal]\nstreams = ['skeletal', 'holistic']\ndims = { holistic = 24 }\n"  # the older name is read
        "[multimodal.psgcn]\nchannels = [8, 16, 32]\n[multimodal.rtcn]\nchannels = [16, 16, 32, 32, 64, 64]\n"
    )
    config = load_config(path)
    flat = build_from_config("psgcn", config)
    assert flat.config.downsample is False and flat.config.channels == (8, 16, 32)
    assert build_from_config("psgcn", config, downsample=True).vertices[-1] == 4
    mm = build_from_config("multimodal", config)
    assert mm.config.streams == ("pose", "holistic") and mm.config.rtcn.channels[-1] == 64
    assert build_from_config("tcn", {}).config.relational_pooling is False
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["models", "psgcn", "--json", "--config", str(path)]) == 0
    assert json.loads(buf.getvalue())["psgcn"]["parameters"] == parameter_count(flat)
    path.write_text("[psgcn]\ndownsampling = false\n")
    with pytest.raises(ConfigError, match=r"\[psgcn\] has unknown keys \['downsampling'\]"):
        build_from_config("psgcn", load_config(path))


def test_a_checkpoint_of_the_code_before_one_name_per_modality_still_loads():
    """``tests/fixtures/legacy-checkpoint.pt`` was written by commit 341daea
    (``make_legacy_checkpoint.py``): its skeleton stream is ``skeletal`` in the streams, module
    names, train config, data config (in frames) and dims, its widths ``<stream>_dim``."""
    from models import train

    fixtures = Path(__file__).parent / "fixtures"
    model, state = load_checkpoint(fixtures / "legacy-checkpoint.pt")
    assert model.config.streams == ("pose", "holistic", "facial", "scenic")
    assert model.config.dims == {"holistic": 6, "facial": 4, "scenic": 4}
    assert list(model.streams) == ["pose", "holistic", "facial", "scenic"]
    assert state["dims"] == {"pose": 48, "holistic": 6, "facial": 4, "scenic": 4}
    expected = torch.load(fixtures / "legacy-checkpoint.expected.pt", weights_only=True)
    inputs = {modalities.canonical(k): (v, None) for k, v in expected["inputs"].items()}
    with torch.no_grad():
        out = model(inputs)
    torch.testing.assert_close(out.score, expected["score"])  # the saved weights, renamed, not fresh ones
    torch.testing.assert_close(out.weights, expected["weights"])
    _, config, data_config, dims = train.load_checkpoint(fixtures / "legacy-checkpoint.pt", "cpu")
    assert config.modalities == ("pose", "holistic", "facial", "scenic") and dims["pose"] == 48
    # the frames it trained with, now as seconds at each stream's default rate: the same frames
    assert [data_config.frames(m) for m in config.modalities] == [16, 16, 4, 4]


@pytest.mark.parametrize("name", [n for n, m in MODELS.items() if m.input_kind != "multimodal"])
def test_every_stream_model_checks_its_input_in_the_shared_prologue(name):
    """One prologue (models.units.StreamModel) for every stream model: a wrong rank or width is
    refused naming the expected layout, and the head is GradNorm's shared layer."""
    from models.units import StreamModel

    model = small(name)
    assert isinstance(model, StreamModel)
    assert model.shared_parameters() == list(model.head.parameters())
    wrong = torch.zeros(1, 8) if model.input_kind == "sequence" else torch.zeros(1, 3, 8)  # one axis short
    with pytest.raises(ValueError, match=rf"{model.title} expects \(N, "):
        model(wrong)


def test_one_registration_per_model_gives_every_view():
    from models.registry import registered, sections, taking

    assert taking("skeleton") == ("psgcn", "stgcn")
    assert taking("sequence") == ("rtcn", "tcn", "lstm")
    assert taking("multimodal") == ("multimodal",)
    assert sections() == {n: registered(n).config for n in MODELS}
    # a checkpoint of tcn names the rtcn class, which the rtcn registration rebuilds
    assert build_model("tcn").arch == "rtcn" and registered("rtcn").cls is type(build_model("tcn"))
