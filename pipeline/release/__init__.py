"""Packaging a versioned dataset release from a run's work directory (SPEC section 9).

Layout of ``<out>/<name>-<version>/``::

    README.md                                   dataset card, YAML header (configs, features, splits)
    manifest.json                               provenance of every feature, run lineage, counts
    SHA256SUMS                                  sha256 of every other file (``sha256sum -c`` format)
    score_scale.parquet                         per-challenge raw min/max (SPEC section 3)
    data/scores/{train,test}-0000i-of-0000N.parquet
    data/<modality>/{train,test}-0000i-of-0000N.parquet   modality in pose, holistic, facial, scenic
    splits/<track>.parquet                      (clip_id, split) of every track

Every modality is one Hugging Face config and so are the scores; their files are split by the
all-challenge track, and each clip's feature row is stored once, in the split its clip belongs
to. The single-challenge tracks are (clip_id, split) tables under ``splits/`` (``all.parquet``
repeats the all-challenge split so that every track is found in one place).

Privacy (SPEC section 9): uploader identities are replaced by ``sha256(salt || uploader_id)``;
the salt comes from an option or ``$VDV_RELEASE_SALT`` and is never written (without one a random
salt is drawn and forgotten, so hashes cannot be linked across releases). Captions, usernames,
local paths and metadata file names are not released: the scores table is built from an
allow-list of columns.

Untrained weights (SPEC section 9): a release whose features came from untrained weights is made
only with ``allow_untrained=True``; the card then opens with a warning and the manifest carries
``"untrained": true`` and the modalities concerned.

The release is assembled in a hidden sibling directory and renamed into place, so a crash never
leaves a half-written release under the final name. :func:`verify_release` re-checks checksums,
schemas, row counts, that each clip is stored once, and the splits against the split rule.

Modules, one job each:

- ``config``: ``[release]`` (:class:`ReleaseConfig`) and :class:`ReleaseError`
- ``layout``: config names, the released tables' schemas, shard names, schema signatures
- ``privacy``: the salted uploader hash and the allow-listed scores table
- ``inventory``: which feature shards are current for the kept clips, and what is left out
- ``policy``: track assignment notes, the untrained and completeness rules
- ``shards``: the size-bounded Parquet files of one config, split by split
- ``manifest``: the content of ``manifest.json``
- ``card``: the dataset card (``README.md``)
- ``package``: :func:`package_release` (staging, data, manifest, card, checksums, final swap)
- ``verify``: :func:`verify_release`
- ``stage``: :func:`release_stage`, the stage's driver (package, then verify)
"""

from pipeline.release.card import dataset_card, read_card_header
from pipeline.release.config import NothingToRelease, ReleaseConfig, ReleaseError
from pipeline.release.inventory import expected_extractors
from pipeline.release.layout import RELEASE_FORMAT, RELEASE_SCORES, RELEASE_SPLIT, SCORES_CONFIG, shard_name
from pipeline.release.package import ReleaseSummary, check_releasable, package_release
from pipeline.release.policy import UNTRAINED_WARNING
from pipeline.release.privacy import FORBIDDEN_COLUMNS, SALT_ENV, resolve_salt, salted_hash
from pipeline.release.stage import ReleaseRun, release_stage
from pipeline.release.verify import VerifyResult, verify_release

__all__ = [
    "FORBIDDEN_COLUMNS",
    "RELEASE_FORMAT",
    "RELEASE_SCORES",
    "RELEASE_SPLIT",
    "SALT_ENV",
    "SCORES_CONFIG",
    "UNTRAINED_WARNING",
    "NothingToRelease",
    "ReleaseConfig",
    "ReleaseError",
    "ReleaseRun",
    "ReleaseSummary",
    "VerifyResult",
    "check_releasable",
    "dataset_card",
    "expected_extractors",
    "package_release",
    "read_card_header",
    "release_stage",
    "resolve_salt",
    "salted_hash",
    "shard_name",
    "verify_release",
]
