"""The paper's ablations (Table 5, SPEC section 6) as switches of a training config.

``no_downsampling`` (PSGCN without graph down-sampling), ``no_relational_pooling`` (RTCN
without relational pooling), ``average_fusion`` (no modality attention), ``no_<stream>`` for
each sequence stream (every registered modality that an RTCN reads: holistic, facial, scenic),
``no_mse``, ``no_ranking``; ``full`` is the model as configured.

The one list of them (:func:`ablations`): :func:`models.evaluate.run_protocol` trains one model
per ablation and ``vdv evaluate --ablations`` names them in its help, so this module imports
nothing heavy.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pipeline.modalities import registry

if TYPE_CHECKING:
    from models.train import TrainConfig


def ablations() -> dict[str, dict]:
    """name -> the TrainConfig fields it changes; "drop" removes that stream from the modalities."""
    return {
        "full": {},
        "no_downsampling": {"downsample": False},
        "no_relational_pooling": {"relational_pooling": False},
        "average_fusion": {"fusion": "average"},
        **{f"no_{m}": {"drop": m} for m in registry.with_stream("sequence")},
        "no_mse": {"mse": False},
        "no_ranking": {"ranking": False},
    }


def ablation_config(base: TrainConfig, name: str) -> TrainConfig:
    """``base`` with ablation ``name`` switched on (see :func:`ablations`)."""
    known = ablations()
    if name not in known:
        raise ValueError(f"unknown ablation {name!r}; known: {list(known)}")
    change = dict(known[name])
    drop = change.pop("drop", None)
    if drop is not None:
        if drop not in base.modalities:
            raise ValueError(f"ablation {name}: {drop} is not among the modalities {base.modalities}")
        change["modalities"] = tuple(m for m in base.modalities if m != drop)
    return dataclasses.replace(base, **change)
