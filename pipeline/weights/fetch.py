"""Published checkpoints into the cache: reading them safely, importing, downloading.

Published checkpoints are read with ``torch.load(weights_only=True)`` where the format allows it,
else through :mod:`pipeline.core.unpickle` (a restricted unpickler that rebuilds tensors and arrays,
stubs training metadata and refuses every other global), then converted by a per-model key
mapping (:mod:`pipeline.weights.convert`, documented on each converter) and checked against the
real architecture before anything is written. ``fetch`` and ``import`` check the published
file's digest when the registry knows it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.errors import WeightsError
from pipeline.core.provenance import sha256_file
from pipeline.core.tables import atomic_write
from pipeline.weights.cache import cached_file, lock_file, weights_dir
from pipeline.weights.convert import convert_checkpoint
from pipeline.weights.registry import get_spec

log = logging.getLogger(__name__)


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Load a published checkpoint without running code from it.

    torch zip files and legacy torch files go through ``torch.load(weights_only=True)`` first;
    when that refuses (mmengine objects, numpy arrays) they go through ``torch.load`` with the
    restricted :mod:`pipeline.core.unpickle`. Anything else is read as a plain pickle (the VGGFace2
    ``.pkl``, written by Python 2, hence ``latin1``) through the same restricted unpickler.

    Every failure is one :class:`WeightsError` line with the reason: an empty file, a file that
    is text or of another format (named by its first bytes), a pickle that breaks off, a global
    the restricted unpickler refuses. Never torch's advice to load with ``weights_only=False``:
    that runs whatever the file names.
    """
    import pickle
    import warnings

    from pipeline.core import unpickle

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist or is not a file")
    _check_format(path)
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols its weights-only reader may not handle; we fall back anyway
            warnings.simplefilter("ignore", UserWarning)
            return _load(path)
    except unpickle.RefusedGlobal as err:
        raise WeightsError(f"{path}: {err}; the file was not loaded (it may hold code)") from err
    except WeightsError:
        raise
    except EOFError as err:
        raise WeightsError(f"{path} is not a readable checkpoint: it ends before its pickle does (cut short?)") from err
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError) as err:
        raise WeightsError(f"{path} is not a readable checkpoint: {_reason(err)}") from err
    except Exception as err:  # noqa: BLE001 - a damaged pickle breaks the unpickler in any way
        raise WeightsError(f"{path} is not a readable checkpoint: a damaged pickle ({_reason(err)})") from err


def _load(path: Path) -> Any:
    import pickle

    import torch

    from pipeline.core import unpickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message goes on to advise weights_only=False, which runs code: never passed on
        log.debug("%s holds more than tensors (%s): reading it with the restricted unpickler", path.name, _reason(err))
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


_PICKLE_PROTOCOL = 0x80  # a pickle of protocol 2 or later (torch's legacy files included) starts so
_ZIP = b"PK\x03\x04"


def _check_format(path: Path) -> None:
    """Refuse, in one line, a file that cannot be a checkpoint: empty, or not a zip or a pickle
    of protocol 2 or later (every torch file, and the published pickles, are one of those)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not head:
        raise WeightsError(f"{path} is empty (0 bytes), not a checkpoint; fetch or copy the file again")
    if head.startswith(_ZIP) or head[0] == _PICKLE_PROTOCOL:
        return
    kind = "text" if _is_text(head) else "binary data"
    raise WeightsError(
        f"{path} is not a checkpoint: it is {kind} starting {head[:24]!r} (a torch file is a zip archive "
        "or a pickle); check that the download was the file itself and not a web page"
    )


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def _reason(err: BaseException) -> str:
    """The first line of ``err``'s message, without torch's advice to load with weights_only=False."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    if "weights_only" in first or "Weights only load failed" in first:
        detail = next((line for line in lines if line.startswith("WeightsUnpickler error")), "")
        first = detail or "torch's weights-only reader refused it"
    return f"{type(err).__name__}: {first}" if lines else type(err).__name__


def _is_legacy_torch(path: Path) -> bool:
    """A pre-1.6 torch file starts with its pickled magic number (a 10-byte LONG1 opcode)."""
    with open(path, "rb") as fh:
        head = fh.read(32)
    return b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") in head


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
    state, dropped = convert_checkpoint(spec, (spec.read or read_checkpoint)(Path(path)))
    target = cached_file(name, cache_dir)
    # one metadata entry: safetensors writes a metadata map in no fixed order, and the file's
    # sha256 (every feature's weights identity) must be the same wherever the file is imported
    provenance = json.dumps({"name": name, "source_sha256": source_digest}, sort_keys=True)
    atomic_write(target, lambda tmp: save_file(state, tmp, metadata={"vdv": provenance}))
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
    atomic_write(lock_file(name, cache_dir), lambda tmp: Path(tmp).write_text(json.dumps(lock, indent=2) + "\n"))
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
    (bytes, rate, time left) is drawn on a terminal (:mod:`pipeline.core.progress`).
    """
    import hashlib
    import urllib.request

    from pipeline.core.progress import progress

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
        atomic_write(target, download)
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

    A model whose file is installed with a package (``spec.bundled``: BlazePose, inside the
    mediapipe wheel) is imported from there: no network, no download.

    Without network access this raises :class:`WeightsError` with one line naming the URL and
    the ``vdv weights import`` command to run on a file fetched elsewhere.
    """
    import urllib.error

    spec = get_spec(name)
    if spec.bundled is not None:
        return import_weights(name, spec.bundled(), cache_dir=cache_dir)  # installed with a package: no download
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


def ensure_bundled(name: str, *, cache_dir: str | os.PathLike | None = None) -> None:
    """Import ``name`` from its package (``spec.bundled``: BlazePose, from the mediapipe wheel) when
    the cache has neither its file nor its lock; a file that is there is left to verification."""
    spec = get_spec(name)
    if spec.bundled is None or cached_file(name, cache_dir).exists() or lock_file(name, cache_dir).exists():
        return
    log.warning("%s is not in the weights cache: importing %s from the mediapipe wheel", name, spec.source_file)
    try:
        fetch_weights(name, cache_dir=cache_dir)
    except OSError as err:
        raise WeightsError(f"cannot write {name} into the weights cache: {err}") from err
