"""Pre-trained weights handled like a model zoo: a registry, a verified local cache, importers.

The four networks of docs/BEHAVIOUR.md section 4 (holistic, facial, scenic) are described as data in
:data:`REGISTRY`: the architecture builder (classifier head removed, so the model outputs the
feature vector), the published file and its URL, what is known of its digest, the license,
the preprocessing and the feature dimension.

Cache
-----
``$VDV_WEIGHTS_DIR``, else ``~/.cache/vdv/weights``. For a model ``NAME`` it holds

* ``NAME.safetensors``: plain tensors only, in the architecture's own key naming and without
  the classifier head, so loading is ``model.load_state_dict(state_dict)`` (strict);
* ``NAME.lock.json``: written when the file is fetched or imported; it records the sha256 of
  ``NAME.safetensors`` (and of the published file it came from). Loading recomputes the sha256
  and refuses a file that differs. The registry cannot pin the digest of the converted file in
  advance because the project has never seen the real checkpoints; it pins what the publisher
  states about the *source* file instead (``source_sha256``, the full digest or the prefix that
  OpenMMLab embeds in its file names), and ``fetch``/``import`` check that when it is known.

Importing
---------
Published checkpoints are read with ``torch.load(weights_only=True)`` where the format allows it,
else through :mod:`pipeline.unpickle` (a restricted unpickler that rebuilds tensors and arrays,
stubs training metadata and refuses every other global), then converted by a per-model key
mapping (documented on each converter below) and checked against the real architecture before
anything is written.

A missing or mismatching file raises :class:`~pipeline.errors.WeightsError` whose message names
the command that fixes it. ``untrained=True`` (explicit only) gives seeded random weights and
the sha256 ``"untrained"``, which every feature row then records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import WeightsError
from pipeline.features import UNTRAINED
from pipeline.provenance import sha256_file

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ENV_DIR = "VDV_WEIGHTS_DIR"
DEFAULT_DIR = Path("~/.cache/vdv/weights")


# -- preprocessing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """How a network expects its input: geometry, channel order and normalisation.

    ``mean``/``std`` are per channel in the network's channel order, on pixel values scaled to
    ``[0, value_range]`` (255 for Caffe/mmaction2 conventions, 1 for torchvision's).
    """

    input_size: int  # side of the square network input
    resize_short: int | None  # short side before the centre crop (None: resize straight to input)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    value_range: float = 255.0
    channels: str = "RGB"  # "BGR" for networks converted from Caffe

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB images ``(N, H, W, 3)`` -> float32 network input ``(N, 3, H, W)``."""
        import torch

        x = images.permute(0, 3, 1, 2).float()
        if self.channels == "BGR":
            x = x.flip(1)
        if self.value_range != 255.0:
            x = x * (self.value_range / 255.0)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def as_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "resize_short": self.resize_short,
            "mean": list(self.mean),
            "std": list(self.std),
            "value_range": self.value_range,
            "channels": self.channels,
        }


# ImageNet statistics in the two conventions in use
IMAGENET_255 = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))  # mmaction2 TSN data_preprocessor
IMAGENET_01 = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision / Places365 demo


# -- architectures (classifier head removed) ----------------------------------------------------


def _resnet_trunk(depth: int) -> torch.nn.Module:
    import torch
    import torchvision

    model = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth](weights=None)
    model.fc = torch.nn.Identity()  # output: the pooled feature vector
    return model


def build_tsn_r50() -> torch.nn.Module:
    """TSN's 2D backbone: torchvision ResNet-50 (mmaction2 uses the same "pytorch" style, stride on
    the 3x3 conv), global average pooled to 2,048-d."""
    return _resnet_trunk(50)


def build_resnet18_places365() -> torch.nn.Module:
    """The Places365 ResNet-18 is torchvision's resnet18 trained on Places365; 512-d features."""
    return _resnet_trunk(18)


def build_inception_resnet_v1() -> torch.nn.Module:
    """facenet-pytorch InceptionResnetV1 without the ``logits`` layer; L2-normalised 512-d."""
    from facenet_pytorch import InceptionResnetV1

    return InceptionResnetV1(pretrained=None, classify=False)


def build_resnet50_vggface2() -> torch.nn.Module:
    """ResNet-50 as in the VGGFace2 release (converted from Caffe, as in cydonia999/VGGFace2-pytorch):
    the stride of a down-sampling bottleneck sits on its first 1x1 conv, and the stem's max pool
    has no padding and rounds up. 2,048-d after global average pooling (7x7 at 224 input)."""
    import torch

    model = _resnet_trunk(50)
    model.maxpool = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for layer in (model.layer2, model.layer3, model.layer4):
        layer[0].conv1.stride = (2, 2)
        layer[0].conv2.stride = (1, 1)
    return model


