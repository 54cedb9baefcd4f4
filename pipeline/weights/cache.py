"""The verified local cache of converted weights, and loading from it.

``$VDV_WEIGHTS_DIR``, else ``~/.cache/vdv/weights``. For a model ``NAME`` it holds

* ``NAME.safetensors``: plain tensors only, in the architecture's own key naming and without
  the classifier head, so loading is ``model.load_state_dict(state_dict)`` (strict);
* ``NAME.lock.json``: written when the file is fetched or imported; it records the sha256 of
  ``NAME.safetensors`` (and of the published file it came from). Loading recomputes the sha256
  and refuses a file that differs. The registry cannot pin the digest of the converted file in
  advance because the project has never seen the real checkpoints; it pins what the publisher
  states about the *source* file instead (``source_sha256``, the full digest or the prefix that
  OpenMMLab embeds in its file names), and ``fetch``/``import`` check that when it is known.

A missing or mismatching file raises :class:`~pipeline.core.errors.WeightsError` whose message names
the command that fixes it. ``untrained=True`` (explicit only) gives seeded random weights and
the sha256 ``"untrained"``, which every feature row then records.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import WeightsError
from pipeline.core.provenance import UNTRAINED, sha256_file
from pipeline.weights.registry import ModelSpec, get_spec

log = logging.getLogger(__name__)

ENV_DIR = "VDV_WEIGHTS_DIR"
DEFAULT_DIR = Path("~/.cache/vdv/weights")


def weights_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR).expanduser()


def cached_file(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return weights_dir(cache_dir) / f"{name}.safetensors"


def lock_file(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return weights_dir(cache_dir) / f"{name}.lock.json"


def fix_hint(spec: ModelSpec) -> str:
    """The commands that put ``spec``'s weights into the cache, for error messages."""
    if spec.bundled is not None:
        return f"run `vdv weights fetch {spec.name}` (it imports {spec.source_file} from {spec.page}, offline)"
    where = spec.url or spec.page or "its publisher (see `vdv weights list`)"
    return (
        f"run `vdv weights fetch {spec.name}` on a machine with internet access, or download "
        f"{spec.source_file} from {where} and run `vdv weights import {spec.name} PATH`"
    )


def read_lock(name: str, cache_dir: str | os.PathLike | None = None) -> dict | None:
    path = lock_file(name, cache_dir)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path} is unreadable ({err}); {fix_hint(get_spec(name))}") from err


def verify_weights(name: str, *, cache_dir: str | os.PathLike | None = None) -> str:
    """Check the cached file against its lock; return its sha256 or raise :class:`WeightsError`."""
    spec = get_spec(name)
    path = cached_file(name, cache_dir)
    lock = read_lock(name, cache_dir)
    if not path.exists() or lock is None:
        missing = path if not path.exists() else lock_file(name, cache_dir)
        raise WeightsError(f"weights {name} are missing ({missing} does not exist); {fix_hint(spec)}")
    found = sha256_file(path)
    if found != lock.get("sha256"):
        raise WeightsError(
            f"weights {name} failed verification: {path} has sha256 {found}, but {lock_file(name, cache_dir)} "
            f"recorded {lock.get('sha256')} when it was imported; the file is corrupt or was changed; {fix_hint(spec)}"
        )
    return found


def recorded_sha256(name: str, *, cache_dir: str | os.PathLike | None = None, untrained: bool = False) -> str:
    """The weights sha256 a load of ``name`` would record, without loading the network: ``"untrained"``,
    or the cached file's, checked against its lock (:func:`verify_weights`; a missing or changed
    file raises :class:`WeightsError`). What an extractor's identity needs (``load=False``)."""
    if untrained:
        return UNTRAINED
    return verify_weights(name, cache_dir=cache_dir)


def status(name: str, *, cache_dir: str | os.PathLike | None = None) -> str:
    """ "ok", "missing" or "CORRUPT" for the cached copy of ``name`` (used by ``vdv weights list``)."""
    try:
        verify_weights(name, cache_dir=cache_dir)
    except WeightsError as err:
        return "missing" if "missing" in str(err) else "CORRUPT"
    return "ok"


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
        raise WeightsError(f"{cached_file(name, cache_dir)} is unreadable ({err}); {fix_hint(spec)}") from err
    return LoadedWeights(state, digest, False)
