"""Stage configurations: one frozen dataclass per ``[section]`` of a run's TOML file.

Each stage owns a frozen dataclass of its parameters with documented defaults (in the stage's
module). ``stage_config(cls, mapping, "screen")`` builds the dataclass from a parsed file and
rejects unknown keys, so that a typo is an error, not a silent default; ``section_config`` takes
a stage's own table, an instance or None. Reading and checking a whole file is
:mod:`pipeline.sections` (``load_config``), which knows every stage's section.

The layers above the pipeline read sections of the same file (the models' ``[train]``,
``[data]``, ``[psgcn]``, ...); they name them here with :func:`register_sections`, a call made at
their start-up, so that pipeline imports none of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message names the file and the key."""


# Sections of the layers above the pipeline: section -> dataclass, and providers of such
# mappings not asked for yet (called only when a file has a section no stage reads).
_registered: dict[str, type] = {}
_providers: list[Callable[[], Mapping[str, type]]] = []


def register_sections(sections: Mapping[str, type] | Callable[[], Mapping[str, type]]) -> None:
    """Let a layer above the pipeline name the sections it reads, each with its dataclass.

    ``sections`` maps section -> dataclass, or is a function returning such a mapping, called only
    when a file has a section no stage reads (``models`` registers its sections this way, so torch
    is imported only for a file that has one). A stage's section cannot be taken over
    (:func:`pipeline.sections.load_config` checks it).
    """
    if callable(sections):
        if sections not in _providers:
            _providers.append(sections)
        return
    _registered.update(sections)


def registered_sections() -> dict[str, type]:
    """The sections registered by the layers above (their providers called now)."""
    while _providers:
        _registered.update(_providers.pop(0)())
    return dict(_registered)


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
