"""The weights zoo: published formats import into the real architectures, the cache is verified,
and a pickle that would run code is refused without running anything.

Checkpoints are built here in each published layout (real key names and nesting, the real
tensor shapes of each architecture, classifier heads included, metadata objects where the
format has them) from seeded random values; nothing is downloaded.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import sys
import types
import zlib

import numpy as np
import pytest
import torch

from cli import main as vdv
from pipeline.core import unpickle
from pipeline.core.errors import WeightsError
from pipeline.weights import cache, convert, fetch, inference, registry

# -- published layouts ---------------------------------------------------------------------------


def _reference(name: str) -> dict[str, torch.Tensor]:
    """The architecture's own state dict with seeded perturbations: every tensor distinct from the
    default initialisation, variances positive, so the network still computes finite features."""
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    state = registry.get_spec(name).build().state_dict()
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = value * (1 + 0.1 * torch.rand(value.shape, generator=gen))
        else:
            out[key] = value + 0.01 * torch.randn(value.shape, generator=gen)
    return out


def _to_mmaction2(key: str) -> str:
    k = re.sub(r"^conv1\.", "conv1.conv.", key)
    k = re.sub(r"^bn1\.", "conv1.bn.", k)
    k = re.sub(r"\.conv(\d)\.weight$", r".conv\1.conv.weight", k)
    k = re.sub(r"\.bn(\d)\.", r".conv\1.bn.", k)
    k = k.replace(".downsample.0.", ".downsample.conv.").replace(".downsample.1.", ".downsample.bn.")
    return "backbone." + k


_CAFFE_KIND = {
    "conv1": "1x1_reduce",
    "conv2": "3x3",
    "conv3": "1x1_increase",
    "bn1": "1x1_reduce/bn",
    "bn2": "3x3/bn",
    "bn3": "1x1_increase/bn",
}


def _to_caffe(key: str) -> str:
    module, _, param = key.rpartition(".")
    if module == "conv1":
        return f"conv1/7x7_s2.{param}"
    if module == "bn1":
        return f"conv1/7x7_s2/bn.{param}"
    m = re.match(r"layer(\d)\.(\d+)\.(.+)$", module)
    stage, block, rest = int(m[1]) + 1, int(m[2]) + 1, m[3]
    kind = {"downsample.0": "1x1_proj", "downsample.1": "1x1_proj/bn"}.get(rest) or _CAFFE_KIND[rest]
    return f"conv{stage}_{block}_{kind}.{param}"


class _Fake:
    """Plain objects pickled under a foreign module name, like mmengine's."""

    def __init__(self, **state):
        self.__dict__.update(state)


def _mmengine_objects():
    """MessageHub/HistoryBuffer stand-ins whose pickles name ``mmengine.logging...`` classes."""
    classes = {}
    for module, name in (
        ("mmengine.logging.message_hub", "MessageHub"),
        ("mmengine.logging.history_buffer", "HistoryBuffer"),
    ):
        classes[name] = type(name, (_Fake,), {"__module__": module, "__qualname__": name})
    return classes


def _pickle_with_fake_modules(write, classes):
    """Register the fake mmengine modules only while writing, so loading can never import them."""
    added = {}
    for cls in classes.values():
        parts = cls.__module__.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                added[name] = sys.modules[name] = types.ModuleType(name)
        setattr(sys.modules[cls.__module__], cls.__name__, cls)
    try:
        write()
    finally:
        for name in added:
            del sys.modules[name]


