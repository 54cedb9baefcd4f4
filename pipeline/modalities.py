"""The registry of feature modalities: one :class:`~pipeline.features.Modality` record each.

A modality is declared once, by the ``MODALITY`` record of its module (``pipeline/<name>.py``),
and listed here. Everything else reads the record: ``vdv extract`` and the flows (names,
builders, config sections), the extraction loop, the shard schema (``dim``), the release
(identities without loading a network: :func:`describe`), the report (``preview``) and the models
(``stream``, ``dim``, and the frames a stream sees from ``span_s`` and ``rate``). Adding a
modality is one new module and one entry in :data:`BUILT_IN` (docs/ARCHITECTURE.md, "How to add a
modality"); :func:`register` adds one at run time (a test's toy modality) and :func:`unregister`
removes it.

One name per modality in every layer: the name is the shard table, the ``[section]``, the release
config and the model stream. The older names that checkpoints and releases still carry (the
models' ``skeletal`` for ``pose``) are the records' ``aliases``; :func:`canonical` maps them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline import facial, holistic, pose, scenic
from pipeline.features import FeatureExtractor, Modality
from pipeline.placement import Placement

BUILT_IN: tuple[Modality, ...] = (pose.MODALITY, holistic.MODALITY, facial.MODALITY, scenic.MODALITY)
"""The modalities every build knows, in the order they are reported (the paper's order of streams)."""

_REGISTRY: dict[str, Modality] = {}


def register(record: Modality) -> Modality:
    """Add ``record`` after the registered ones; its name and aliases must be new."""
    taken = {record.name, *record.aliases} & ({*_REGISTRY} | {a for m in _REGISTRY.values() for a in m.aliases})
    if taken:
        raise ValueError(f"modality names {sorted(taken)} are already registered")
    _REGISTRY[record.name] = record
    return record


def unregister(name: str) -> None:
    """Remove a modality registered at run time (the built-in ones stay)."""
    if any(m.name == name for m in BUILT_IN):
        raise ValueError(f"{name} is a built-in modality")
    _REGISTRY.pop(name, None)


for _record in BUILT_IN:
    register(_record)


def registered() -> tuple[Modality, ...]:
    """Every registered modality, in registration order."""
    return tuple(_REGISTRY.values())


def names() -> tuple[str, ...]:
    """The registered modalities' names, in registration order."""
    return tuple(_REGISTRY)


def canonical(name: str) -> str:
    """The registered name of ``name`` or of an older alias of it (``skeletal`` -> ``pose``)."""
    if name in _REGISTRY:
        return name
    for record in _REGISTRY.values():
        if name in record.aliases:
            return record.name
    raise ValueError(f"unknown modality {name!r}; known: {list(_REGISTRY)}")


def get(name: str) -> Modality:
    """The record of ``name`` (or of an alias of it)."""
    return _REGISTRY[canonical(name)]


def ordered(wanted: Iterable[str]) -> tuple[str, ...]:
    """``wanted`` as registered names, in registration order; an unknown name is a ValueError."""
    chosen = {canonical(m) for m in wanted}
    return tuple(m for m in _REGISTRY if m in chosen)


def with_stream(kind: str) -> tuple[str, ...]:
    """The modalities a model stream of ``kind`` (``skeleton`` | ``sequence``) reads."""
    return tuple(m.name for m in _REGISTRY.values() if m.stream == kind)


def resolved_sections(
    modalities: Iterable[str],
    config: Mapping[str, Any],
    device: str | None = None,
    *,
    placement: Placement | None = None,
) -> tuple[dict[str, dict], str]:
    """Each modality's config section as a build of ``placement`` runs it, and the BlazePose backend.

    ``[pose] backend`` comes resolved from the placement (:mod:`pipeline.placement`; without one,
    by the same rule for ``device``) and is also the backend of scenic's person mask, unless
    ``[scenic] mask_backend`` names one, so that pose and scenic share one BlazePose run; scenic's
    ``vibe_backend`` is the placement's when the section leaves it to ``auto``. The release
    resolves the same way to recompute identities.
    """
    sections = {m: dict(config.get(m, {})) for m in modalities}
    if placement is not None:
        backend = placement.pose_backend
    else:
        backend = pose.resolve_backend(dict(config.get("pose", {})).get("backend", "auto"), device)
    if "pose" in sections:
        sections["pose"]["backend"] = backend
    if "scenic" in sections:
        sections["scenic"].setdefault("mask_backend", backend)
        if placement is not None and sections["scenic"].get("vibe_backend", "auto") == "auto":
            sections["scenic"]["vibe_backend"] = placement.vibe_backend
    return sections, backend


def build(
    name: str,
    section: Mapping[str, Any] | None = None,
    *,
    untrained: bool = False,
    device: str | None = None,
    precision: str | None = None,
    load: bool = True,
) -> FeatureExtractor:
    """The extractor of modality ``name`` from its config section (``load=False``: described only)."""
    record = get(name)
    return record.build(dict(section or {}), untrained=untrained, device=device, precision=precision, load=load)


def describe(
    name: str,
    section: Mapping[str, Any] | None = None,
    *,
    untrained: bool = False,
    device: str | None = None,
    precision: str | None = None,
) -> FeatureExtractor:
    """The extractor of ``name`` as far as its identity goes: configuration, code version, the
    weights' recorded sha256 and precision, without loading a network (:func:`build` with
    ``load=False``). A missing weights file is :class:`~pipeline.errors.WeightsError` as for a load."""
    return build(name, section, untrained=untrained, device=device, precision=precision, load=False)
