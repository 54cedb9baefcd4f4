"""Code-derived versions ignore docstrings and comments but follow every change to the code."""

from __future__ import annotations

import importlib
import linecache
import sys

from pipeline.core.provenance import code_fingerprint, code_version

ROOT_DECODE = "pipeline/core/decode.py"


def _real_source(root) -> str:
    return (root / ROOT_DECODE).read_text()


def test_docstring_and_comment_edits_keep_the_fingerprint(request):
    root = request.config.rootpath
    source = _real_source(root)
    edited = source.replace('"""', '"""Edited docstring. ', 1)  # the module docstring
    # a function's docstring, a comment line and a trailing comment
    edited = edited.replace(
        'def clockwise_rotation(frame: av.VideoFrame) -> int:\n    """',
        'def clockwise_rotation(frame: av.VideoFrame) -> int:\n    """Reworded. ',
        1,
    )
    edited = edited.replace("\ndef ", "\n# a new comment\ndef ", 1)
    edited = edited.replace(") -> int:\n", ") -> int:  # trailing\n", 1)
    assert edited.count("Reworded.") == 1 and edited.count("# trailing") == 1
    assert code_fingerprint(edited) == code_fingerprint(source)


def test_code_edits_change_the_fingerprint(request):
    source = _real_source(request.config.rootpath)
    assert "def iter_samples" in source
    renamed = source.replace("def iter_samples", "def iter_samples_renamed", 1)
    assert code_fingerprint(renamed) != code_fingerprint(source)
    # a changed literal (not a docstring) counts: append a module-level constant
    assert code_fingerprint(source + "\nX = 1\n") != code_fingerprint(source + "\nX = 2\n")
    # a string that is not the first statement is code, not a docstring
    assert code_fingerprint(source + "\nY = 'a'\n") != code_fingerprint(source + "\nY = 'b'\n")


def test_code_version_of_an_edited_module(tmp_path, monkeypatch):
    package = tmp_path / "vdv_prov_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "stage.py"
    body = '''"""{doc}"""


def speed(x):
    """{fdoc}"""
    return x * {factor}  # {comment}
'''
    monkeypatch.syspath_prepend(str(tmp_path))

    def version(**fields) -> str:
        module.write_text(body.format(**fields))
        sys.modules.pop("vdv_prov_probe.stage", None)
        importlib.invalidate_caches()
        linecache.clearcache()
        code_version.cache_clear()
        return code_version(importlib.import_module("vdv_prov_probe.stage"))

    base = version(doc="Stage.", fdoc="Speed.", factor=2, comment="why")
    assert version(doc="Stage, reworded at length.", fdoc="Speed in m/s.", factor=2, comment="other") == base
    assert version(doc="Stage.", fdoc="Speed.", factor=3, comment="why") != base
    sys.modules.pop("vdv_prov_probe.stage", None)
    sys.modules.pop("vdv_prov_probe", None)
    code_version.cache_clear()