def write_published(name: str, path, ref: dict[str, torch.Tensor]) -> None:
    """Write ``ref`` as the published file of ``name`` would hold it."""
    gen = torch.Generator().manual_seed(7)
    if name == "tsn_r50_kinetics400":
        sd = {_to_mmaction2(k): v for k, v in ref.items()}
        sd["cls_head.fc_cls.weight"] = torch.randn(400, 2048, generator=gen)
        sd["cls_head.fc_cls.bias"] = torch.randn(400, generator=gen)
        classes = _mmengine_objects()
        hub = classes["MessageHub"](
            log_scalars={"train/loss": classes["HistoryBuffer"](log_history=np.arange(5.0), count_history=np.ones(5))},
            runtime_info={"epoch": 100, "iter": 93900},
            resumed_keys={"epoch": True},
        )
        checkpoint = {
            "meta": {
                "mmengine_version": "0.8.4",
                "epoch": 100,
                "iter": 93900,
                "seed": 1,
                "dataset_meta": None,
                "hub": hub,
            },
            "state_dict": sd,
            "message_hub": hub,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.00015625, "momentum": 0.9, "params": [0, 1]}]},
            "param_schedulers": [{"base_lrs": [0.01], "last_step": 100}],
        }
        _pickle_with_fake_modules(lambda: torch.save(checkpoint, path), classes)
    elif name == "resnet18_places365":
        sd = {f"module.{k}": v for k, v in ref.items()}
        sd["module.fc.weight"] = torch.randn(365, 512, generator=gen)
        sd["module.fc.bias"] = torch.randn(365, generator=gen)
        # the published .pth.tar predates torch's zip format
        torch.save(
            {"epoch": 90, "arch": "resnet18", "state_dict": sd, "best_prec1": 54.74},
            path,
            _use_new_zipfile_serialization=False,
        )
    elif name == "inception_resnet_v1_vggface2":
        sd = dict(ref)
        sd["logits.weight"] = torch.randn(8631, 512, generator=gen)
        sd["logits.bias"] = torch.randn(8631, generator=gen)
        torch.save(sd, path)
    elif name == "resnet50_vggface2":
        # Caffe naming, numpy arrays, no BatchNorm counters, pickled as Python 2 would (protocol 2)
        sd = {_to_caffe(k): v.numpy() for k, v in ref.items() if not k.endswith("num_batches_tracked")}
        sd["classifier.weight"] = np.zeros((8631, 2048), dtype=np.float32)
        sd["classifier.bias"] = np.zeros(8631, dtype=np.float32)
        with open(path, "wb") as fh:
            pickle.dump(sd, fh, protocol=2)
    else:
        raise AssertionError(f"no published layout for {name}")


FEATURE_INPUT = {"inception_resnet_v1_vggface2": 160}


# the networks imported from a published checkpoint; BlazePose's come from the mediapipe wheel
# (tests/test_blazepose.py)
PUBLISHED = [name for name, spec in registry.REGISTRY.items() if spec.bundled is None]


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_format_imports_into_real_architecture(name, tmp_path):
    spec = registry.get_spec(name)
    ref = _reference(name)
    src = tmp_path / spec.source_file
    write_published(name, src, ref)

    lock = fetch.import_weights(name, src, cache_dir=tmp_path / "cache", allow_other_source=True)
    # only the classifier head is dropped
    assert lock["dropped"] and all(re.match(r"(cls_head|module\.fc|logits|classifier)\.", k) for k in lock["dropped"])
    assert lock["tensors"] == len(ref)

    model, loaded = inference.load_model(name, cache_dir=tmp_path / "cache")
    assert not loaded.untrained and loaded.sha256 == lock["sha256"] == cache.verify_weights(
        name, cache_dir=tmp_path / "cache"
    )
    state = loaded.state_dict  # what the cache gave, before the BatchNorms are folded for inference
    assert set(state) == set(ref)
    for key, value in ref.items():
        if key.endswith("num_batches_tracked") and name == "resnet50_vggface2":
            continue  # Caffe has no counter; filled with 0
        assert torch.equal(state[key], value), key
    assert not model.training
    size = FEATURE_INPUT.get(name, 64)
    reference = spec.build().eval()
    reference.load_state_dict(ref)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out, want = model(x), reference(x)
    assert out.shape == (2, spec.feature_dim)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4 * float(want.abs().mean()))
    # the cache holds tensors only: it loads with the safe loader, no pickle involved
    from safetensors.torch import load_file

    assert all(isinstance(v, torch.Tensor) for v in load_file(cache.cached_file(name, tmp_path / "cache")).values())


def test_vggface2_pytorch_naming_as_distributed(tmp_path):
    """The .pkl shipped with cydonia999/VGGFace2-pytorch already uses PyTorch module names."""
    ref = _reference("resnet50_vggface2")
    sd = {k: v.numpy() for k, v in ref.items() if not k.endswith("num_batches_tracked")}
    sd["fc.weight"] = np.zeros((8631, 2048), dtype=np.float32)
    sd["fc.bias"] = np.zeros(8631, dtype=np.float32)
    src = tmp_path / "resnet50_ft_weight.pkl"
    with open(src, "wb") as fh:
        pickle.dump(sd, fh, protocol=2)
    lock = fetch.import_weights("resnet50_vggface2", src, cache_dir=tmp_path)
    assert lock["dropped"] == ["fc.weight", "fc.bias"]
    _, loaded = inference.load_model("resnet50_vggface2", cache_dir=tmp_path)
    assert torch.equal(loaded.state_dict["layer3.5.conv3.weight"], ref["layer3.5.conv3.weight"])


