"""``vdv weights fetch`` against a real HTTP server on 127.0.0.1: a good file is downloaded,
hash-checked and imported; a file whose digest differs from the published prefix leaves nothing
in the cache; with the server gone the command says in one line which URL to fetch and which
``vdv weights import`` command to run."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import socket
import threading

import pytest
from test_weights import _reference, write_published

from cli import main as vdv
from pipeline.core.errors import WeightsError
from pipeline.weights import cache, fetch, registry

NAME = "resnet18_places365"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The published Places365 file, in its real layout, and its sha256."""
    root = tmp_path_factory.mktemp("published")
    path = root / "resnet18_places365.pth.tar"
    write_published(NAME, path, _reference(NAME))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def server(published):
    directory = published[0].parent

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, *args):  # keep the test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _point_registry(monkeypatch, url: str, digest_prefix: str | None) -> None:
    spec = dataclasses.replace(registry.REGISTRY[NAME], url=url, source_sha256=digest_prefix)
    monkeypatch.setitem(registry.REGISTRY, NAME, spec)


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_fetch_good_file_is_checked_and_imported(server, published, tmp_path, monkeypatch, capsys):
    path, digest = published
    _point_registry(monkeypatch, f"{server}/{path.name}", digest[:8])
    cache_dir = tmp_path / "cache"
    assert vdv(["weights", "fetch", NAME, "--dir", str(cache_dir)]) == 0
    assert f"{NAME}: ok" in capsys.readouterr().out
    # the downloaded file is byte-identical to the served one, and the cache verifies
    assert hashlib.sha256((cache_dir / "downloads" / path.name).read_bytes()).hexdigest() == digest
    lock = cache.read_lock(NAME, cache_dir)
    assert lock["source_sha256"] == digest and lock["source_verified"] is True
    assert cache.verify_weights(NAME, cache_dir=cache_dir) == lock["sha256"]
    assert not [f for f in _files(cache_dir) if f.endswith(".tmp")]


def test_fetch_hash_mismatch_leaves_nothing(server, published, tmp_path, monkeypatch):
    path, digest = published
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    _point_registry(monkeypatch, f"{server}/{path.name}", wrong)
    cache_dir = tmp_path / "cache"
    with pytest.raises(WeightsError, match=f"sha256 {digest}") as err:
        fetch.fetch_weights(NAME, cache_dir=cache_dir, progress_enabled=False)
    assert "nothing was kept" in str(err.value)
    assert not cache_dir.exists() or _files(cache_dir) == []
    assert cache.status(NAME, cache_dir=cache_dir) == "missing"


def test_fetch_offline_says_url_and_import_command(tmp_path, monkeypatch, capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/resnet18_places365.pth.tar"
    _point_registry(monkeypatch, url, None)
    cache_dir = tmp_path / "cache"
    assert vdv(["weights", "fetch", NAME, "--dir", str(cache_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert url in err and f"vdv weights import {NAME} resnet18_places365.pth.tar" in err
    assert not cache_dir.exists() or _files(cache_dir) == []