# -- converters: published object -> (state dict in the architecture's naming, dropped keys) -----

Converted = tuple[dict[str, Any], list[str]]


def _state_dict_of(obj: Any, *keys: str) -> Mapping[str, Any]:
    """The tensor mapping inside a checkpoint: ``obj[key]`` for the first key present, else obj."""
    if isinstance(obj, Mapping):
        for key in keys:
            if isinstance(obj.get(key), Mapping):
                return obj[key]
        return obj
    raise WeightsError(f"checkpoint holds a {type(obj).__name__}, expected a mapping of tensors")


def convert_mmaction2_tsn(obj: Any) -> Converted:
    """mmaction2 TSN ResNet-50 -> torchvision ResNet-50 naming.

    ``backbone.conv1.conv.weight``              -> ``conv1.weight``
    ``backbone.conv1.bn.X``                     -> ``bn1.X``
    ``backbone.layerL.B.convK.conv.weight``     -> ``layerL.B.convK.weight``
    ``backbone.layerL.B.convK.bn.X``            -> ``layerL.B.bnK.X``
    ``backbone.layerL.B.downsample.conv.weight``-> ``layerL.B.downsample.0.weight``
    ``backbone.layerL.B.downsample.bn.X``       -> ``layerL.B.downsample.1.X``
    ``cls_head.*`` (the 400-class Kinetics classifier) is dropped; ``meta``, ``message_hub`` and
    optimiser state are not part of ``state_dict`` and are ignored.
    """
    sd = _state_dict_of(obj, "state_dict", "model")
    out: dict[str, Any] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in sd.items():
        if key.startswith("cls_head."):
            dropped.append(key)
            continue
        if not key.startswith("backbone."):
            unknown.append(key)
            continue
        k = key[len("backbone.") :]
        k = re.sub(r"^conv1\.conv\.", "conv1.", k)
        k = re.sub(r"^conv1\.bn\.", "bn1.", k)
        k = re.sub(r"\.conv(\d)\.conv\.", r".conv\1.", k)
        k = re.sub(r"\.conv(\d)\.bn\.", r".bn\1.", k)
        k = k.replace(".downsample.conv.", ".downsample.0.").replace(".downsample.bn.", ".downsample.1.")
        out[k] = value
    if unknown:
        raise WeightsError(f"not an mmaction2 TSN checkpoint: unexpected keys {unknown[:5]}")
    return out, dropped


def convert_places365(obj: Any) -> Converted:
    """Places365 ``resnet18_places365.pth.tar``: ``state_dict`` keys carry the ``module.`` prefix of
    ``DataParallel`` (stripped, as the Places365 demo does); the 365-class ``fc`` is dropped."""
    sd = _state_dict_of(obj, "state_dict")
    out, dropped = {}, []
    for key, value in sd.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        if k.startswith("fc."):
            dropped.append(key)
        else:
            out[k] = value
    return out, dropped


def convert_facenet(obj: Any) -> Converted:
    """facenet-pytorch ``20180402-114759-vggface2.pt``: already in the architecture's naming; the
    8,631-class ``logits`` layer is dropped."""
    sd = _state_dict_of(obj, "state_dict")
    out = {k: v for k, v in sd.items() if not k.startswith("logits.")}
    return out, [k for k in sd if k.startswith("logits.")]


_CAFFE_STAGE = re.compile(r"^conv(\d)_(\d+)_(1x1_reduce|3x3|1x1_increase|1x1_proj)(_bn)?$")
_CAFFE_CONV = {"1x1_reduce": ("conv1", "bn1"), "3x3": ("conv2", "bn2"), "1x1_increase": ("conv3", "bn3")}


def _caffe_name(layer: str) -> str | None:
    """Caffe layer name of the VGGFace2 ResNet-50 (``/`` already turned into ``_``) -> module path."""
    if layer == "conv1_7x7_s2":
        return "conv1"
    if layer == "conv1_7x7_s2_bn":
        return "bn1"
    m = _CAFFE_STAGE.match(layer)
    if not m:
        return None
    stage, block, kind, bn = int(m[1]), int(m[2]), m[3], bool(m[4])
    prefix = f"layer{stage - 1}.{block - 1}"
    if kind == "1x1_proj":
        return f"{prefix}.downsample.{1 if bn else 0}"
    conv, norm = _CAFFE_CONV[kind]
    return f"{prefix}.{norm if bn else conv}"