def test_caffe_layer_mapping():
    assert convert._caffe_name("conv1_7x7_s2") == "conv1"
    assert convert._caffe_name("conv1_7x7_s2_bn") == "bn1"
    assert convert._caffe_name("conv2_1_1x1_reduce") == "layer1.0.conv1"
    assert convert._caffe_name("conv3_4_3x3_bn") == "layer2.3.bn2"
    assert convert._caffe_name("conv5_3_1x1_increase") == "layer4.2.conv3"
    assert convert._caffe_name("conv4_1_1x1_proj") == "layer3.0.downsample.0"
    assert convert._caffe_name("conv4_1_1x1_proj_bn") == "layer3.0.downsample.1"
    assert convert._caffe_name("conv2_1_1x1_bogus") is None


@pytest.fixture(scope="module")
def places_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("places")
    src = root / "resnet18_places365.pth.tar"
    write_published("resnet18_places365", src, _reference("resnet18_places365"))
    fetch.import_weights("resnet18_places365", src, cache_dir=root / "cache")
    return root / "cache"


def test_flipped_byte_fails_verification(places_cache, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    for f in places_cache.iterdir():
        (cache_dir / f.name).write_bytes(f.read_bytes())
    path = cache.cached_file("resnet18_places365", cache_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(WeightsError, match="failed verification") as err:
        cache.verify_weights("resnet18_places365", cache_dir=cache_dir)
    message = str(err.value)
    assert "vdv weights fetch resnet18_places365" in message and "vdv weights import resnet18_places365" in message
    with pytest.raises(WeightsError, match="failed verification"):
        inference.load_model("resnet18_places365", cache_dir=cache_dir)
    assert cache.status("resnet18_places365", cache_dir=cache_dir) == "CORRUPT"
    assert vdv(["weights", "verify", "resnet18_places365", "--dir", str(cache_dir)]) == 1
    assert vdv(["weights", "verify", "--dir", str(places_cache)]) == 0


def test_missing_weights_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_DIR, str(tmp_path / "empty"))
    with pytest.raises(WeightsError) as err:
        cache.load_weights("tsn_r50_kinetics400")
    message = str(err.value)
    assert "missing" in message and str(tmp_path / "empty") in message
    assert (
        "vdv weights fetch tsn_r50_kinetics400" in message and "vdv weights import tsn_r50_kinetics400 PATH" in message
    )
    with pytest.raises(WeightsError, match="unknown weights"):
        cache.load_weights("resnet1000")


def test_untrained_is_seeded_and_marked(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.weights.cache"):
        loaded = cache.load_weights("resnet18_places365", cache_dir=tmp_path, untrained=True)
    assert loaded == cache.LoadedWeights(None, "untrained", True)
    assert "UNTRAINED" in caplog.text
    a, _ = inference.load_model("resnet18_places365", cache_dir=tmp_path, untrained=True, seed=3)
    b, _ = inference.load_model("resnet18_places365", cache_dir=tmp_path, untrained=True, seed=3)
    c, _ = inference.load_model("resnet18_places365", cache_dir=tmp_path, untrained=True, seed=4)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_published_digest_is_checked(tmp_path):
    src = tmp_path / "tsn.pth"
    write_published("tsn_r50_kinetics400", src, _reference("tsn_r50_kinetics400"))
    with pytest.raises(WeightsError, match="cd10898e"):
        fetch.import_weights("tsn_r50_kinetics400", src, cache_dir=tmp_path)
    assert not cache.cached_file("tsn_r50_kinetics400", tmp_path).exists()


def test_shape_mismatch_is_refused(tmp_path):
    ref = _reference("resnet18_places365")
    ref["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    src = tmp_path / "resnet18_places365.pth.tar"
    write_published("resnet18_places365", src, ref)
    with pytest.raises(WeightsError, match=r"shape mismatches \['layer2.0.conv1.weight"):
        fetch.import_weights("resnet18_places365", src, cache_dir=tmp_path)
    assert not cache.lock_file("resnet18_places365", tmp_path).exists()


def test_extra_keys_beyond_the_head_are_refused(tmp_path):
    ref = _reference("inception_resnet_v1_vggface2")
    ref["extra_layer.weight"] = torch.zeros(3)
    src = tmp_path / "vggface2.pt"
    write_published("inception_resnet_v1_vggface2", src, ref)
    with pytest.raises(WeightsError, match="unexpected \\['extra_layer.weight'\\]"):
        fetch.import_weights("inception_resnet_v1_vggface2", src, cache_dir=tmp_path)


def test_every_weights_module_is_declared_computing_or_not():
    """The appearance extractors' versions cover the package's computing modules only (the torch
    pose backend's, its graph modules); a new module of the package has to be put on one side."""
    import pkgutil

    import pipeline.weights as package

    modules = {f"pipeline.weights.{m.name}" for m in pkgutil.iter_modules(package.__path__)}
    loading = {f"pipeline.weights.{m}" for m in ("registry", "cache", "convert", "fetch", "tflite")}
    computing = {m.__name__ for m in package.compute_modules()}
    graphs = {m.__name__ for m in package.graph_modules()}
    assert modules == computing | graphs | loading
    assert not computing & loading and not graphs & loading


# -- pickles that would run code ---------------------------------------------------------------------


class _Payload:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_Payload, _EvalPayload])
@pytest.mark.parametrize("container", ["plain_pickle", "torch_zip", "torch_legacy", "inside_mmengine_meta"])
def test_code_running_pickle_is_refused(tmp_path, payload, container):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pth"
    evil = payload(marker)
    sd = {"conv1.weight": torch.zeros(64, 3, 7, 7)}
    if container == "plain_pickle":
        with open(src, "wb") as fh:
            pickle.dump({"state_dict": sd, "x": evil}, fh, protocol=2)
    elif container == "torch_zip":
        torch.save({"state_dict": sd, "x": evil}, src)
    elif container == "torch_legacy":
        torch.save({"state_dict": sd, "x": evil}, src, _use_new_zipfile_serialization=False)
    else:
        classes = _mmengine_objects()
        hub = classes["MessageHub"](runtime_info={"hook": evil})
        _pickle_with_fake_modules(lambda: torch.save({"state_dict": sd, "message_hub": hub}, src), classes)

    with pytest.raises(WeightsError, match="refused to load global"):
        fetch.import_weights("resnet18_places365", src, cache_dir=tmp_path / "cache")
    assert not marker.exists()
    assert not cache.cached_file("resnet18_places365", tmp_path / "cache").exists()


def test_unpickler_refuses_before_calling(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps(_Payload(marker), protocol=2)
    with pytest.raises(unpickle.RefusedGlobal, match="system"):
        unpickle.loads(data)
    assert not marker.exists()
    # the payload is live: a plain unpickler runs it
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_Payload(live), protocol=2))
    assert live.exists()
    # metadata classes become inert stubs that keep their state
    classes = _mmengine_objects()
    box = {}
    _pickle_with_fake_modules(
        lambda: box.setdefault("data", pickle.dumps(classes["MessageHub"](runtime_info={"epoch": 3}))), classes
    )
    hub = unpickle.loads(box["data"])
    assert isinstance(hub, unpickle.Stub) and hub.stub_of == "mmengine.logging.message_hub.MessageHub"
    assert hub.stub_state == {"runtime_info": {"epoch": 3}}


