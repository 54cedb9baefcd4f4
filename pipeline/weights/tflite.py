"""A TFLite flatbuffer read into an operator list and float32 tensors, without tensorflow.

The two BlazePose files that ship in the mediapipe wheel are small convolutional graphs: fp16
weights behind ``DEQUANTIZE``, some of them sparse behind ``DENSIFY`` (the detector's 1x1
convolutions, compressed rows), and a handful of operators. :func:`read_graph` parses the file
with the ``tflite`` package (the flatbuffer schema's generated reader), folds every constant
sub-graph (``DENSIFY``, ``DEQUANTIZE``) into float32 arrays, and describes each remaining operator
as an :class:`Op` in the layout torch runs it in (NCHW):

=====================  ===================================================================
TFLite operator        :class:`Op` ``kind`` and what its attributes mean
=====================  ===================================================================
CONV_2D                ``conv``: weights OIHW, ``pad`` (top, bottom, left, right), stride,
                       dilation, ``act`` (``none``, ``relu``, ``relu6``)
DEPTHWISE_CONV_2D      ``conv`` with ``groups`` = input channels (weights (C*m, 1, kh, kw))
ADD                    ``add`` of two activations, fused ``act``
PAD                    ``pad``: zero padding of H, W and C (``pad``: [[top, bottom], [left,
                       right], [front, back]])
RESIZE_BILINEAR        ``resize``: bilinear to ``size``; ``half_pixel`` (TF's half-pixel
                       centres, torch's ``align_corners=False``) or ``align_corners``
MAX_POOL_2D            ``maxpool``: ``kernel``, ``stride``, ``pad``
LOGISTIC               ``sigmoid``
RESHAPE                ``reshape``: to ``shape`` in TFLite's (NHWC) element order; a 4-D input
                       is read in NHWC order, a 4-D output written back as NCHW
CONCATENATION          ``concat`` on ``axis`` (NCHW-numbered for 4-D tensors)
DEPTH_TO_SPACE         ``depth_to_space``: TFLite's order (the block offset is the channel's
                       high part: ``c_in = (i * b + j) * C + c``), which is not ``pixel_shuffle``'s
=====================  ===================================================================

Padding: TFLite's ``SAME`` pads ``total = max((out - 1) * stride + k - in, 0)`` with the smaller
half first, so a stride-2 3x3 convolution on an even input pads (0, 1): asymmetric, which torch's
``padding=`` cannot express; every pad is therefore explicit in :class:`Op` and the network applies
it with ``F.pad`` where it is not symmetric.

Any other operator, a quantised activation or a dynamic shape is refused with the operator's name:
these readers are made for these two graphs and say so when handed another one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_ACTIVATIONS = {0: "none", 1: "relu", 3: "relu6"}  # tflite.ActivationFunctionType
_FLOAT32, _FLOAT16, _INT32 = 0, 1, 2  # tflite.TensorType
_PADDING_SAME, _PADDING_VALID = 0, 1  # tflite.Padding
_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}  # an NHWC axis's place in NCHW


class GraphError(ValueError):
    """The file is not a graph these readers know (an operator, a type or a shape they refuse)."""


@dataclass(frozen=True)
class Op:
    """One operator on activations; ``attrs`` are plain JSON values (see the module table)."""

    kind: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "inputs": list(self.inputs), "output": self.output, "attrs": self.attrs}

    @classmethod
    def from_dict(cls, d: dict) -> Op:
        return cls(d["kind"], tuple(d["inputs"]), d["output"], dict(d["attrs"]))


@dataclass
class Graph:
    """A graph's operators in execution order, its float32 weights by parameter name, its I/O.

    ``outputs`` maps the file's output names (``Identity``, ``Identity_1``...)
    to activations. Parameters are named ``<op index>.weight`` and ``<op index>.bias``.
    """

    ops: list[Op]
    params: dict[str, np.ndarray]
    input: str
    input_shape: tuple[int, ...]
    outputs: dict[str, str]

    def architecture(self) -> dict:
        """Everything but the weights: what the network code rebuilds the module from."""
        return {
            "input": self.input,
            "input_shape": list(self.input_shape),
            "outputs": self.outputs,
            "params": {k: list(v.shape) for k, v in self.params.items()},
            "ops": [op.as_dict() for op in self.ops],
        }


def _opnames() -> dict[int, str]:
    import tflite

    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


def _sparse_indices(vector_type: int, table) -> np.ndarray:
    """A ``SparseIndexVector`` union member as an int array (Int32, Uint16 or Uint8 vectors)."""
    import tflite

    kinds = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}
    if vector_type not in kinds:
        raise GraphError(f"unknown sparse index vector type {vector_type}")
    vec = kinds[vector_type]()
    vec.Init(table.Bytes, table.Pos)
    return np.asarray(vec.ValuesAsNumpy(), dtype=np.int64)


def _densify(values: np.ndarray, shape: tuple[int, ...], sparsity) -> np.ndarray:
    """A sparse constant (dense leading dimensions, one compressed-row last dimension) made dense.

    The two BlazePose files use one layout only: traversal order 0..n-1, no block map, every
    dimension dense but the last, which is ``SPARSE_CSR`` with a segment array (one segment per
    row of the leading dimensions) and the column indices of the stored values.
    """
    order = list(sparsity.TraversalOrderAsNumpy())
    formats = [sparsity.DimMetadata(d).Format() for d in range(sparsity.DimMetadataLength())]
    if order != list(range(len(shape))) or sparsity.BlockMapLength() or formats != [0] * (len(shape) - 1) + [1]:
        raise GraphError(f"unsupported sparsity layout: order {order}, formats {formats}")
    last = sparsity.DimMetadata(len(shape) - 1)
    segments = _sparse_indices(last.ArraySegmentsType(), last.ArraySegments())
    columns = _sparse_indices(last.ArrayIndicesType(), last.ArrayIndices())
    rows = int(np.prod(shape[:-1]))
    if len(segments) != rows + 1 or segments[-1] != len(values) or len(columns) != len(values):
        raise GraphError("sparse tensor's segments do not match its values")
    dense = np.zeros((rows, shape[-1]), dtype=values.dtype)
    row_of = np.repeat(np.arange(rows), np.diff(segments))
    dense[row_of, columns] = values
    return dense.reshape(shape)


class _Reader:
    def __init__(self, data: bytes):
        import tflite

        self.model = tflite.Model.GetRootAsModel(data, 0)
        if self.model.SubgraphsLength() != 1:
            raise GraphError(f"expected one subgraph, found {self.model.SubgraphsLength()}")
        self.g = self.model.Subgraphs(0)
        names = _opnames()
        self.opnames = []
        for i in range(self.model.OperatorCodesLength()):
            code = self.model.OperatorCodes(i)
            self.opnames.append(names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?"))
        self.const: dict[int, np.ndarray] = {}

    def tensor(self, index: int):
        return self.g.Tensors(index)

    def name(self, index: int) -> str:
        return f"t{index}"

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(int(s) for s in self.tensor(index).ShapeAsNumpy())

    def raw(self, index: int) -> np.ndarray | None:
        """A tensor's constant buffer as an array, or None for an activation."""
        t = self.tensor(index)
        buf = self.model.Buffers(t.Buffer())
        if buf is None or buf.DataLength() == 0:
            return None
        dtype = {_FLOAT32: np.float32, _FLOAT16: np.float16, _INT32: np.int32}.get(t.Type())
        if dtype is None:
            raise GraphError(f"tensor {t.Name().decode()} has unsupported type {t.Type()}")
        values = np.frombuffer(buf.DataAsNumpy().tobytes(), dtype=dtype)
        if t.Sparsity() is not None:
            return values  # DENSIFY makes it dense
        return values.reshape(self.shape(index))

    def constant(self, index: int) -> np.ndarray | None:
        if index in self.const:
            return self.const[index]
        return self.raw(index)


