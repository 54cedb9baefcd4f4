"""What every feature extractor shares: identity, provenance, the shard it writes, skipping.

A modality module (``pose``, ``holistic``, ``facial``, ``scenic``) subclasses
:class:`FeatureExtractor`: :meth:`~FeatureExtractor.decode_params` names the grid it samples and
:meth:`~FeatureExtractor.consumer` returns a :class:`ClipConsumer` that takes the clip's samples
one by one and finally gives a :class:`FeatureSequence`. The extractor never opens the clip
itself: :mod:`pipeline.extraction.stage` decodes each clip once for every modality it needs
(:func:`pipeline.core.decode.decode_pass`) and feeds each consumer its own grid. This base class turns
a sequence into a row of ``feature_spec(modality, dim)`` with full provenance, writes it atomically as
one shard per clip and knows whether a clip's current shard is still valid (same identity), so
re-runs skip work. :meth:`~FeatureExtractor.compute` runs one extractor alone on a file. The
extractors built on a network of the weights registry share :class:`NetworkExtractor`'s constructor.

Feature shard of a clip: ``<work>/features/<modality>/<modality>.<clip_id[:16]>.<identity[:12]>.parquet``.
When a clip's identity changes the new shard is written first, then the stale one removed, so a
crash in between leaves at worst an extra stale file that :func:`current_shards` ignores. A shard's
sha256 is recorded when it is written and checked whenever it is reused (:mod:`pipeline.core.checksums`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import checksums, tables
from pipeline.core.config import section_config
from pipeline.core.decode import DecodeParams, PassShared, Sample, SharedRun, StreamInfo, decode_pass
from pipeline.core.errors import ClipError, Reason
from pipeline.core.provenance import UNTRAINED, code_version, feature_identity

STREAM_KINDS = ("skeleton", "sequence")
"""The model streams a modality can feed: ``skeleton`` (PSGCN on ``(3, T, 16)``: 16 MPII joints x
(x, y, confidence), so 48 values a sample) or ``sequence`` (RTCN on ``(T, D)``)."""


@dataclass(frozen=True)
class Preview:
    """A modality's picture for people: extraction writes one PNG per clip into
    ``<work>/report/<folder>/`` (:func:`pipeline.core.tables.preview_dir`), the report shows it."""

    folder: str  # under <work>/report/, e.g. "backgrounds"
    caption: str  # what the report's card calls it, e.g. "scenic background (ViBe)"


@dataclass(frozen=True)
class Placed:
    """A key of a modality's section that the build's placement (:class:`pipeline.core.placement.Placement`)
    resolves: the section's ``auto`` (or no value) becomes the placement's ``field``.

    ``decides``: the section's value is the setting the placement resolves that field from (at most
    one record decides a field); otherwise the key only follows the placement's value, which is
    how a modality that shares another's per-clip run takes that run's backend (scenic's person
    mask follows the pose backend)."""

    key: str  # the section's key, e.g. "backend"
    field: str  # the Placement field, e.g. "pose_backend"
    decides: bool = True


@dataclass(frozen=True)
class Modality:
    """One feature modality, declared once: its module's ``MODALITY``, listed in :mod:`pipeline.modalities.registry`.

    Every layer reads it from there. The name is the shard table ``features/<name>``, the
    configuration section ``[name]``, the ``vdv extract`` argument, the release's config and the
    models' stream. ``dim`` and ``rate`` fix the shard's vector width and time grid (the extractor
    takes its ``modality`` and ``dim`` from the record), ``span_s`` the seconds of a clip a model
    stream sees, so that the frames it gets follow a change of rate (``[data] seconds``).
    :meth:`build` makes the extractor from the section: ``extractor(config, *, untrained, device,
    precision, load)`` with the section's dataclass. ``weights`` describes networks the weights
    registry does not know yet (:func:`pipeline.weights.registry.add_spec`). ``placed`` names the
    keys the build's placement resolves, ``shares`` the per-clip runs (:class:`SharedRun` kinds)
    its extractor may share with other modalities in one pass.
    """

    name: str  # shard table, config section, CLI argument, release config and model stream
    dim: int  # per-sample vector width with the default configuration
    config: type  # frozen dataclass of the [name] section, with documented defaults
    extractor: Callable[..., FeatureExtractor]  # extractor(config, *, untrained, device, precision, load)
    rate: Callable[[Any], float]  # samples per second of the shard's rows, from the section's dataclass
    span_s: float  # seconds of a clip a model stream sees, unless [data] seconds says otherwise
    networks: tuple[str, ...] = ()  # names in pipeline.weights.registry its extractor may load
    weights: tuple[Any, ...] = ()  # ModelSpecs of networks only it brings (added to the weights registry with it)
    stream: str = "sequence"  # the model stream that reads it (STREAM_KINDS)
    preview: Preview | None = None  # its picture for the report (FeatureSequence.preview), if any
    aliases: tuple[str, ...] = ()  # older names in checkpoints and releases (pose was the models' "skeletal")
    placed: tuple[Placed, ...] = ()  # section keys the build's placement resolves
    shares: tuple[str, ...] = ()  # SharedRun kinds its extractor may share in a pass, e.g. ("BlazePose",)

    def __post_init__(self):
        if self.stream not in STREAM_KINDS:
            raise ValueError(f"modality {self.name}: stream must be one of {STREAM_KINDS}, got {self.stream!r}")
        if self.stream == "skeleton" and self.dim != 48:
            raise ValueError(f"modality {self.name}: a skeleton stream has 16 joints x 3 = 48 values, not {self.dim}")
        if self.dim < 1 or not self.span_s > 0:
            raise ValueError(f"modality {self.name}: dim and span_s must be positive")

    def section(self, values: Mapping[str, Any] | Any | None = None) -> Any:
        """Its configuration dataclass from its own ``[name]`` table (a mapping), an instance, or None."""
        return section_config(self.config, values, self.name)

    def build(
        self,
        values: Mapping[str, Any] | Any | None = None,
        *,
        untrained: bool = False,
        device: str | None = None,
        precision: str | None = None,
        load: bool = True,
    ) -> FeatureExtractor:
        """Its extractor from its ``[name]`` section (a mapping, an instance or None). ``untrained``
        (explicit only) runs a network's seeded random weights; ``device`` and ``precision`` are the
        build's; ``load=False`` describes it without loading a network (its identity only)."""
        config = self.section(values)
        return self.extractor(config, untrained=untrained, device=device, precision=precision, load=load)

    def default_rate(self) -> float:
        """Samples per second with the default configuration."""
        return float(self.rate(self.config()))


