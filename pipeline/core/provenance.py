"""Provenance: code-derived extractor versions, feature identities and run lineage (SPEC section 4).

An extractor's version is a hash of the code of the modules that compute it, so it changes
whenever the code does; nobody has to remember to bump a string. The hash is taken over the
module's syntax tree with docstrings removed (comments never reach the tree), so editing a
docstring or a comment does not re-extract or re-screen anything, while any change to what the
code does (a constant, an expression, a default) changes the version.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import platform
import subprocess
import threading
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

UNTRAINED = "untrained"
"""The weights digest recorded by features from seeded random (``--untrained``) weights."""


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Remove the docstring (a leading string expression) of the module, every class and function."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    # a body may not be empty: a docstring-only function keeps a `pass`
                    node.body = body[1:] or [ast.Pass()]
    return tree


# CPython 3.11 keeps the AST constructor's recursion depth in interpreter-wide state, so two
# threads parsing at once (Prefect runs tasks in threads) can leave it off balance, and every
# later parse in the process then fails with "AST constructor recursion depth mismatch"
# (CPython gh-106905). This module parses one source at a time.
_AST_LOCK = threading.Lock()


def code_fingerprint(source: str) -> str:
    """The code of ``source`` without docstrings, comments or layout (a canonical AST dump)."""
    with _AST_LOCK:
        return ast.dump(_strip_docstrings(ast.parse(source)), annotate_fields=False, include_attributes=False)


@cache
def code_version(*modules: ModuleType) -> str:
    """Short sha256 over the code of ``modules`` (module objects), in the order given.

    Each module counts with its dotted name, so moving a module changes the version of what it
    computes even when its code is unchanged. Docstrings, comments and formatting do not count
    (:func:`code_fingerprint`).
    """
    digest = hashlib.sha256()
    for module in modules:
        if not isinstance(module, ModuleType):
            raise TypeError(f"code_version takes modules, not {type(module).__name__} {module!r}")
        code = code_fingerprint(inspect.getsource(module))
        digest.update(module.__name__.encode() + b"\0" + code.encode() + b"\0")
    return digest.hexdigest()[:16]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def feature_identity(
    *,
    clip_id: str,
    modality: str,
    extractor: str,
    extractor_version: str,
    weights_sha256: str,
    params: dict,
    precision: str,
) -> str:
    """Everything that decides a feature row's content; equal identity means nothing to redo.

    The device is provenance, not identity: CPU and GPU runs of the same code, weights and
    precision are taken to be the same features.
    """
    payload = canonical_json(
        {
            "clip_id": clip_id,
            "modality": modality,
            "extractor": extractor,
            "extractor_version": extractor_version,
            "weights_sha256": weights_sha256,
            "params": params,
            "precision": precision,
        }
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - an absent optional library is recorded as absent
        return None
    return getattr(mod, "__version__", "unknown")


def run_lineage(device: str | None = None, precision: str | None = None) -> dict:
    """Code commit, library versions (torch, mediapipe, FFmpeg, ...), device and dtype of a run."""
    import av

    lineage = {
        "code_commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {
            name: _version(name)
            for name in (
                "numpy",
                "pyarrow",
                "torch",
                "torchvision",
                "mediapipe",
                "cv2",
                "av",
                "facenet_pytorch",
                "prefect",
            )
        },
        "ffmpeg": {
            k: ".".join(map(str, v)) if isinstance(v, tuple) else str(v) for k, v in av.library_versions.items()
        },
    }
    if device is not None:
        lineage["device"] = device
    if precision is not None:
        lineage["precision"] = precision
    return lineage
