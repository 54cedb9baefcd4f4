"""Everything ``bench/gpu_node.sh``'s Python steps import, imported before the device time is spent.

    python bench/gpu_imports.py              # on the device: import it all, one line if something is missing
    python bench/gpu_imports.py --restrict   # here: the same, while only the device image's
                                             # packages (bench/gpu_image_packages.txt), the wheels
                                             # gpu_node.sh carries, the standard library and the
                                             # project can be imported

What is imported: the project's modules that the steps reach (``bench/bench_pose.py``,
``bench/bench_node.py``, ``pipeline.weights.fetch`` and every project module they import, at
module level or inside a function, found by reading their source), and every third-party package
any of those modules imports, except the ones the node never reaches (:data:`NOT_ON_NODE`). A
package's own imports come with it (``tflite`` needs ``flatbuffers``; the carried wheels are
installed without their dependencies).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
ENTRY = ("bench_pose", "bench_node", "pipeline.weights.fetch")
PROJECT = ("pipeline", "models", "flows", "cli")
# third-party packages the project imports on paths the node does not run
NOT_ON_NODE = {"mediapipe": "the mediapipe backend (the node runs [pose] backend = torch)"}


def _source(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py"), BENCH / f"{name}.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, name: str) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def closure() -> tuple[list[str], list[str]]:
    """(project modules, third-party top-level packages) that the steps import."""
    local = set(PROJECT) | {p.stem for p in BENCH.glob("*.py")}
    seen, third, todo = set(), set(), list(ENTRY)
    while todo:
        name = todo.pop()
        if name in seen or (path := _source(name)) is None:
            continue
        seen.add(name)
        for imported in _imports(path, name):
            top = imported.split(".")[0]
            if top in local:
                todo.append(imported if _source(imported) else imported.rpartition(".")[0])
            elif top and top != "__future__" and top not in sys.stdlib_module_names:
                third.add(top)
    return sorted(seen), sorted(third - set(NOT_ON_NODE))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


SCRIPT = BENCH / "gpu_node.sh"
IMAGE = BENCH / "gpu_image_packages.txt"


def carried(script: Path = SCRIPT) -> list[str]:
    """The distributions ``bench/gpu_node.sh prepare`` downloads (``NAME==VERSION``)."""
    text = script.read_text(encoding="utf-8")
    return re.findall(r"([A-Za-z0-9_.-]+)==[0-9][^\s]*", text)


# distributions that install the same modules as an image's distribution of another name
_SAME = {"opencv-python-headless": ("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless")}


def wanted_distributions(image: Path = IMAGE, script: Path = SCRIPT) -> set[str]:
    """The image's distributions and the carried wheels (normalised names)."""
    lines = image.read_text(encoding="utf-8").splitlines()
    listed = {_normal(w) for line in lines if not line.startswith("#") for w in line.split()}
    wanted = listed | {_normal(d) for d in carried(script)}
    return wanted | {same for d in wanted for same in _SAME.get(d, ())}


def restricted_site(dest: Path, image: Path = IMAGE, script: Path = SCRIPT) -> Path:
    """A directory holding links to the installed files of the wanted distributions only (their
    top-level packages, modules, bundled libraries and metadata): on ``sys.path`` without the
    real site-packages, it is what the device image plus the carried wheels can import."""
    wanted = wanted_distributions(image, script)
    dest.mkdir(parents=True, exist_ok=True)
    for dist in importlib.metadata.distributions():
        if _normal(dist.metadata["Name"] or "") not in wanted:
            continue
        for top in {f.parts[0] for f in dist.files or () if f.parts and f.parts[0] not in ("..", "bin")}:
            source, link = Path(dist.locate_file(top)), dest / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    return dest


def check() -> list[str]:
    """Import everything; the failures as ``name (error)``."""
    modules, packages = closure()
    failed = []
    for name in [*packages, *modules]:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - every failure is reported, none stops the check
            failed.append(f"{name} ({type(err).__name__}: {err})")
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restrict", action="store_true", help="only the image's packages and the carried wheels")
    parser.add_argument("--image", default=str(IMAGE), help="the image's distributions (default %(default)s)")
    parser.add_argument("--script", default=str(SCRIPT), help="the script whose wheels are carried")
    parser.add_argument("--site", help=argparse.SUPPRESS)  # the restricted run's own directory of packages
    args = parser.parse_args()
    if args.restrict:  # again, in a Python without site-packages, with only the wanted ones
        with tempfile.TemporaryDirectory() as tmp:
            site = restricted_site(Path(tmp) / "site", Path(args.image), Path(args.script))
            cmd = [sys.executable, "-S", "-I", str(Path(__file__).resolve()), "--site", str(site)]
            return subprocess.run(cmd, cwd=ROOT).returncode
    sys.path[:0] = [str(ROOT), str(BENCH), *([args.site] if args.site else [])]
    failed = check()
    modules, packages = closure()
    if failed:
        print(f"gpu_node: cannot import {'; '.join(failed)}: carry the missing wheels (bench/gpu_node.sh prepare)")
        return 1
    print(f"gpu_node imports: {len(modules)} project modules and {', '.join(packages)} import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
