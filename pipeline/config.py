"""Loading stage configurations from one TOML file.

Each stage owns a frozen dataclass of its parameters with documented defaults (in the stage's
module). A run's configuration file has one table per stage, named by the stage::

    [screen]
    max_followers = 0        # 0 disables the follower rule

    [score]
    t_max_days = 7.0

``load_config(path)`` returns the parsed mapping; ``stage_config(cls, mapping, "screen")``
builds the dataclass and rejects unknown keys so that a typo is an error, not a silent default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message names the file and the key."""


def load_config(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from err


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
    return cls(**values)


def section_config(cls: type[T], config: T | Mapping[str, Any] | None, section: str) -> T:
    """A stage's dataclass from its own ``[section]`` (a mapping), an instance, or None (defaults)."""
    if config is None or isinstance(config, Mapping):
        return stage_config(cls, {section: dict(config or {})}, section)
    if not isinstance(config, cls):
        raise TypeError(f"expected {cls.__name__} or a mapping for [{section}], got {type(config).__name__}")
    return config
