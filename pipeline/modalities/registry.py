"""The registry of feature modalities: one :class:`~pipeline.modalities.features.Modality` record each.

A modality is declared once, by the ``MODALITY`` record of its module (``pipeline/modalities/<name>.py``),
and listed here. Everything else reads the record: ``vdv extract`` and the flows (names,
builders, config sections), the extraction loop, the shard schema (``dim``), the release
(identities without loading a network: :func:`describe`), the report (``preview``) and the models
(``stream``, ``dim``, and the frames a stream sees from ``span_s`` and ``rate``). Adding a
modality is one new module and one entry in :data:`BUILT_IN` (docs/ARCHITECTURE.md, "How to add a
modality"); :func:`register` adds one at run time (a test's toy modality) and :func:`unregister`
removes it. The registry builds every extractor from its record (:meth:`Modality.build
<pipeline.modalities.features.Modality.build>`), reads the backend settings the build's placement resolves
where the records declare them (:func:`backend_settings`, ``Modality.placed``) and fills them in
each section (:func:`resolved_sections`); which modalities share a per-clip run (pose's landmarks
and scenic's person mask: one tracking BlazePose) is the records' ``shares``.

One name per modality in every layer: the name is the shard table, the ``[section]``, the release
config and the model stream. The older names that checkpoints and releases still carry (the
models' ``skeletal`` for ``pose``) are the records' ``aliases``; :func:`canonical` maps them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.core.placement import Placement, placed
from pipeline.modalities import facial, holistic, pose, scenic
from pipeline.modalities.features import FeatureExtractor, Modality
from pipeline.weights.registry import add_spec, remove_spec

BUILT_IN: tuple[Modality, ...] = (pose.MODALITY, holistic.MODALITY, facial.MODALITY, scenic.MODALITY)
"""The modalities every build knows, in the order they are reported (the paper's order of streams)."""

_REGISTRY: dict[str, Modality] = {}


def register(record: Modality) -> Modality:
    """Add ``record`` after the registered ones; its name and aliases must be new, and so must the
    placement settings it decides (one section decides each, ``Placed.decides``)."""
    taken = {record.name, *record.aliases} & ({*_REGISTRY} | {a for m in _REGISTRY.values() for a in m.aliases})
    if taken:
        raise ValueError(f"modality names {sorted(taken)} are already registered")
    decided = {p.field for m in _REGISTRY.values() for p in m.placed if p.decides}
    twice = {p.field for p in record.placed if p.decides} & decided
    if twice:
        raise ValueError(f"modality {record.name}: placement settings {sorted(twice)} are decided by another section")
    for spec in record.weights:
        add_spec(spec)
    _REGISTRY[record.name] = record
    return record


def unregister(name: str) -> None:
    """Remove a modality registered at run time (the built-in ones stay)."""
    if any(m.name == name for m in BUILT_IN):
        raise ValueError(f"{name} is a built-in modality")
    record = _REGISTRY.pop(name, None)
    for spec in record.weights if record else ():
        remove_spec(spec.name)


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


def backend_settings(config: Mapping[str, Any]) -> dict[str, str]:
    """The configured setting of each backend a build's placement resolves (Placement field ->
    setting, e.g. ``pose_backend`` -> ``[pose] backend``), read from the sections whose records
    declare that they decide it; what no record decides stays ``auto``. A bad value is the
    section's ``ValueError`` (the callers' ConfigError)."""
    settings: dict[str, str] = {}
    for record in _REGISTRY.values():
        deciding = [p for p in record.placed if p.decides]
        if deciding:
            section = record.section(dict(config.get(record.name) or {}))
            settings.update({p.field: str(getattr(section, p.key)) for p in deciding})
    return settings


def resolved_sections(
    modalities: Iterable[str],
    config: Mapping[str, Any],
    device: str | None = None,
    *,
    placement: Placement | None = None,
) -> dict[str, dict]:
    """Each modality's config section as a build of ``placement`` runs it (without one: the
    placement of ``device`` and the configured backends, :func:`backend_settings`).

    Every key a record declares placed (``Modality.placed``) that the section leaves to ``auto``
    (or unset) becomes the placement's value: ``[pose] backend`` the build's BlazePose backend,
    scenic's ``vibe_backend`` its ViBe backend, and scenic's ``mask_backend``, which follows the
    BlazePose backend, so that pose and scenic's person mask share one BlazePose run. The release
    resolves the same way to recompute identities.
    """
    placement = placement or placed(device, None, **backend_settings(config))
    sections = {}
    for name in modalities:
        section = dict(config.get(name) or {})
        for p in get(name).placed:
            if section.get(p.key, "auto") == "auto":
                section[p.key] = getattr(placement, p.field)
        sections[name] = section
    return sections


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
    return get(name).build(dict(section or {}), untrained=untrained, device=device, precision=precision, load=load)


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
    ``load=False``). A missing weights file is :class:`~pipeline.core.errors.WeightsError` as for a load."""
    return build(name, section, untrained=untrained, device=device, precision=precision, load=False)
