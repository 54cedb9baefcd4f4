"""The layout rules of docs/ARCHITECTURE.md, checked so that they keep holding.

- ``lint-imports`` (import-linter, contracts in ``pyproject.toml``): layers point down
  (``cli`` > ``flows`` > ``models`` > ``pipeline``) and no import circle between modules, an
  import under ``TYPE_CHECKING`` counting like any other.
- ``models`` imports only the listed ``pipeline`` modules, and never (even through another
  module) a stage that makes features or scores: the AQA-7 recipe that runs them is ``flows.sports``.
- No function outside ``tests/`` and ``bench/`` is longer than 80 lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "flows", "models", "pipeline")
MAX_FUNCTION_LINES = 80
# what the models may read of the pipeline (docs/ARCHITECTURE.md, "Layers")
MODELS_MAY_IMPORT = {
    "pipeline.core.checksums",
    "pipeline.core.config",
    "pipeline.core.decode",
    "pipeline.core.errors",
    "pipeline.modalities.features",
    "pipeline.modalities.holistic",  # the sports benchmark's streams, named by their records
    "pipeline.modalities.pose",
    "pipeline.modalities.registry",
    "pipeline.core.progress",
    "pipeline.core.provenance",  # the sha256 of a release file before its decoded copy
    "pipeline.modalities.skeleton",
    "pipeline.scoring.splits",
    "pipeline.core.tables",
}


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 kept, 0 broken" in done.stdout


def test_models_import_only_the_listed_pipeline_modules():
    graph = grimp.build_graph(*PACKAGES)
    used = {
        (importer, imported)
        for importer in graph.find_descendants("models") | {"models"}
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported == "pipeline" or imported.startswith("pipeline.")
    }
    assert used, "the models read the dataset through pipeline.modalities.features; the graph found no such import"
    outside = sorted((a, b) for a, b in used if b not in MODELS_MAY_IMPORT)
    assert not outside, f"models import pipeline modules outside the listed set: {outside}"


def test_the_weights_converters_and_the_registry_never_import_each_other_even_for_annotations():
    """The registry names each network's checkpoint format; the converters are keyed by format
    (``convert.CONVERTERS``) and read what they need of an entry through ``convert.Convertible``,
    so no import runs either way (not even under TYPE_CHECKING), and every format has its converter."""
    from pipeline.weights.convert import CONVERTERS
    from pipeline.weights.registry import REGISTRY

    graph = grimp.build_graph("pipeline", exclude_type_checking_imports=False)
    assert not graph.chain_exists(importer="pipeline.weights.registry", imported="pipeline.weights.convert")
    assert not graph.chain_exists(importer="pipeline.weights.convert", imported="pipeline.weights.registry")
    formats = {spec.checkpoint_format for spec in REGISTRY.values() if spec.checkpoint_format}
    assert formats == set(CONVERTERS)


def _long_functions(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(root)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_function_is_longer_than_80_lines():
    files = [f for package in PACKAGES for f in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 40
    found = [line for f in files for line in _long_functions(f)]
    assert not found, "functions over 80 lines (split them into named steps):\n" + "\n".join(found)


def test_the_length_rule_measures_from_def_to_the_last_line(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    short = tmp_path / "short.py"
    short.write_text(f"def f():\n{body}")
    long = tmp_path / "long.py"
    long.write_text(f"def f():\n{body}    return x0\n")
    assert _long_functions(short, tmp_path) == []
    assert _long_functions(long, tmp_path) == ["long.py:1 f (81 lines)"]
