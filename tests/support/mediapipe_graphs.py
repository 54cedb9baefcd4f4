"""mediapipe's pose subgraphs as the installed wheel carries them: inside its native library.

The wheel has no ``.pbtxt`` files and only the top graph as ``pose_landmark_cpu.binarypb``; the
subgraphs it expands (``PoseDetectionCpu``, ``PoseLandmarkFiltering``, ...) are compiled into
``mediapipe/python/_framework_bindings*.so`` as serialized ``CalculatorGraphConfig`` messages.
:func:`embedded_graph` finds one by its ``type`` field and parses it with mediapipe's own proto
classes, so tests compare ``pipeline.blazepose.calculators``' constants with what the binary runs.

Parsing the options needs every calculator's options module imported, and importing them changes
what ``mp.solutions.pose`` computes in that process (``pipeline.blazepose.calculators``,
``HEATMAP_KERNEL``). So tests call :func:`node_texts`, which does the parsing in a child process.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from functools import cache
from pathlib import Path


@cache
def _library() -> bytes:
    import mediapipe

    (path,) = Path(mediapipe.__file__).parent.joinpath("python").glob("_framework_bindings*.so")
    return path.read_bytes()


@cache
def _register_options() -> None:
    """Import every calculator options module, so that parsing knows their extensions."""
    import mediapipe.calculators

    for module in pkgutil.walk_packages(mediapipe.calculators.__path__, "mediapipe.calculators."):
        if module.name.endswith("_pb2"):
            try:
                importlib.import_module(module.name)
            except ImportError:
                pass


def embedded_graph(name: str):
    """The subgraph ``name`` (a ``CalculatorGraphConfig``) as the wheel's library holds it.

    The message ends with its ``type`` field (field 20: bytes A2 01, length, name); its start is
    the farthest node boundary before that which still parses into a graph of that type.
    """
    from mediapipe.framework import calculator_pb2

    _register_options()
    data = _library()
    needle = b"\xa2\x01" + bytes([len(name)]) + name.encode()
    found = re.search(re.escape(needle), data)
    if found is None:
        raise LookupError(f"no subgraph {name} in mediapipe's library")
    end = found.end()
    best = None
    for start in range(found.start() - 1, max(0, found.start() - 20000), -1):
        if data[start] != 0x0A:  # field 1 (node), length-delimited
            continue
        graph = calculator_pb2.CalculatorGraphConfig()
        try:
            graph.ParseFromString(data[start:end])
        except Exception:  # noqa: BLE001 - most offsets are not a message's start
            continue
        if graph.type == name and (best is None or len(graph.node) > len(best.node)):
            best = graph
    if best is None:
        raise LookupError(f"subgraph {name} found but not parsed")
    return best


def _node_texts_here(name: str) -> list[tuple[str, str]]:
    from google.protobuf import text_format

    return [(n.calculator, text_format.MessageToString(n)) for n in embedded_graph(name).node]


def node_texts(name: str) -> list[tuple[str, str]]:
    """``(calculator, its node as text)`` for each node of subgraph ``name``, parsed in a child
    process so that this one never imports mediapipe's options modules (module docstring)."""
    import json
    import subprocess
    import sys

    code = f"import json; from tests.support.mediapipe_graphs import _node_texts_here; print(json.dumps(_node_texts_here({name!r})))"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    return [tuple(pair) for pair in json.loads(done.stdout.strip().splitlines()[-1])]
