"""What a release may hold and what it must say about itself: the tracks' train/test assignment
and its notes (SPEC section 6), features from untrained weights only when allowed, and no kept
clip silently missing its current features (SPEC section 9)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from pipeline.release.config import ReleaseConfig, ReleaseError
from pipeline.release.inventory import Inventory
from pipeline.scoring import splits

log = logging.getLogger(__name__)

UNTRAINED_WARNING = (
    "WARNING: features of {modalities} were computed with UNTRAINED (randomly initialised) weights. "
    "They carry no learned visual information and must not be used to train or evaluate models; "
    "this release only demonstrates the pipeline."
)


def assign_tracks(
    challenge_of: Mapping[str, str], uploader_of: Mapping[str, str | None], config: ReleaseConfig
) -> dict[str, dict[str, str]]:
    """track -> clip id -> split, by the split rule of ``pipeline/scoring/splits.py``."""
    groups = uploader_of if config.group_by_uploader else None
    return splits.all_tracks(challenge_of, groups, config.train_fraction)


def split_notes(tracks: Mapping[str, Mapping[str, str]], config: ReleaseConfig) -> list[str]:
    """Notes for the card and manifest on splits that are not the usual 80/20 (each is also logged)."""
    notes = (
        []
        if config.group_by_uploader
        else ["uploader grouping of the split rule is OFF ([release] group_by_uploader = false)"]
    )
    for track, assignment in tracks.items():
        if len(assignment) >= 2 and len(set(assignment.values())) == 1:
            notes.append(
                f"track {track}: every clip is in {next(iter(assignment.values()))} (its clips share one uploader)"
            )
    for note in notes:
        log.warning("release: %s", note)
    return notes


def untrained_modalities(inventories: Mapping[str, Inventory], allow_untrained: bool) -> list[str]:
    """The modalities whose released features come from untrained weights, sorted.

    Without ``allow_untrained`` a :class:`ReleaseError` refuses them, and refuses stale clips whose
    newest shard is untrained too (the fix is the same: real weights, then re-extraction).
    """
    concerned = sorted(m for m, inv in inventories.items() if inv.untrained or inv.stale_untrained)
    if concerned and not allow_untrained:
        raise ReleaseError(
            f"features of {concerned} come from untrained weights; fetch or import the weights and re-extract "
            "(vdv weights ...), or pass --allow-untrained to make a clearly marked demonstration release"
        )
    return sorted(m for m, inv in inventories.items() if inv.untrained)


def check_complete(work: Path, inventories: Mapping[str, Inventory], allow_missing: bool) -> None:
    """Refuse a release that would silently lack a kept clip's current features."""
    problems, fixes = [], []
    for modality, inv in inventories.items():
        if inv.stale:
            problems.append(
                f"{modality}: {len(inv.stale)} kept clip(s) have only stale shards (made by another "
                f"configuration, code or weights): {', '.join(c[:16] for c in inv.stale)}"
            )
        if inv.missing:
            problems.append(
                f"{modality}: {len(inv.missing)} kept clip(s) have no shard and no recorded rejection: "
                f"{', '.join(c[:16] for c in inv.missing)}"
            )
        if inv.damaged:
            problems.append(
                f"{modality}: {len(inv.damaged)} kept clip(s) have a shard that is not the file extraction wrote "
                "(checksum): " + ", ".join(f"clip {c[:16]} ({why})" for c, why in inv.damaged.items())
            )
        if inv.stale or inv.missing or inv.damaged:
            fixes.append(modality)
    if not problems or allow_missing:
        for problem in problems:
            log.warning("release: %s; left out (allow_missing)", problem)
        return
    raise ReleaseError(
        "; ".join(problems) + f". Re-extract them with `vdv reextract --work {work} --modalities {','.join(fixes)}` "
        "(same --config), or pass --allow-missing to release without them (they are listed in the card)"
    )


def left_out_notes(inventories: Mapping[str, Inventory]) -> list[str]:
    """Notes naming the kept clips each modality leaves out: rejected, then stale or missing."""
    notes = []
    for modality, inv in inventories.items():
        if inv.rejected:
            notes.append(
                f"{modality}: {len(inv.rejected)} kept clip(s) left out, their extraction was rejected: "
                + ", ".join(f"{c[:16]} ({why.split(':')[0]})" for c, why in sorted(inv.rejected.items()))
            )
        left_out = inv.stale + inv.missing + list(inv.damaged)
        if left_out:
            notes.append(
                f"{modality}: {len(left_out)} kept clip(s) left out without current features (--allow-missing): "
                + ", ".join(c[:16] for c in sorted(left_out))
            )
    return notes