def convert_vggface2_resnet50(obj: Any) -> Converted:
    """VGGFace2 ResNet-50 ``resnet50_ft_weight.pkl``: a pickled dict of numpy arrays.

    Two namings are accepted. The file as distributed with cydonia999/VGGFace2-pytorch already
    uses the PyTorch module names of the architecture above (``conv1.weight``,
    ``layer1.0.bn1.running_mean``, ``fc.weight``). A dict in the original Caffe layer names
    (``conv1/7x7_s2``, ``conv1/7x7_s2/bn``, ``conv2_1_1x1_reduce``, ``conv2_1_3x3/bn``,
    ``conv2_1_1x1_increase``, ``conv2_1_1x1_proj``, ``classifier``), each followed by
    ``.weight|.bias|.running_mean|.running_var``, maps as: ``convS_B_1x1_reduce`` ->
    ``layer{S-1}.{B-1}.conv1`` (``3x3`` -> ``conv2``, ``1x1_increase`` -> ``conv3``, a ``/bn``
    suffix -> the matching ``bnK``), ``convS_B_1x1_proj`` -> ``downsample.0`` (``/bn`` ->
    ``downsample.1``), ``conv1/7x7_s2`` -> ``conv1`` (``/bn`` -> ``bn1``). ``classifier`` / ``fc``
    (8,631 identities) is dropped.
    """
    sd = _state_dict_of(obj, "state_dict")
    out, dropped, unknown = {}, [], []
    for key, value in sd.items():
        layer, _, param = key.replace("/", "_").rpartition(".")
        if layer in ("classifier", "fc"):
            dropped.append(key)
            continue
        if layer.startswith(("conv1", "bn1", "layer")) and "_" not in layer.split(".")[0]:
            out[key] = value  # already PyTorch naming
            continue
        target = _caffe_name(layer)
        if target is None or param not in ("weight", "bias", "running_mean", "running_var"):
            unknown.append(key)
            continue
        out[f"{target}.{param}"] = value
    if unknown:
        raise WeightsError(f"not a VGGFace2 ResNet-50 weight dict: unexpected keys {unknown[:5]}")
    return out, dropped


# -- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    name: str
    architecture: str
    build: Callable[[], Any]  # -> torch.nn.Module without classifier head
    feature_dim: int
    source_file: str  # name of the published file
    url: str | None  # None: no direct download (fetch explains where to get it)
    source_sha256: str | None  # digest (or published prefix) of the source file; None: unknown
    license: str
    preprocess: Preprocess
    convert: Callable[[Any], Converted] = field(repr=False)
    page: str | None = None  # where to get the file by hand when there is no direct URL


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="tsn_r50_kinetics400",
            architecture="TSN ResNet-50 (mmaction2 1.x, ImageNet-pretrained, trained on Kinetics-400, 1x1x3, 100e)",
            build=build_tsn_r50,
            feature_dim=2048,
            source_file="tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb_20220906-cd10898e.pth",
            url=(
                "https://download.openmmlab.com/mmaction/v1.0/recognition/tsn/"
                "tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb/"
                "tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb_20220906-cd10898e.pth"
            ),
            # OpenMMLab's publish_model appends the first 8 hex digits of the file's sha256
            source_sha256="cd10898e",
            license="mmaction2 model zoo, Apache-2.0; trained on Kinetics-400 (YouTube videos, research use)",
            preprocess=Preprocess(224, 256, *IMAGENET_255),
            convert=convert_mmaction2_tsn,
        ),
        ModelSpec(
            name="resnet18_places365",
            architecture="ResNet-18 trained on Places365-Standard (CSAILVision/places365)",
            build=build_resnet18_places365,
            feature_dim=512,
            source_file="resnet18_places365.pth.tar",
            url="http://places2.csail.mit.edu/models_places365/resnet18_places365.pth.tar",
            source_sha256=None,
            license="Places365 models: CC BY (places365 repository, MIT code); Places data for non-commercial research",
            preprocess=Preprocess(224, 256, *IMAGENET_01, value_range=1.0),
            convert=convert_places365,
        ),
        ModelSpec(
            name="inception_resnet_v1_vggface2",
            architecture="facenet-pytorch InceptionResnetV1 trained on VGGFace2 (20180402-114759)",
            build=build_inception_resnet_v1,
            feature_dim=512,
            source_file="20180402-114759-vggface2.pt",
            url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
            source_sha256=None,
            license="facenet-pytorch, MIT (weights ported from davidsandberg/facenet, MIT); VGGFace2 data for research use",
            # facenet-pytorch's fixed_image_standardization: (x - 127.5) / 128 on 160x160 crops
            preprocess=Preprocess(160, None, (127.5,) * 3, (128.0,) * 3),
            convert=convert_facenet,
        ),
        ModelSpec(
            name="resnet50_vggface2",
            architecture="ResNet-50 of the VGGFace2 release (resnet50_ft: MS1M, fine-tuned on VGGFace2), Caffe-converted",
            build=build_resnet50_vggface2,
            feature_dim=2048,
            source_file="resnet50_ft_weight.pkl",
            url=None,  # a Google Drive link (cydonia999/VGGFace2-pytorch README); download by hand
            source_sha256=None,
            license="VGGFace2 models (Oxford VGG), research use; conversion by cydonia999/VGGFace2-pytorch (MIT)",
            # Caffe convention: BGR, 0-255, mean subtraction only
            preprocess=Preprocess(224, 256, (91.4953, 103.8827, 131.0912), (1.0, 1.0, 1.0), channels="BGR"),
            convert=convert_vggface2_resnet50,
            page="https://drive.google.com/open?id=1A94PAAnwk6L7hXdBXLFosB_s0SzEhAFU (cydonia999/VGGFace2-pytorch README)",
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


# -- cache -------------------------------------------------------------------------------------


def weights_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR).expanduser()


