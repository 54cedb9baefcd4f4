"""Published checkpoint -> state dict in the architecture's own naming, checked to fit it exactly.

Each converter maps one publisher's key naming (documented on the converter) onto the
architecture of :mod:`pipeline.weights.nets` and drops the classifier head;
:func:`convert_checkpoint` then checks the result against the real architecture, so nothing that
does not fit is ever written to the cache.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipeline.core.errors import WeightsError

if TYPE_CHECKING:
    import torch

# published object -> (state dict in the architecture's naming, dropped keys)
Converted = tuple[dict[str, Any], list[str]]


class Convertible(Protocol):
    """What :func:`convert_checkpoint` needs of a network's description (a registry entry has it)."""

    architecture: str  # named in the refusal
    checkpoint_format: str  # a key of CONVERTERS: the publisher's layout

    @property
    def build(self) -> Callable[[], Any]: ...  # the architecture, whose state dict is the reference


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


def convert_blazepose(graph: Any) -> Converted:
    """A BlazePose .tflite read by :func:`pipeline.weights.tflite.read_graph` -> ``layers.<op>.*``.

    The file's operator list must be the committed architecture's (``pipeline/blazepose/*.json``):
    a different mediapipe release's model is refused here rather than run by a graph that does
    not describe it. Nothing is dropped.
    """
    from pipeline.weights.graphnet import ARCHITECTURES, architecture

    known = {name: architecture(name)["ops"] for name in ARCHITECTURES}
    ops = graph.architecture()["ops"]
    if ops not in known.values():
        raise WeightsError("this .tflite's operators differ from every BlazePose graph this version knows")
    return {f"layers.{k}": v for k, v in graph.params.items()}, []


def _to_tensor(key: str, value: Any) -> torch.Tensor:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").clone().contiguous()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(value)).clone()
    raise WeightsError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")


# checkpoint format (a registry entry's ``checkpoint_format``) -> the converter of its keys
CONVERTERS: dict[str, Callable[[Any], Converted]] = {
    "mmaction2_tsn": convert_mmaction2_tsn,
    "places365": convert_places365,
    "facenet": convert_facenet,
    "vggface2_resnet50": convert_vggface2_resnet50,
    "blazepose": convert_blazepose,
}


def convert_checkpoint(spec: Convertible, obj: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Convert a loaded published checkpoint of ``spec`` and check it fits the architecture exactly.

    Only the classifier head may be dropped; BatchNorm ``num_batches_tracked`` counters that old
    checkpoints lack are filled with 0 (they do not affect inference). Any missing, unexpected or
    misshapen tensor is a :class:`WeightsError`.
    """
    import torch

    if not spec.checkpoint_format:
        raise WeightsError(f"{spec.architecture} has no published checkpoint to convert (it runs untrained only)")
    if spec.checkpoint_format not in CONVERTERS:
        raise WeightsError(f"no converter for checkpoint format {spec.checkpoint_format!r} ({spec.architecture})")
    raw, dropped = CONVERTERS[spec.checkpoint_format](obj)
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