@dataclass
class FeatureSequence:
    """A clip's samples: ``features`` (T, D) float32, ``valid`` (T,) bool, ``timestamps`` (T,) s."""

    timestamps: np.ndarray
    valid: np.ndarray
    features: np.ndarray
    fps: float
    source_fps: float | None = None
    frame_width: int | None = None
    frame_height: int | None = None
    # one picture of what the modality saw, for people (the build report): (time, RGB image); not stored
    preview: tuple[float, np.ndarray] | None = None

    @classmethod
    def on_grid(
        cls,
        source: StreamInfo,
        times: Sequence[float],
        features: np.ndarray,
        fps: float,
        *,
        valid: Sequence[bool] | None = None,
        preview: tuple[float, np.ndarray] | None = None,
    ) -> FeatureSequence:
        """A consumer's result: its grid times, features (float32) and validity (default: all
        valid), with what the row records of the source (``StreamInfo``)."""
        return cls(
            timestamps=np.asarray(times, dtype=np.float64),
            valid=np.ones(len(times), dtype=bool) if valid is None else np.asarray(valid, dtype=bool),
            features=np.asarray(features, dtype=np.float32),
            fps=fps,
            source_fps=source.fps,
            frame_width=source.width,
            frame_height=source.height,
            preview=preview,
        )

    def __post_init__(self):
        t = len(self.timestamps)
        if self.features.ndim != 2 or len(self.features) != t or len(self.valid) != t:
            raise ValueError(
                f"inconsistent sequence: timestamps {len(self.timestamps)}, valid {len(self.valid)}, "
                f"features {self.features.shape}"
            )


class ClipConsumer(Protocol):
    """One clip's feature computation: samples in, in grid order; the sequence out at the end."""

    def push(self, sample: Sample) -> None:
        """Take the next grid sample. Raise ``ClipError`` for a bad clip."""

    def finish(self, source: StreamInfo) -> FeatureSequence:
        """The clip's features; ``source`` is its upright native size and declared rate."""

    def close(self) -> None:
        """Release per-clip resources (called whether or not ``finish`` ran)."""


class Batches:
    """Items in, ``fn(batch) -> array`` on every ``size`` of them, outputs kept in order.

    The one batching rule of the extractors: a batch size changes speed and memory, never the
    features. ``fn``'s ``RuntimeError`` (for example device memory) becomes this clip's
    ``extract_failed`` rejection, not the run's failure.
    """

    def __init__(self, size: int, fn, *, clip_id: str, what: str):
        self.size, self.fn, self.clip_id, self.what = size, fn, clip_id, what
        self.pending: list = []
        self.outputs: list[np.ndarray] = []

    def add(self, item) -> None:
        self.pending.append(item)
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        try:
            self.outputs.append(self.fn(self.pending))
        except RuntimeError as err:
            raise ClipError(self.clip_id, Reason.EXTRACT_FAILED, f"{self.what} inference failed: {err}") from err
        self.pending = []

    def result(self) -> list[np.ndarray]:
        self.flush()
        return self.outputs