def cached_file(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return weights_dir(cache_dir) / f"{name}.safetensors"


def lock_file(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return weights_dir(cache_dir) / f"{name}.lock.json"


def _fix_hint(spec: ModelSpec) -> str:
    where = spec.url or spec.page or "its publisher (see `vdv weights list`)"
    return (
        f"run `vdv weights fetch {spec.name}` on a machine with internet access, or download "
        f"{spec.source_file} from {where} and run `vdv weights import {spec.name} PATH`"
    )


def _atomic_write_bytes(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_lock(name: str, cache_dir: str | os.PathLike | None = None) -> dict | None:
    path = lock_file(name, cache_dir)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path} is unreadable ({err}); {_fix_hint(get_spec(name))}") from err


def verify_weights(name: str, *, cache_dir: str | os.PathLike | None = None) -> str:
    """Check the cached file against its lock; return its sha256 or raise :class:`WeightsError`."""
    spec = get_spec(name)
    path = cached_file(name, cache_dir)
    lock = read_lock(name, cache_dir)
    if not path.exists() or lock is None:
        missing = path if not path.exists() else lock_file(name, cache_dir)
        raise WeightsError(f"weights {name} are missing ({missing} does not exist); {_fix_hint(spec)}")
    found = sha256_file(path)
    if found != lock.get("sha256"):
        raise WeightsError(
            f"weights {name} failed verification: {path} has sha256 {found}, but {lock_file(name, cache_dir)} "
            f"recorded {lock.get('sha256')} when it was imported; the file is corrupt or was changed; {_fix_hint(spec)}"
        )
    return found


# -- reading published checkpoints -------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Load a published checkpoint without running code from it.

    torch zip files and legacy torch files go through ``torch.load(weights_only=True)`` first;
    when that refuses (mmengine objects, numpy arrays) they go through ``torch.load`` with the
    restricted :mod:`pipeline.unpickle`. Anything else is read as a plain pickle (the VGGFace2
    ``.pkl``, written by Python 2, hence ``latin1``) through the same restricted unpickler.
    """
    import pickle

    import torch

    from pipeline import unpickle

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist or is not a file")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            log.info("%s needs the restricted unpickler: %s", path.name, str(err).splitlines()[0])
        except RuntimeError as err:
            if zipfile.is_zipfile(path) or "magic number" not in str(err).lower():
                raise
            # not a torch file at all: a plain pickle
            with open(path, "rb") as fh:
                return unpickle.load(fh, encoding="latin1")
        if zipfile.is_zipfile(path) or _is_legacy_torch(path):
            return torch.load(path, map_location="cpu", pickle_module=unpickle, weights_only=False)
        with open(path, "rb") as fh:
            return unpickle.load(fh, encoding="latin1")
    except unpickle.RefusedGlobal as err:
        raise WeightsError(f"{path}: {err}; the file was not loaded") from err
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as err:
        raise WeightsError(f"{path} is not a readable checkpoint: {err}") from err


def _is_legacy_torch(path: Path) -> bool:
    """A pre-1.6 torch file starts with its pickled magic number (a 10-byte LONG1 opcode)."""
    with open(path, "rb") as fh:
        head = fh.read(32)
    return b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") in head


def _to_tensor(key: str, value: Any) -> torch.Tensor:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").clone().contiguous()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(value)).clone()
    raise WeightsError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")


def convert_checkpoint(name: str, obj: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Convert a loaded published checkpoint and check it fits the architecture exactly.

    Only the classifier head may be dropped; BatchNorm ``num_batches_tracked`` counters that old
    checkpoints lack are filled with 0 (they do not affect inference). Any missing, unexpected or
    misshapen tensor is a :class:`WeightsError`.
    """
    import torch

    spec = get_spec(name)
    raw, dropped = spec.convert(obj)
    state = {k: _to_tensor(k, v) for k, v in raw.items()}
    reference = spec.build().state_dict()
    for key, ref in reference.items():
        if key not in state and key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=ref.dtype)
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    shapes = [
        f"{k}: {tuple(state[k].shape)} != {tuple(reference[k].shape)}"
        for k in reference
        if k in state and state[k].shape != reference[k].shape
    ]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"checkpoint does not fit {spec.architecture}: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), shape mismatches {shapes[:5]} ({len(shapes)})"
        )
    state = {k: v.to(reference[k].dtype) for k, v in state.items()}
    return state, dropped


