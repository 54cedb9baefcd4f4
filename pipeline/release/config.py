"""The ``[release]`` configuration and the error a release refuses with."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.scoring import splits


class ReleaseError(RuntimeError):
    """A release cannot be made from this work directory; the message says why."""


class NothingToRelease(ReleaseError):
    """The work directory holds no kept, scored clip (never built, or screening kept none): a
    wrong input rather than a failed release, so ``vdv release`` exits with code 2."""


@dataclass(frozen=True)
class ReleaseConfig:
    """Parameters of ``vdv release`` (config section ``[release]``)."""

    name: str = "vdv"  # directory is <out>/<name>-<version>
    version: str = "0.1.0"
    modalities: tuple[str, ...] | None = (
        None  # feature configs to package when present; None: every registered modality
    )
    max_shard_mb: float = 256.0  # uncompressed MiB per Parquet file (HF suggests <= ~500 MB)
    train_fraction: float = splits.TRAIN_FRACTION  # SPEC section 6: 80/20
    # SPEC section 6: an uploader's clips never straddle train and test. A demo whose records all
    # come from one creator would put every clip in train; it may turn this off, and the card,
    # manifest and verification then say so.
    group_by_uploader: bool = True
    license: str = "other"  # Hugging Face license id of the card
    license_note: str = (
        "Features and scores are released for research. The clips themselves are not part of the "
        "release; they remain the property of their uploaders and are referred to by video id only."
    )

    def __post_init__(self):
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(f"[release] train_fraction = {self.train_fraction} must lie in (0, 1)")
        if not self.max_shard_mb > 0:
            raise ValueError(f"[release] max_shard_mb = {self.max_shard_mb} must be positive")
