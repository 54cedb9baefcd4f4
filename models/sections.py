"""The configuration sections the models read, for :func:`pipeline.core.config.register_sections`.

``[train]`` (:class:`models.train.TrainConfig`), ``[data]`` (:class:`models.data.DataConfig`),
``[sports]`` (:class:`models.sports.SportsConfig`) and one section per registered model, named
by the model (``[psgcn]``, ``[rtcn]``, ... :func:`models.registry.sections`). ``models``
registers this mapping by name, so it is imported (with torch) only for a configuration file
that has a section no pipeline stage reads.
"""

from __future__ import annotations

from models.data import DataConfig
from models.registry import sections
from models.sports import SportsConfig
from models.train import TrainConfig

SECTIONS: dict[str, type] = {"train": TrainConfig, "data": DataConfig, "sports": SportsConfig, **sections()}
