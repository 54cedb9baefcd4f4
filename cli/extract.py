"""``vdv extract MODALITY [MODALITY ...]``: compute feature modalities for the clips of a work directory.

Which clips: by default the kept clips (the ``clips`` table joined with ``screening.kept``);
``--all`` takes every clip of the ``clips`` table; ``--clips PATH ...`` takes files directly
(their id is the sha256 of their bytes). Each clip is decoded once for all the modalities
asked for. A modality whose current shard exists is skipped unless ``--force``. A clip that
fails is recorded in ``rejections/rejections.extract-<modality>.parquet`` (stage
``extract:<modality>``) and the run goes on; a later run drops the record of a clip that then
succeeds. This is the same per-clip loop the build flow maps over its workers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.modalities import registry

log = logging.getLogger(__name__)


def register(subparsers, parent: argparse.ArgumentParser) -> None:
    names = registry.names()
    p = subparsers.add_parser(
        "extract",
        parents=[parent],
        help=f"compute feature modalities ({', '.join(names)}) for the kept clips",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("modalities", nargs="+", choices=names, metavar="MODALITY", help="one or more of: %(choices)s")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every clip of the clips table, kept or not")
    which.add_argument(
        "--clips", nargs="+", metavar="PATH", help="these video files instead of the work directory's clips"
    )
    p.add_argument("--untrained", action="store_true", help="allow randomly initialised weights (marked in every row)")
    p.add_argument(
        "--device",
        help="torch device for the network modalities, e.g. cpu or cuda (default: the work directory's "
        "recorded placement, else CUDA if present)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "bfloat16", "float32"),
        help="numeric precision of the appearance networks; auto is bfloat16 where the device supports it "
        "(default: [extract] precision, else the work directory's recorded placement, else auto)",
    )
    p.add_argument("--force", action="store_true", help="recompute shards that are already current")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, writes_work="extract", work_access="create")


def select_clips(work: Path, *, every: bool = False, paths: list[str] | None = None) -> list[dict]:
    """``clip_id``, ``path``, ``video_id`` of the clips to extract, in a stable order."""
    from pipeline.core import tables
    from pipeline.core.provenance import sha256_file
    from pipeline.stages import kept_clips

    if paths:
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            from pipeline.core.config import ConfigError

            raise ConfigError(f"--clips: no such file: {', '.join(missing)}")
        return [{"clip_id": sha256_file(p), "path": str(p), "video_id": None} for p in paths]
    if not every:
        return kept_clips(work)
    return sorted(tables.read_table(work, tables.CLIPS).to_pylist(), key=lambda c: c["clip_id"])


def run(args) -> int:
    """The command; Ctrl-C or SIGTERM stops it (``cli.flows.stoppable``: exit code 130 or 143)."""
    from cli.flows import stoppable

    return stoppable("extract", lambda: _extract(args))


def _extract(args) -> int:
    from pipeline.core.placement import checked_placement, write_placement
    from pipeline.core.runtime import check_device
    from pipeline.extraction import stage as extraction
    from pipeline.modalities import registry as modalities
    from pipeline.sections import load_config

    work = Path(args.work)
    config = load_config(args.config)
    if args.device:
        check_device(args.device, "--device")  # before any extractor is built, naming the option
    # the flags win; the work directory's recorded placement fills in what they leave open
    placement = checked_placement(
        work, config, args.device, args.precision, backends=modalities.backend_settings(config)
    )
    plan = extraction.plan_extraction(args.modalities, config, untrained=args.untrained, placement=placement)
    try:
        extractors = extraction.load_extractors(plan)
    except ImportError as err:
        print(f"vdv extract: error: the extractors cannot be loaded ({err})", file=sys.stderr)
        return 2
    clips = select_clips(work, every=args.all, paths=args.clips)
    if not clips:
        names = " ".join(plan.modalities)
        print(f"extract {names}: no clips to extract in {work} (run ingest and screen first, or pass --clips)")
        return 0
    extraction.sweep_partial_files(work)  # under the work directory's lock (cli.main)
    write_placement(work, placement, "extract")
    run = extraction.run_extraction(
        work,
        clips,
        plan,
        decode=config.get("decode", {}),
        force=args.force,
        show_progress=False if args.no_progress else None,
    )
    for modality, t in run.totals().items():
        ex = extractors[modality]
        print(
            f"extract {modality}: {t['computed']} computed, {t['skipped']} skipped (already current), "
            f"{t['failed']} failed (extractor {ex.name}, weights {ex.weights_sha256[:12]}, {ex.precision} on {ex.device})"
        )
        if t["failed"]:
            print(f"  failures recorded in {extraction.rejections_path(work, modality)}")
    done = [it for it in run.items if it.status != extraction.REJECTED]
    return 1 if run.items and not done else 0