def _source_matches(expected: str, digest: str) -> bool:
    return digest.startswith(expected.lower())


def import_weights(
    name: str,
    path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    allow_other_source: bool = False,
) -> dict:
    """Import a published checkpoint into the cache (tensors only) and record its lock; return it.

    When the registry knows the published file's digest, a file with another digest is refused
    unless ``allow_other_source`` (a checkpoint converted or fine-tuned elsewhere); the lock
    records whether the source matched the publisher's digest.
    """
    from safetensors.torch import save_file

    spec = get_spec(name)
    if not Path(path).is_file():
        raise WeightsError(f"{path} does not exist or is not a file")
    source_digest = sha256_file(path)
    source_verified = spec.source_sha256 is not None and _source_matches(spec.source_sha256, source_digest)
    if spec.source_sha256 is not None and not source_verified and not allow_other_source:
        raise WeightsError(
            f"{path} has sha256 {source_digest}, but the published {spec.source_file} starts with "
            f"{spec.source_sha256}; it is a different file (pass --allow-other-source to import it anyway)"
        )
    state, dropped = convert_checkpoint(name, read_checkpoint(path))
    target = cached_file(name, cache_dir)
    _atomic_write_bytes(
        target, lambda tmp: save_file(state, tmp, metadata={"name": name, "source_sha256": source_digest})
    )
    lock = {
        "name": name,
        "file": target.name,
        "sha256": sha256_file(target),
        "source_file": Path(path).name,
        "source_sha256": source_digest,
        "source_url": spec.url,
        "source_verified": source_verified,
        "tensors": len(state),
        "dropped": dropped,
        "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _atomic_write_bytes(lock_file(name, cache_dir), lambda tmp: Path(tmp).write_text(json.dumps(lock, indent=2) + "\n"))
    log.info("imported %s from %s (%d tensors, dropped %s)", name, path, len(state), dropped)
    return lock


class _Mismatch(Exception):
    pass


def download_file(
    url: str,
    target: str | os.PathLike,
    *,
    sha256_prefix: str | None = None,
    timeout_s: float = 60.0,
    progress_enabled: bool | None = None,
) -> str:
    """Download ``url`` into a hidden temporary file beside ``target``, check it, then rename.

    The sha256 is computed while the bytes arrive; when ``sha256_prefix`` is given and the digest
    does not start with it, the temporary file is removed and :class:`WeightsError` raised, so a
    bad download never appears under ``target``'s name. Returns the file's sha256. A progress bar
    (bytes, rate, time left) is drawn on a terminal (:mod:`pipeline.progress`).
    """
    import hashlib
    import urllib.request

    from pipeline.progress import progress

    target = Path(target)
    digest = hashlib.sha256()

    def download(tmp: str) -> None:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with progress(total, target.name, unit="B", unit_scale=True, enabled=progress_enabled) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            if total is not None and out.tell() != total:
                raise OSError(f"connection closed after {out.tell()} of {total} bytes")
        if sha256_prefix is not None and not _source_matches(sha256_prefix, digest.hexdigest()):
            raise _Mismatch(digest.hexdigest())

    try:
        _atomic_write_bytes(target, download)
    except _Mismatch as err:
        raise WeightsError(
            f"downloaded {url} has sha256 {err}, but the published file's starts with {sha256_prefix}; "
            "nothing was kept (a truncated or altered download, or the publisher replaced the file)"
        ) from None
    return digest.hexdigest()


def _remove_if_empty(directory: Path) -> None:
    """Leave no empty ``downloads/`` behind a failed fetch."""
    with contextlib.suppress(OSError):
        directory.rmdir()  # only succeeds when empty


def fetch_weights(
    name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    timeout_s: float = 60.0,
    progress_enabled: bool | None = None,
) -> dict:
    """Download the published file into ``<cache>/downloads/`` (hash checked) and import it.

    Without network access this raises :class:`WeightsError` with one line naming the URL and
    the ``vdv weights import`` command to run on a file fetched elsewhere.
    """
    import urllib.error

    spec = get_spec(name)
    if spec.url is None:
        raise WeightsError(
            f"{name} has no direct download: get {spec.source_file} by hand from {spec.page} "
            f"and run `vdv weights import {name} {spec.source_file}`"
        )
    target = weights_dir(cache_dir) / "downloads" / spec.source_file
    if target.exists() and spec.source_sha256 is not None:
        if not _source_matches(spec.source_sha256, sha256_file(target)):
            target.unlink()  # a stale or altered earlier download is fetched again
    if not target.exists():
        try:
            download_file(
                spec.url,
                target,
                sha256_prefix=spec.source_sha256,
                timeout_s=timeout_s,
                progress_enabled=progress_enabled,
            )
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason = getattr(err, "reason", None) or err
            raise WeightsError(
                f"cannot download {spec.url} ({reason}); fetch that URL on a machine with internet access, "
                f"then run `vdv weights import {name} {spec.source_file}`"
            ) from err
        finally:
            _remove_if_empty(target.parent)
    return import_weights(name, target, cache_dir=cache_dir)


# -- loading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedWeights:
    state_dict: dict[str, Any] | None  # None when untrained
    sha256: str  # of the cached file, or "untrained"
    untrained: bool


def load_weights(name: str, *, cache_dir: str | os.PathLike | None = None, untrained: bool = False) -> LoadedWeights:
    """The verified state dict of ``name``; with ``untrained=True`` no file is read at all."""
    spec = get_spec(name)
    if untrained:
        log.warning(
            "%s: running with UNTRAINED (seeded random) weights; features are marked untrained and are not "
            "the paper's features",
            name,
        )
        return LoadedWeights(None, UNTRAINED, True)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    digest = verify_weights(name, cache_dir=cache_dir)
    try:
        state = load_file(cached_file(name, cache_dir))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{cached_file(name, cache_dir)} is unreadable ({err}); {_fix_hint(spec)}") from err
    return LoadedWeights(state, digest, False)


def infer(model, x, precision: str):
    """``model(x)`` without autograd, in channels_last, under bfloat16 autocast when ``precision``
    says so (CPU or CUDA), returned as a float32 numpy array; the one forward pass the appearance
    extractors share."""
    import torch

    from pipeline.runtime import autocast

    if x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(x.device.type, precision):
        out = model(x)
    return out.float().cpu().numpy()


def load_model(
    name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    untrained: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[torch.nn.Module, LoadedWeights]:
    """The feature network of ``name`` in eval mode (no classifier head) and its weights identity.

    Untrained models are initialised under ``torch.manual_seed(seed)`` inside a forked RNG, so
    the same seed gives the same weights without disturbing the caller's random state.
    """
    import torch

    spec = get_spec(name)
    loaded = load_weights(name, cache_dir=cache_dir, untrained=untrained)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build()
    if loaded.state_dict is not None:
        model.load_state_dict(loaded.state_dict)
    # channels_last: the convolution kernels of oneDNN (AMX, AVX512) and cuDNN are fastest in it
    return model.eval().to(device, memory_format=torch.channels_last), loaded


def status(name: str, *, cache_dir: str | os.PathLike | None = None) -> str:
    """ "ok", "missing" or "CORRUPT" for the cached copy of ``name`` (used by ``vdv weights list``)."""
    try:
        verify_weights(name, cache_dir=cache_dir)
    except WeightsError as err:
        return "missing" if "missing" in str(err) else "CORRUPT"
    return "ok"
