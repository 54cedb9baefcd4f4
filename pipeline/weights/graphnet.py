"""The BlazePose networks as torch modules: a TFLite operator list run in NCHW.

The architecture of each network is data: the operator list :mod:`pipeline.weights.tflite`
reads from the file that ships in the mediapipe wheel, committed in ``graphs/`` beside this module
(``pose_detection.json``, ``pose_landmark_full.json``; :func:`architecture`). The weights are
float32 tensors in the weights cache (``blazepose_detector``, ``blazepose_landmark_full``), named
``layers.<op index>.weight|bias``. :class:`GraphNet` rebuilds the module from the architecture and
runs the operators in order, so the module computes exactly what the file describes, batched:
TFLite's graphs have a batch of one, here the batch is free.

Two rewrites make it faster without changing what it computes: a zero ``PAD`` of H and W that
only feeds a convolution becomes that convolution's padding (zero padding composes by adding),
and an activation is freed after its last use, so a batch of 256 landmark crops holds only the
live tensors. ``tests/test_blazepose.py`` checks every output against TFLite's own interpreter.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.weights.tflite import Op

ARCHITECTURES = {
    "blazepose_detector": "pose_detection.json",
    "blazepose_landmark_full": "pose_landmark_full.json",
}


@cache
def architecture(name: str) -> dict:
    """The committed architecture of network ``name`` (see the module docstring)."""
    return json.loads((Path(__file__).parent / "graphs" / ARCHITECTURES[name]).read_text())


_ACT = {"none": None, "relu": F.relu, "relu6": F.relu6}


class GraphNet(nn.Module):
    """A TFLite graph of :class:`~pipeline.weights.tflite.Op` as a module.

    ``forward(x)`` takes the input batch in NCHW and returns ``{output name: tensor}`` (4-D
    outputs in NCHW, the others as TFLite shapes them with the batch first).
    """

    def __init__(self, arch: dict):
        super().__init__()
        self.input = arch["input"]
        self.outputs = dict(arch["outputs"])
        ops = [Op.from_dict(d) for d in arch["ops"]]
        ops, self.conv_pads = _fold_pads(ops, set(self.outputs.values()))
        self.ops = ops
        self.layers = nn.ModuleDict()
        for k, op in ops:
            if op.kind == "conv":
                a = op.attrs
                top, bottom, left, right = self.conv_pads[k]
                symmetric = top == bottom and left == right
                self.layers[str(k)] = nn.Conv2d(
                    a["in_channels"],
                    a["out_channels"],
                    tuple(a["kernel"]),
                    stride=tuple(a["stride"]),
                    padding=(top, left) if symmetric else 0,
                    dilation=tuple(a["dilation"]),
                    groups=a["groups"],
                )
        # the index of each activation's last reader, so it can be freed after it
        last: dict[str, int] = {}
        for position, (_, op) in enumerate(ops):
            for name in op.inputs:
                last[name] = position
        keep = set(self.outputs.values())
        self.free_after = [[n for n in op.inputs if last[n] == p and n not in keep] for p, (_, op) in enumerate(ops)]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values = {self.input: x}
        for position, (k, op) in enumerate(self.ops):
            values[op.output] = self._run(k, op, [values[n] for n in op.inputs])
            for name in self.free_after[position]:
                del values[name]
        return {out: values[name] for out, name in self.outputs.items()}

    def _run(self, k: int, op: Op, xs: list[torch.Tensor]) -> torch.Tensor:
        a = op.attrs
        if op.kind == "conv":
            conv = self.layers[str(k)]
            top, bottom, left, right = self.conv_pads[k]
            x = xs[0]
            if (top, left) != conv.padding or (top, left) != (bottom, right):
                x = F.pad(x, (left, right, top, bottom))  # asymmetric (TFLite's SAME at stride 2)
            return _activate(conv(x), a["act"])
        if op.kind == "add":
            return _activate(xs[0] + xs[1], a["act"])
        if op.kind == "pad":
            (top, bottom), (left, right), (front, back) = a["pad"]
            return F.pad(xs[0], (left, right, top, bottom, front, back))
        if op.kind == "resize":
            if not (a["half_pixel"] or a["align_corners"]):
                raise ValueError("legacy TF bilinear resize (no half-pixel centres) is not supported")
            return F.interpolate(xs[0], size=tuple(a["size"]), mode="bilinear", align_corners=a["align_corners"])
        if op.kind == "maxpool":
            return F.max_pool2d(xs[0], tuple(a["kernel"]), tuple(a["stride"]))
        if op.kind == "sigmoid":
            return torch.sigmoid(xs[0])
        if op.kind == "reshape":
            x = xs[0].permute(0, 2, 3, 1) if a["in_rank"] == 4 else xs[0]
            x = x.reshape(x.shape[0], *a["shape"])
            return x.permute(0, 3, 1, 2) if x.ndim == 4 else x
        if op.kind == "concat":
            return torch.cat(xs, dim=a["axis"])
        if op.kind == "depth_to_space":
            return _depth_to_space(xs[0], a["block"])
        raise ValueError(f"unknown operator {op.kind!r}")


def _activate(x: torch.Tensor, act: str) -> torch.Tensor:
    fn = _ACT[act]
    return x if fn is None else fn(x)


def _depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """TFLite's DEPTH_TO_SPACE in NCHW: ``out[c, h*b+i, w*b+j] = in[(i*b+j)*C + c, h, w]``."""
    n, c, h, w = x.shape
    out = c // (block * block)
    x = x.reshape(n, block, block, out, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, out, h * block, w * block)


def _fold_pads(ops: list[Op], keep: set[str]) -> tuple[list[tuple[int, Op]], dict[int, list[int]]]:
    """The operators to run, each with its index in the file's list, and every convolution's
    padding (top, bottom, left, right) with the zero ``PAD`` of H and W that only feeds it folded in."""
    readers: dict[str, list[int]] = {}
    for k, op in enumerate(ops):
        for name in op.inputs:
            readers.setdefault(name, []).append(k)
    pads = {k: list(op.attrs["pad"]) for k, op in enumerate(ops) if op.kind == "conv"}
    renamed: dict[str, str] = {}
    dropped: set[int] = set()
    for k, op in enumerate(ops):
        if op.kind != "pad" or op.output in keep:
            continue
        (top, bottom), (left, right), (front, back) = op.attrs["pad"]
        users = readers.get(op.output, [])
        if front or back or len(users) != 1 or ops[users[0]].kind != "conv":
            continue
        conv = pads[users[0]]
        pads[users[0]] = [conv[0] + top, conv[1] + bottom, conv[2] + left, conv[3] + right]
        renamed[op.output] = op.inputs[0]
        dropped.add(k)
    kept = []
    for k, op in enumerate(ops):
        if k in dropped:
            continue
        inputs = tuple(renamed.get(n, n) for n in op.inputs)
        kept.append((k, Op(op.kind, inputs, op.output, op.attrs)))
    return kept, pads


def build(name: str) -> GraphNet:
    """Network ``name`` with its architecture and unset (random) weights."""
    return GraphNet(architecture(name))