class FeatureExtractor:
    """Base of the modality extractors. Subclasses set ``name``, ``version``, ``weights_sha256``,
    ``precision``, ``device`` and implement ``params``, ``decode_params`` and ``consumer``; the
    modality and its width come from its :class:`Modality` record (:meth:`declare`).

    An extractor built with ``load=False`` is *described*: everything that decides its identity
    (configuration, code version, the weights' recorded sha256, precision) without its networks,
    so a release can tell current shards without loading weights; it computes nothing.
    """

    modality: str = ""
    name: str = ""  # extractor name recorded in provenance, e.g. "mediapipe-blazepose-full"
    dim: int = 0
    loaded: bool = True  # False: described only (see the class docstring)

    # set by subclasses (usually in __init__)
    version: str = ""  # code_version(...) of the modules that compute the features
    weights_sha256: str = UNTRAINED
    precision: str = "float32"
    device: str = "cpu"

    def declare(self, record: Modality, dim: int | None = None) -> None:
        """Take the modality's name and vector width from its record (``dim``: a width that depends
        on the configuration, e.g. facial's network)."""
        self.modality, self.dim = record.name, dim or record.dim

    @property
    def untrained(self) -> bool:
        return self.weights_sha256 == UNTRAINED

    def shared_run(self) -> SharedRun | None:
        """The per-clip computation this extractor shares with others in a pass, if any."""
        return None

    def require_loaded(self) -> None:
        if not self.loaded:
            raise RuntimeError(f"the {self.modality} extractor was built without its networks (load=False)")

    def params(self) -> dict:
        """Every parameter that changes the output (decode fps, resize, crop, thresholds...)."""
        raise NotImplementedError

    def decode_params(self) -> DecodeParams:
        """The grid (rate, size, time window) this extractor samples."""
        raise NotImplementedError

    def consumer(self, clip_id: str, shared: PassShared | None = None) -> ClipConsumer:
        """A fresh computation for one clip (models are shared, per-clip state is not); ``shared``
        is the pass's :class:`PassShared` when several consumers share one decode pass."""
        raise NotImplementedError

    def compute(self, path: str | Path, clip_id: str, *, budget_s: float | None = None) -> FeatureSequence:
        """Decode ``path`` for this extractor alone and compute its features (``ClipError`` if bad)."""
        self.require_loaded()
        consumer = self.consumer(clip_id)
        try:
            with decode_pass(path, [self.decode_params()], clip_id, budget_s=budget_s) as one:
                for _, sample in one:
                    consumer.push(sample)
                return consumer.finish(one.info)
        finally:
            consumer.close()

    # -- shared machinery --------------------------------------------------------------------

    def identity(self, clip_id: str) -> str:
        return feature_identity(
            clip_id=clip_id,
            modality=self.modality,
            extractor=self.name,
            extractor_version=self.version,
            weights_sha256=self.weights_sha256,
            params=self.params(),
            precision=self.precision,
        )

    def spec(self) -> tables.TableSpec:
        return tables.feature_spec(self.modality, self.dim)

    def row(self, clip_id: str, seq: FeatureSequence) -> dict:
        return {
            "clip_id": clip_id,
            "modality": self.modality,
            "fps": float(seq.fps),
            "source_fps": None if seq.source_fps is None else float(seq.source_fps),
            "frame_width": seq.frame_width,
            "frame_height": seq.frame_height,
            "timestamps": np.asarray(seq.timestamps, dtype=np.float32).tolist(),
            "valid": np.asarray(seq.valid, dtype=bool).tolist(),
            "features": list(np.asarray(seq.features, dtype=np.float32)),
            "extractor": self.name,
            "extractor_version": self.version,
            "weights_sha256": self.weights_sha256,
            "untrained": self.untrained,
            "params": json.dumps(self.params(), sort_keys=True),
            "precision": self.precision,
            "device": self.device,
            "identity": self.identity(clip_id),
        }

    def table(self, clip_id: str, seq: FeatureSequence) -> pa.Table:
        row = self.row(clip_id, seq)
        features = pa.FixedSizeListArray.from_arrays(
            pa.array(np.asarray(seq.features, dtype=np.float32).reshape(-1)), self.dim
        )
        row["features"] = pa.ListArray.from_arrays(pa.array([0, len(seq.features)], pa.int32()), features)
        columns = {k: (v if isinstance(v, pa.Array) else [v]) for k, v in row.items()}
        return tables.to_table(pa.table(columns), self.spec(), where=f"{self.modality}:{clip_id}")

    def shard_path(self, work: str | Path, clip_id: str) -> Path:
        return tables.shard_path(work, f"features/{self.modality}", f"{clip_id[:16]}.{self.identity(clip_id)[:12]}")

    def check_shard(self, work: str | Path, clip_id: str) -> checksums.ShardCheck:
        """The clip's shard of this identity, hashed and compared with the sum recorded when it was
        written (:func:`pipeline.core.checksums.check_shard`)."""
        return checksums.check_shard(work, self.shard_path(work, clip_id))

    def is_current(self, work: str | Path, clip_id: str) -> bool:
        """Whether the clip's shard of this identity exists and is the file its writer recorded."""
        return self.check_shard(work, clip_id).ok

    def extract_to(self, work: str | Path, path: str | Path, clip_id: str, *, force: bool = False) -> tuple[Path, bool]:
        """Compute and write the clip's shard unless a current one exists. Returns (shard, computed)."""
        target = self.shard_path(work, clip_id)
        if not force and self.is_current(work, clip_id):
            return target, False
        return self.write(work, clip_id, self.compute(path, clip_id)), True

    def write(self, work: str | Path, clip_id: str, seq: FeatureSequence) -> Path:
        """Write ``seq`` as the clip's current shard (atomically) and remove its stale shards."""
        target = self.shard_path(work, clip_id)
        if not np.isfinite(seq.features).all():
            # a numerical failure (e.g. overflow in bf16) must not become a released feature
            raise ClipError(clip_id, Reason.EXTRACT_FAILED, f"{self.modality} features are not finite")
        table = self.table(clip_id, seq)
        options = tables.feature_write_options(table.schema)  # docs/SCALE.md
        checksums.write_shard(work, target, table, **options)  # atomic, its sha256 recorded
        for stale in Path(target.parent).glob(f"{self.modality}.{clip_id[:16]}.*.parquet"):
            if stale != target:
                stale.unlink(missing_ok=True)
        return target