def test_cli_import_and_list(tmp_path, capsys):
    src = tmp_path / "20180402-114759-vggface2.pt"
    write_published("inception_resnet_v1_vggface2", src, _reference("inception_resnet_v1_vggface2"))
    cache_dir = tmp_path / "cache"
    assert vdv(["weights", "import", "inception_resnet_v1_vggface2", str(src), "--dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "dropped logits.weight, logits.bias" in out
    assert vdv(["weights", "list", "--dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "inception_resnet_v1_vggface2  [ok]" in out and "tsn_r50_kinetics400  [missing]" in out
    # a mistake is an error message and exit code 2, not a traceback
    assert vdv(["weights", "import", "tsn_r50_kinetics400", str(tmp_path / "nope.pth"), "--dir", str(cache_dir)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_truncated_checkpoint_is_an_error(tmp_path):
    src = tmp_path / "20180402-114759-vggface2.pt"
    write_published("inception_resnet_v1_vggface2", src, _reference("inception_resnet_v1_vggface2"))
    src.write_bytes(src.read_bytes()[: 1 << 20])
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        fetch.import_weights("inception_resnet_v1_vggface2", src, cache_dir=tmp_path / "cache")
    assert cache.status("inception_resnet_v1_vggface2", cache_dir=tmp_path / "cache") == "missing"


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_folded_batchnorm_keeps_the_features(name):
    """The inference network (BatchNorm folded into its convolution) against the network as built."""
    spec = registry.get_spec(name)
    torch.manual_seed(0)
    built = spec.build().eval()
    norms = [m for m in built.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    for bn in norms:  # statistics away from the initial (0, 1), so that folding has work to do
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    folded = inference.for_inference(built)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, spec.preprocess.input_size, spec.preprocess.input_size)
    with torch.inference_mode():
        want, got = built(x), folded(x)
    assert want.shape == got.shape == (2, spec.feature_dim)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().mean()))
