"""``vdv extract MODALITY``: compute one feature modality for the clips of a work directory.

Which clips: by default the kept clips (the ``clips`` table joined with ``screening.kept``);
``--all`` takes every clip of the ``clips`` table; ``--clips PATH ...`` takes files directly
(their id is the sha256 of their bytes). A clip whose current shard exists is skipped unless
``--force``. A clip that fails is recorded in ``rejections/rejections.extract-<modality>.parquet``
(stage ``extract:<modality>``) and the run goes on; a later run drops the record of a clip
that then succeeds.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

MODALITIES = ("pose", "holistic", "facial", "scenic")

log = logging.getLogger(__name__)


def register(subparsers, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "extract",
        parents=[parent],
        help="compute one feature modality (pose, holistic, facial, scenic) for the kept clips",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("modality", choices=MODALITIES, help="which feature modality to compute: %(choices)s")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every clip of the clips table, kept or not")
    which.add_argument(
        "--clips", nargs="+", metavar="PATH", help="these video files instead of the work directory's clips"
    )
    p.add_argument("--untrained", action="store_true", help="allow randomly initialised weights (marked in every row)")
    p.add_argument("--device", help="torch device for the network modalities, e.g. cpu or cuda")
    p.add_argument("--force", action="store_true", help="recompute shards that are already current")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def select_clips(
    work: Path, *, every: bool = False, paths: list[str] | None = None
) -> list[tuple[str, str, str | None]]:
    """``(clip_id, path, video_id)`` of the clips to extract, in a stable order."""
    from pipeline import tables
    from pipeline.provenance import sha256_file

    if paths:
        return [(sha256_file(p), str(p), None) for p in paths]
    clips = tables.read_table(work, tables.CLIPS).to_pylist()
    if not every:
        screening = tables.read_table(work, tables.SCREENING).to_pylist()
        kept = {row["clip_id"] for row in screening if row["kept"]}
        clips = [c for c in clips if c["clip_id"] in kept]
    return sorted(((c["clip_id"], c["path"], c["video_id"]) for c in clips), key=lambda c: c[0])


def record_failures(work: Path, modality: str, attempted: set[str], failures: list[dict]) -> Path | None:
    """Merge this run's failures into the modality's rejection file (clips retried drop old rows)."""
    from pipeline import tables

    path = Path(work) / "rejections" / f"rejections.extract-{modality}.parquet"
    old = tables.read_file(path, tables.REJECTIONS).to_pylist() if path.exists() else []
    rows = [r for r in old if r["clip_id"] not in attempted] + failures
    if not rows and not path.exists():
        return None
    return tables.write_table(rows, tables.REJECTIONS, path)


def run(args) -> int:
    from pipeline.config import load_config
    from pipeline.errors import ClipError, Reason

    work = Path(args.work)
    config = load_config(args.config)
    try:
        module = importlib.import_module(f"pipeline.{args.modality}")
    except ImportError as err:
        print(f"vdv extract: error: the {args.modality} extractor cannot be loaded ({err})", file=sys.stderr)
        return 2
    extractor = module.build_extractor(config.get(args.modality, {}), untrained=args.untrained, device=args.device)
    clips = select_clips(work, every=args.all, paths=args.clips)
    if not clips:
        print(f"extract {args.modality}: no clips to extract in {work} (run ingest and screen first, or pass --clips)")
        return 0
    stage = f"extract:{args.modality}"
    computed = skipped = 0
    failures: list[dict] = []
    progress = _progress(len(clips), args.modality, disabled=args.no_progress)
    for clip_id, path, video_id in clips:
        try:
            if not Path(path).is_file():
                raise ClipError(clip_id, Reason.NO_CLIP, f"{path} does not exist")
            if not args.force and extractor.is_current(work, clip_id):
                skipped += 1
                continue
            extractor.extract_to(work, path, clip_id, force=args.force)
            computed += 1
        except ClipError as err:
            failures.append(_failure(stage, clip_id, video_id, path, err.reason.value, err.message))
        except Exception as err:  # noqa: BLE001 - one clip must not sink the batch; it is recorded
            log.exception("extract %s failed on %s", args.modality, path)
            failures.append(
                _failure(stage, clip_id, video_id, path, Reason.EXTRACT_FAILED.value, f"{type(err).__name__}: {err}")
            )
        finally:
            progress.update(1)
    progress.close()
    # a clip of this run that succeeded or is current has no failure left to record
    written = record_failures(work, args.modality, {c[0] for c in clips}, failures)
    print(
        f"extract {args.modality}: {computed} computed, {skipped} skipped (already current), {len(failures)} failed"
        f" (extractor {extractor.name}, weights {extractor.weights_sha256[:12]})"
    )
    if failures and written:
        print(f"  failures recorded in {written}")
    return 1 if failures and not computed and not skipped else 0


def _failure(stage: str, clip_id: str, video_id: str | None, path: str, reason: str, message: str) -> dict:
    return {
        "stage": stage,
        "clip_id": clip_id,
        "video_id": video_id,
        "path": str(path),
        "reason": reason,
        "message": message,
    }


def _progress(total: int, label: str, *, disabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"extract {label}", unit="clip", file=sys.stderr, disable=disabled)
