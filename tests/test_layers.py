"""The import layering at run time: the models need no extraction library, and the models'
configuration sections reach pipeline.core.config by registration (the static import rules are
tests/test_architecture.py's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    code = f"import sys; {statement}; print(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return [m for m in out.stdout.strip().split(",") if m]


def test_the_models_import_neither_the_decoder_nor_the_pose_estimator():
    # PyAV and mediapipe belong to extraction; training and evaluation never need them
    assert _loaded_after("import models, models.train, models.evaluate, models.data", ("av", "mediapipe")) == []


def test_the_pipeline_imports_no_layer_above_it():
    # reading and checking a configuration file with a model section goes through the
    # registration of the models package (a call), not through an import of it by the pipeline
    statement = "from pipeline import sections; from pipeline.modalities import skeleton; sections.known_sections()"
    assert _loaded_after(statement, ("models", "flows", "cli", "torch")) == []


def test_the_pipeline_names_no_module_to_import_by_a_string():
    # importlib hides an import from lint-imports; only the unpickler's allow-list (a global a
    # pickle names) and the code versions and library versions (a module's source, its
    # __version__) take module names as data
    found = subprocess.run(
        ["grep", "-rln", "importlib.import_module", "pipeline", "models", "flows", "cli"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.split()
    assert sorted(found) == ["pipeline/core/provenance.py", "pipeline/core/unpickle.py"]


def test_model_sections_are_known_once_models_registers_them(tmp_path):
    import models
    from pipeline.core.config import ConfigError
    from pipeline.sections import known_sections, load_config

    models.register_config()  # what `vdv` and the flows do at start-up

    assert {"train", "data", "sports", "psgcn", "multimodal", "screen"} <= set(known_sections())
    path = tmp_path / "run.toml"
    path.write_text("[train]\nepochs = 2\n[psgcn]\ndownsample = false\n")
    assert load_config(path)["train"] == {"epochs": 2}
    path.write_text("[train]\nepoch = 2\n")
    with pytest.raises(ConfigError, match=r"\[train\] has unknown keys \['epoch'\]"):
        load_config(path)


def test_a_stage_section_cannot_be_registered_by_another_layer(monkeypatch):
    from pipeline.core import config
    from pipeline.sections import known_sections

    monkeypatch.setattr(config, "_registered", {})
    monkeypatch.setattr(config, "_providers", [])
    config.register_sections({"screen": object})
    with pytest.raises(ValueError, match="belong to pipeline stages"):
        known_sections()
