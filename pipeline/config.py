"""Loading stage configurations from one TOML file.

Each stage owns a frozen dataclass of its parameters with documented defaults (in the stage's
module). A run's configuration file has one table per stage, named by the stage::

    [screen]
    max_followers = 0        # 0 disables the follower rule

    [score]
    t_max_days = 7.0

``load_config(path)`` returns the parsed mapping after :func:`check_config` has checked it
whole: a section no stage reads (``[scren]``) and a value a stage refuses (``[holistic] crop =
300`` with ``short_side = 256``) are a :class:`ConfigError` naming the file, the section and
the value before any work starts, whichever command reads the file. ``stage_config(cls, mapping,
"screen")`` builds the dataclass and rejects unknown keys so that a typo is an error, not a
silent default.

The layers above the pipeline read sections of the same file (the models' ``[train]``,
``[data]``, ``[psgcn]``, ...); they name them with :func:`register_sections`, and pipeline
imports none of them. A section is known once its layer is imported (``import models``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message names the file and the key."""


# section -> "module:dataclass" of the stage that reads it (imported only when the file has it)
STAGE_SECTIONS: dict[str, str] = {
    "ingest": "pipeline.ingest:IngestConfig",
    "screen": "pipeline.screen:ScreenConfig",
    "visual": "pipeline.visual:VisualConfig",
    "score": "pipeline.virality:ScoreConfig",
    "pose": "pipeline.pose:PoseConfig",
    "holistic": "pipeline.holistic:HolisticConfig",
    "facial": "pipeline.facial:FacialConfig",
    "scenic": "pipeline.scenic:ScenicConfig",
    "decode": "pipeline.extraction:DecodeConfig",
    "extract": "pipeline.extraction:ExtractConfig",
    "release": "pipeline.release:ReleaseConfig",
}

# Sections of the layers above the pipeline (the models' [train], [data], [psgcn], ...): they
# register them (register_sections), so that pipeline imports none of those layers.
_registered: dict[str, type] = {}
_pending: list[str] = []  # "module:attribute" of section mappings not imported yet


def register_sections(sections: Mapping[str, type] | str) -> None:
    """Let a layer above the pipeline name the sections it reads, each with its dataclass.

    ``sections`` maps section -> dataclass, or is ``"module:attribute"`` naming such a mapping,
    imported only when a file has a section no stage reads (``models`` registers its sections
    this way, so torch is imported only for a file that has one). A stage's section cannot be
    taken over.
    """
    if isinstance(sections, str):
        if sections not in _pending:
            _pending.append(sections)
        return
    taken = sorted(set(sections) & set(STAGE_SECTIONS))
    if taken:
        raise ValueError(f"sections {taken} belong to pipeline stages")
    _registered.update(sections)


def _registered_sections() -> dict[str, type]:
    while _pending:
        module, name = _pending[0].split(":")
        register_sections(getattr(importlib.import_module(module), name))
        _pending.pop(0)
    return _registered


def _section_class(section: str) -> type | None:
    """The dataclass that reads ``[section]``: a stage's, or a registered one (``[train]``, ``[psgcn]``...)."""
    target = STAGE_SECTIONS.get(section)
    if target is not None:
        module, name = target.split(":")
        return getattr(importlib.import_module(module), name)
    return _registered.get(section) or _registered_sections().get(section)


def known_sections() -> list[str]:
    return sorted(set(STAGE_SECTIONS) | set(_registered_sections()))


def check_config(config: Mapping[str, Any], source: str | Path | None = None) -> None:
    """Refuse a section no stage reads and any value its stage's dataclass refuses."""
    where = f"{source}: " if source is not None else ""
    for section, values in config.items():
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{where}{section} = {values!r} is not a [section]; every setting belongs to a stage's section"
            )
        cls = _section_class(section)
        if cls is None:
            known = known_sections()
            close = difflib.get_close_matches(section, known, n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            raise ConfigError(f"{where}unknown section [{section}]{hint}; known sections: {', '.join(known)}")
        try:
            stage_config(cls, {section: dict(values)}, section)
        except ConfigError as err:
            raise ConfigError(f"{where}{err}") from None


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Parse the TOML file ``path`` (None: every default) and check it whole (:func:`check_config`)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            config = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {path} is a directory") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from err
    check_config(config, path)
    return config


def stage_config(cls: type[T], config: dict[str, Any] | None, section: str, **overrides: Any) -> T:
    """Build ``cls`` from ``config[section]``, then apply ``overrides`` that are not None."""
    values = dict((config or {}).get(section, {}))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"[{section}] has unknown keys {unknown}; known: {sorted(names)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    for field in dataclasses.fields(cls):
        if field.name in values and isinstance(values[field.name], list):
            values[field.name] = tuple(values[field.name])
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in values.items():
        expected = _expected_types(fields[name].type)
        if expected is not None and not _matches(value, expected):
            raise ConfigError(f"[{section}] {name} = {value!r} is not {fields[name].type}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        # a stage's own check (``__post_init__``) or a value of the wrong type: one line, no traceback
        message = str(err)
        prefix = "" if message.startswith(f"[{section}]") else f"[{section}] "
        raise ConfigError(f"{prefix}{message} (values {_shown(values)})") from err


_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None)}


def _expected_types(annotation: Any) -> list | None:
    """Alternatives of a simple field annotation (``int``, ``float | None``, ``tuple[str, ...]``);
    None for anything else, which is then left to the stage's own checks."""
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", None)
        if annotation is None:
            return None
    out = []
    for part in (p.strip() for p in annotation.split("|")):
        if part in _SIMPLE:
            out.append(_SIMPLE[part])
        elif part.startswith("tuple[") and part.endswith("]"):
            inner = [x.strip() for x in part[6:-1].split(",")]
            if inner[-1] == "..." and inner[0] in _SIMPLE:
                out.append((tuple, _SIMPLE[inner[0]], None))
            elif all(x in _SIMPLE for x in inner):
                out.append((tuple, tuple(_SIMPLE[x] for x in inner)))
            else:
                return None
        else:
            return None
    return out


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _matches(value: Any, expected: list) -> bool:
    for kind in expected:
        if isinstance(kind, tuple):
            if not isinstance(value, tuple):
                continue
            if len(kind) == 3 and all(_is(v, kind[1]) for v in value):
                return True
            if len(kind) == 2 and len(value) == len(kind[1]) and all(map(_is, value, kind[1])):
                return True
        elif _is(value, kind):
            return True
    return False


def _shown(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in sorted(values.items()))


def section_config(cls: type[T], config: T | Mapping[str, Any] | None, section: str) -> T:
    """A stage's dataclass from its own ``[section]`` (a mapping), an instance, or None (defaults)."""
    if config is None or isinstance(config, Mapping):
        return stage_config(cls, {section: dict(config or {})}, section)
    if not isinstance(config, cls):
        raise TypeError(f"expected {cls.__name__} or a mapping for [{section}], got {type(config).__name__}")
    return config