class NetworkExtractor(FeatureExtractor):
    """Base of the extractors whose features come from one network of the weights registry
    (holistic, facial, scenic). Its constructor is their one way to pick the device and the
    precision (:func:`pipeline.core.runtime.place`) and to load the verified network.

    Subclasses set ``network`` (the registry name; a constructor may pass another), ``code``
    (the modules beside the subclass's own that compute its features) and, when the modality
    always runs its network in one precision, ``fixed_precision``. The version is derived from
    the subclass's module, ``code`` and the code that runs the network
    (:func:`pipeline.weights.compute_modules`, :mod:`pipeline.core.runtime`), not from
    the registry, cache or import code: what those produce is pinned by the weights' sha256 and
    the preprocessing the parameters record. ``config`` needs ``weights_dir`` and ``seed``.
    """

    network: str = ""  # name in pipeline.weights.registry.REGISTRY
    code: tuple[ModuleType, ...] = ()  # modules beside the subclass's own, e.g. (pipeline.core.decode,)
    fixed_precision: str | None = None  # the network's precision whatever the build's

    def __init__(
        self,
        record: Modality,
        config,
        *,
        network: str | None = None,
        untrained: bool = False,
        device: str | None = None,
        precision: str | None = None,
        load: bool = True,
    ):
        from pipeline.core import runtime
        from pipeline.core.runtime import place
        from pipeline.weights import compute_modules
        from pipeline.weights.registry import get_spec

        self.declare(record)
        self.config = config
        self.network = network or self.network
        self.device, self.precision = place(device, self.fixed_precision or precision)
        own = sys.modules[type(self).__module__]
        self.version = code_version(own, *self.code, *compute_modules(), runtime)
        self.weights_spec = get_spec(self.network)
        self.loaded = load
        if load:
            from pipeline.weights.inference import load_model

            self.model, loaded = load_model(
                self.network, cache_dir=config.weights_dir, untrained=untrained, seed=config.seed, device=self.device
            )
            self.weights_sha256 = loaded.sha256
        else:
            from pipeline.weights.cache import recorded_sha256

            self.model = None
            self.weights_sha256 = recorded_sha256(self.network, cache_dir=config.weights_dir, untrained=untrained)


def current_shards(work: str | Path, modality: str) -> dict[str, Path]:
    """clip_id prefix -> newest shard of each clip for ``modality`` (stale leftovers ignored)."""
    found: dict[str, Path] = {}
    for path in tables.table_files(work, f"features/{modality}"):
        key = path.name.split(".")[1]
        if key not in found or path.stat().st_mtime > found[key].stat().st_mtime:
            found[key] = path
    return found


def shard_dim(path: str | Path) -> int:
    """The per-sample vector width of a feature shard, from its schema."""
    return pq.read_schema(path).field("features").type.value_type.list_size


def read_features(path: str | Path, modality: str, dim: int | None = None) -> pa.Table:
    """One feature shard, checked against its schema (``dim``: the width it must have; None: its own)."""
    return tables.read_file(path, tables.feature_spec(modality, shard_dim(path) if dim is None else dim))