def _options(op, cls):
    opts = cls()
    table = op.BuiltinOptions()
    if table is None:
        raise GraphError(f"operator without its options ({cls.__name__})")
    opts.Init(table.Bytes, table.Pos)
    return opts


def _act(code: int) -> str:
    if code not in _ACTIVATIONS:
        raise GraphError(f"unsupported fused activation {code}")
    return _ACTIVATIONS[code]


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite's SAME padding of one dimension: (before, after), the smaller half before."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _conv(r: _Reader, op, kind: str, k: int, params: dict) -> Op:
    import tflite

    x, w, b = (op.Inputs(i) for i in range(3))
    weight = r.constant(w)
    bias = r.constant(b) if b >= 0 else None
    if weight is None:
        raise GraphError("convolution with a non-constant weight")
    _, _, h, wd = _nchw(r.shape(x))
    if kind == "CONV_2D":
        o = _options(op, tflite.Conv2DOptions)
        torch_weight = np.ascontiguousarray(weight.transpose(0, 3, 1, 2))  # OHWI -> OIHW
        groups = 1
    else:
        o = _options(op, tflite.DepthwiseConv2DOptions)
        torch_weight = np.ascontiguousarray(weight[0].transpose(2, 0, 1)[:, None])  # 1HWC -> C1HW
        groups = _nchw(r.shape(x))[1]
    kh, kw = torch_weight.shape[2:]
    stride = (o.StrideH(), o.StrideW())
    dilation = (o.DilationHFactor(), o.DilationWFactor())
    if o.Padding() == _PADDING_SAME:
        top, bottom = _same_pad(h, kh, stride[0], dilation[0])
        left, right = _same_pad(wd, kw, stride[1], dilation[1])
    elif o.Padding() == _PADDING_VALID:
        top = bottom = left = right = 0
    else:
        raise GraphError(f"unknown padding {o.Padding()}")
    params[f"{k}.weight"] = torch_weight.astype(np.float32)
    params[f"{k}.bias"] = (
        np.zeros(torch_weight.shape[0], np.float32) if bias is None else bias.astype(np.float32).reshape(-1)
    )
    return Op(
        "conv",
        (r.name(x),),
        r.name(op.Outputs(0)),
        {
            "in_channels": int(groups if kind != "CONV_2D" else torch_weight.shape[1]),
            "out_channels": int(torch_weight.shape[0]),
            "kernel": [int(kh), int(kw)],
            "stride": list(stride),
            "dilation": list(dilation),
            "groups": int(groups),
            "pad": [top, bottom, left, right],
            "act": _act(o.FusedActivationFunction()),
        },
    )


