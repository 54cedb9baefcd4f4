"""The device run cannot fail on an import (bench/gpu_imports.py, bench/gpu_node.sh): everything its
Python steps import imports while only the device image's packages and the carried wheels can be."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

# what a dry run of the device image lacked (the carried wheels installed without dependencies)
DRY_RUN_LACKED = ("safetensors", "flatbuffers", "requests")


def _check(tmp_path, script_text: str) -> subprocess.CompletedProcess:
    """bench/gpu_imports.py --restrict on the image list without DRY_RUN_LACKED, carrying what
    ``script_text`` downloads."""
    lines = (ROOT / "bench" / "gpu_image_packages.txt").read_text().splitlines()
    listed = [w for line in lines if not line.startswith("#") for w in line.split()]
    assert set(DRY_RUN_LACKED) <= set(listed) and len(listed) > 150
    image = tmp_path / "image.txt"
    image.write_text("\n".join(w for w in listed if w not in DRY_RUN_LACKED))
    script = tmp_path / "gpu_node.sh"
    script.write_text(script_text)
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_imports.py"), "--restrict", "--image", str(image)]
    return subprocess.run([*cmd, "--script", str(script)], capture_output=True, text=True, timeout=900)


def test_the_node_s_imports_resolve_on_the_image_with_the_carried_wheels(tmp_path):
    done = _check(tmp_path, (ROOT / "bench" / "gpu_node.sh").read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "torch" in done.stdout and "facenet_pytorch" in done.stdout and "tflite" in done.stdout


def test_without_the_carried_dependencies_the_check_stops_with_one_line(tmp_path):
    before = "pip download -d .gpu/whl av==18.1.0 tflite==2.18.0 facenet-pytorch==2.6.0\n"  # the old prepare
    done = _check(tmp_path, before)
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_node: cannot import")
    for name in DRY_RUN_LACKED:
        assert f"No module named '{name}'" in lines[0], name
