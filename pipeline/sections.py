"""A run's configuration file: every ``[section]`` it may hold, and the file read and checked whole.

One table per stage, named by the stage::

    [screen]
    max_followers = 0        # 0 disables the follower rule

    [score]
    t_max_days = 7.0

``load_config(path)`` returns the parsed mapping after :func:`check_config` has checked it
whole: a section no stage reads (``[scren]``) and a value a stage refuses (``[holistic] crop =
300`` with ``short_side = 256``) are a :class:`~pipeline.core.config.ConfigError` naming the file, the
section and the value before any work starts, whichever command reads the file.

The sections are the rule stages' (:func:`stage_sections`), one per registered modality (its
record's ``config``, :mod:`pipeline.modalities.registry`) and those the layers above register with
:func:`pipeline.core.config.register_sections` (the models' ``[train]``, ``[psgcn]``, ...). The stage
modules are imported when a file is checked, not when this module is.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.config import ConfigError, registered_sections, stage_config
from pipeline.core.textfiles import TextFileError, read_text


def stage_sections() -> dict[str, type]:
    """section -> dataclass of every pipeline stage, the modalities' included."""
    from pipeline.extraction.stage import DecodeConfig, ExtractConfig
    from pipeline.ingest.stage import IngestConfig
    from pipeline.modalities import registry as modalities
    from pipeline.release import ReleaseConfig
    from pipeline.scoring.virality import ScoreConfig
    from pipeline.screening.stage import ScreenConfig
    from pipeline.screening.visual import VisualConfig

    sections = {"ingest": IngestConfig, "screen": ScreenConfig, "visual": VisualConfig, "score": ScoreConfig}
    sections.update({m.name: m.config for m in modalities.registered()})
    sections.update({"decode": DecodeConfig, "extract": ExtractConfig, "release": ReleaseConfig})
    return sections


def sections_above(stages: Mapping[str, type] | None = None) -> dict[str, type]:
    """The sections the layers above registered; one that is a stage's is a ValueError."""
    above = registered_sections()
    taken = sorted(set(stages if stages is not None else stage_sections()) & set(above))
    if taken:
        raise ValueError(f"sections {taken} belong to pipeline stages")
    return above


def known_sections() -> list[str]:
    stages = stage_sections()
    return sorted({*stages, *sections_above(stages)})


def check_config(config: Mapping[str, Any], source: str | Path | None = None) -> None:
    """Refuse a section no stage reads and any value its stage's dataclass refuses."""
    where = f"{source}: " if source is not None else ""
    stages = stage_sections()
    for section, values in config.items():
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{where}{section} = {values!r} is not a [section]; every setting belongs to a stage's section"
            )
        # the layers above are asked only for a section no stage reads (models: torch is imported then)
        cls = stages.get(section) or sections_above(stages).get(section)
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
        # UTF-8 with or without a byte-order mark (Windows editors write one); any other encoding is named
        config = tomllib.loads(read_text(path, "configuration file"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {path} is a directory") from None
    except TextFileError as err:
        raise ConfigError(str(err)) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from err
    check_config(config, path)
    return config