def _nchw(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape


def _op(r: _Reader, op, kind: str, k: int, params: dict) -> Op | None:
    """The :class:`Op` of one TFLite operator; None when it was folded into a constant."""
    import tflite

    ins = [op.Inputs(i) for i in range(op.InputsLength())]
    out = op.Outputs(0)
    if kind in ("DEQUANTIZE", "DENSIFY"):
        value = r.constant(ins[0])
        if value is None:
            raise GraphError(f"{kind} of an activation")
        if kind == "DENSIFY":
            value = _densify(value, r.shape(out), r.tensor(ins[0]).Sparsity())
        r.const[out] = value.astype(np.float32) if kind == "DEQUANTIZE" else value
        return None
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _conv(r, op, kind, k, params)
    name, src = r.name(out), tuple(r.name(i) for i in ins)
    if kind == "ADD":
        if any(r.constant(i) is not None for i in ins):
            raise GraphError("ADD of a constant")
        return Op("add", src, name, {"act": _act(_options(op, tflite.AddOptions).FusedActivationFunction())})
    if kind == "PAD":
        pads = r.constant(ins[1]).reshape(-1, 2).tolist()
        if len(pads) != 4 or pads[0] != [0, 0]:
            raise GraphError(f"PAD of the batch or of a non-4-D tensor: {pads}")
        return Op("pad", src[:1], name, {"pad": [pads[1], pads[2], pads[3]]})
    if kind == "RESIZE_BILINEAR":
        o = _options(op, tflite.ResizeBilinearOptions)
        size = [int(v) for v in r.constant(ins[1])]
        return Op(
            "resize",
            src[:1],
            name,
            {"size": size, "half_pixel": bool(o.HalfPixelCenters()), "align_corners": bool(o.AlignCorners())},
        )
    if kind == "MAX_POOL_2D":
        o = _options(op, tflite.Pool2DOptions)
        kernel, stride = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        _, _, h, w = _nchw(r.shape(ins[0]))
        pad = [0, 0, 0, 0]
        if o.Padding() == _PADDING_SAME:
            pad = [*_same_pad(h, kernel[0], stride[0], 1), *_same_pad(w, kernel[1], stride[1], 1)]
        if any(pad):
            raise GraphError("MAX_POOL_2D with padding")
        if _act(o.FusedActivationFunction()) != "none":
            raise GraphError("MAX_POOL_2D with a fused activation")
        return Op("maxpool", src, name, {"kernel": list(kernel), "stride": list(stride)})
    if kind == "LOGISTIC":
        return Op("sigmoid", src, name)
    if kind == "RESHAPE":
        shape = [int(v) for v in r.shape(out)]
        return Op("reshape", src[:1], name, {"shape": shape[1:], "in_rank": len(r.shape(ins[0]))})
    if kind == "CONCATENATION":
        o = _options(op, tflite.ConcatenationOptions)
        rank = len(r.shape(out))
        axis = o.Axis() % rank
        if _act(o.FusedActivationFunction()) != "none":
            raise GraphError("CONCATENATION with a fused activation")
        return Op("concat", src, name, {"axis": _NCHW_AXIS[axis] if rank == 4 else axis})
    if kind == "DEPTH_TO_SPACE":
        return Op("depth_to_space", src, name, {"block": _options(op, tflite.DepthToSpaceOptions).BlockSize()})
    raise GraphError(f"operator {kind} is not supported")


def read_graph(path_or_bytes: str | Path | bytes) -> Graph:
    """Parse a .tflite file (a path or its bytes) into a :class:`Graph` (module docstring)."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    r = _Reader(data)
    g = r.g
    if g.InputsLength() != 1:
        raise GraphError(f"expected one input, found {g.InputsLength()}")
    ops: list[Op] = []
    params: dict[str, np.ndarray] = {}
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        made = _op(r, op, r.opnames[op.OpcodeIndex()], len(ops), params)
        if made is not None:
            ops.append(made)
    outputs = {r.tensor(g.Outputs(i)).Name().decode(): r.name(g.Outputs(i)) for i in range(g.OutputsLength())}
    return Graph(ops, params, r.name(g.Inputs(0)), _nchw(r.shape(g.Inputs(0))), outputs)
