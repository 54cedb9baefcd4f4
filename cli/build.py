"""``vdv build RAW_DIR`` and ``vdv reextract``: the Prefect flows, run without a server.

Both run in Prefect's ephemeral mode (a temporary local API for the run's duration, no server
to start) unless ``PREFECT_API_URL`` points at one. Progress is logged per stage and per clip;
at the end the per-stage counts are printed, including how many clip x modality items were
computed and how many were skipped because their shard was current.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from cli.flows import load_flow, prefect_defaults, stoppable, temporary_server
from pipeline.modalities import registry


def _flow_options(parser: argparse.ArgumentParser) -> None:
    names = registry.names()
    parser.add_argument(
        "--modalities",
        nargs="+",
        choices=names,
        default=list(names),
        metavar="MODALITY",
        help=f"extractors to run, each clip decoded once for all of them: {' '.join(names)} (default: all of them)",
    )
    parser.add_argument(
        "--untrained",
        action="store_true",
        help="extract with seeded random weights where pre-trained ones are missing (recorded in every row)",
    )
    parser.add_argument("--device", metavar="DEV", help="cpu or cuda (default: CUDA when present)")
    parser.add_argument(
        "--precision",
        choices=("auto", "bfloat16", "float32"),
        help="numeric precision of the appearance networks, resolved once for the build; auto is bfloat16 "
        "where the device supports it natively (default: [extract] precision, else auto)",
    )
    parser.add_argument(
        "--runner",
        choices=("thread", "process", "dask"),
        default="thread",
        help="task runner: a thread pool (default), a process pool, or Dask (prefect-dask) for many processes or machines",
    )
    parser.add_argument(
        "--dask-address",
        metavar="ADDR",
        help="with --runner dask: a running scheduler, e.g. tcp://host:8786 (default: a local cluster)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="clips processed at once: thread-pool size, process-pool size or local Dask worker processes "
        "(default: 2; on CUDA a thread pool of [pose] max_batch, or one Dask worker)",
    )
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        metavar="N",
        help="with a local Dask cluster: clips in flight per worker process, sharing its models "
        "(default: 1; on CUDA [pose] max_batch, so that batches fill)",
    )
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")


def register(subparsers, parent: argparse.ArgumentParser) -> None:
    _add_build(subparsers, parent)
    _add_reextract(subparsers, parent)


def _add_build(subparsers, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "build",
        parents=[parent],
        help="the whole pipeline: ingest, screen, score, extract, (train), release",
        description=(
            "Run the build flow on RAW_DIR (RAW_DIR/clips and RAW_DIR/metadata): ingest, screen and score "
            "the clips, extract the chosen modalities of the kept clips in parallel, optionally train, and "
            "package a verified release. Incremental: clips whose screening or feature shards are current "
            "are skipped, and the counts say how many."
        ),
    )
    p.add_argument("raw_dir", metavar="RAW_DIR", help="raw layout: RAW_DIR/clips/ and RAW_DIR/metadata/")
    p.add_argument(
        "--pairing", metavar="CSV", help="CSV pairing clip files with metadata records (file,video_id[,challenge])"
    )
    p.add_argument(
        "--overrides",
        metavar="CSV",
        help="reviewer override file (clip or video id, keep/reject, note) for screening, and for ingest: "
        "a keep admits a clip judged a re-encoding of an earlier upload",
    )
    p.add_argument(
        "--crawl-time",
        metavar="ISO",
        help="crawl time of records that carry none (else a crawler file-name stamp; never the current time)",
    )
    _flow_options(p)
    p.add_argument(
        "--train", action="store_true", help="run the training stage (models.train) on the all-challenge track"
    )
    p.add_argument("--train-dir", metavar="DIR", help="checkpoints of the training stage (default: WORK/train)")
    p.add_argument(
        "--release-out", metavar="DIR", help="package a release under DIR and verify it (default: no release)"
    )
    p.add_argument(
        "--allow-untrained",
        action="store_true",
        help="let features from untrained weights into the release (marked in card and manifest)",
    )
    p.add_argument(
        "--salt", help="salt of the uploader hashes (default: $VDV_RELEASE_SALT, else a random salt that is not kept)"
    )
    p.set_defaults(func=_build, work_access="create", output_dirs=("train_dir", "release_out"))


def _add_reextract(subparsers, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "reextract",
        parents=[parent],
        help="recompute modalities whose clip or extractor identity changed",
        description=(
            "Run the reextract flow: for the kept clips of WORK, recompute the chosen modalities where the "
            "clip content, extractor code, weights, parameters or precision changed; everything else is "
            "skipped. With --raw-dir the rule stages run first so that new clips are picked up."
        ),
    )
    p.add_argument("--raw-dir", metavar="DIR", help="re-run ingest, screen and score on this raw directory first")
    p.add_argument("--pairing", metavar="CSV", help="with --raw-dir: pairing file")
    p.add_argument("--overrides", metavar="CSV", help="with --raw-dir: override file of ingest and screening")
    p.add_argument("--force", action="store_true", help="recompute even current shards")
    _flow_options(p)
    p.set_defaults(func=_reextract, work_access="update")


def _runner(args) -> dict:
    """The flow parameters that choose where the per-clip tasks run."""
    if any(n is not None and n < 1 for n in (args.workers, args.threads_per_worker)):
        from pipeline.core.config import ConfigError

        raise ConfigError("--workers and --threads-per-worker must be at least 1")
    return {
        "runner": args.runner,
        "workers": args.workers,
        "threads_per_worker": args.threads_per_worker,
        "dask_address": args.dask_address,
    }


def _check_inputs(args) -> None:
    """Bad input fails here, in one line naming the option, before a flow run (and its logging)
    starts: the files, the raw directory, the runner's options, the device and the scheduler."""
    from pipeline.core.config import ConfigError
    from pipeline.ingest.stage import check_raw_dir, read_pairing
    from pipeline.sections import load_config

    load_config(args.config)
    if args.raw_dir is not None:
        check_raw_dir(args.raw_dir, "RAW_DIR" if args.command == "build" else "--raw-dir")
    _runner(args)
    if args.dask_address and args.runner != "dask":
        raise ConfigError(f"--dask-address {args.dask_address} needs --runner dask (the runner is {args.runner})")
    if getattr(args, "pairing", None):
        read_pairing(args.pairing)
    if getattr(args, "overrides", None):
        from pipeline.screening.stage import read_overrides

        try:
            read_overrides(args.overrides)
        except ValueError as err:
            raise ConfigError(str(err)) from err
    # the slower checks last: torch's import, a connection to the scheduler
    if args.device:
        from pipeline.core.runtime import check_device

        check_device(args.device, "--device")
    if args.dask_address:
        from flows.runners import check_scheduler

        check_scheduler(args.dask_address, "--dask-address")


# flow parameters given by the option of the same name (besides --work, --config, --modalities)
BUILD_OPTIONS = (
    "raw_dir",
    "pairing",
    "overrides",
    "crawl_time",
    "untrained",
    "device",
    "precision",
    "train",
    "train_dir",
    "release_out",
    "allow_untrained",
    "salt",
)
REEXTRACT_OPTIONS = ("raw_dir", "pairing", "overrides", "untrained", "device", "precision", "force")


def _build(args) -> int:
    return _run_flow(args, "build", BUILD_OPTIONS)


def _reextract(args) -> int:
    return _run_flow(args, "reextract", REEXTRACT_OPTIONS)


def _run_flow(args, name: str, options: tuple[str, ...]) -> int:
    """Run the flow ``name`` with the runner and ``options`` of ``args``; print its report.

    Exit code 1 when a stage fails (its one-line error, then what the run reported before it) or
    another run holds the work directory (its one-line error, before anything slow starts);
    130 or 143 when Ctrl-C or SIGTERM stopped it (``cli.flows.stoppable``).
    """
    prefect_defaults()  # set before anything the input checks import (load_flow sets them too)
    _check_inputs(args)
    from pipeline.core.lock import WorkDirLocked

    try:
        return stoppable(f"{name}", lambda: _locked_flow(args, name, options))
    except WorkDirLocked as err:
        print(f"vdv {name}: error: {err}", file=sys.stderr)
        return 1


def _locked_flow(args, name: str, options: tuple[str, ...]) -> int:
    """The flow run under the work directory's lock, taken first (the flow joins it) so that a
    busy directory is refused at once, with the run's temporary Prefect server."""
    from pipeline.core.lock import WorkLock

    with WorkLock(args.work, f"vdv {name}", shared=True), temporary_server(args.work):
        flow = load_flow(name)
        from flows.build import BuildError

        params = {option: getattr(args, option) for option in options}
        try:
            report = flow(
                **_runner(args), work=args.work, config_path=args.config, modalities=list(args.modalities), **params
            )
        except BuildError as err:
            print(f"vdv {name}: {err}", file=sys.stderr)
            _print_report(_read_report(args.work, f"{name}_report"), args)
            return 1
    _print_report(report, args)
    return 0


def _read_report(work: str, name: str) -> dict:
    from flows.tasks import read_state

    return read_state(work, name)


def _print_report(report: dict, args) -> None:
    if not report:
        return
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print()
    if "ingest" in report:
        i = report["ingest"]
        print(f"ingest:  {i['clips']} clip(s) accepted, {i['rejected']} rejected {i['reasons'] or ''}")
        for problem in i.get("metadata_problems", []):
            print(f"         bad metadata: {problem}")
    if "screen" in report:
        s = report["screen"]
        pixels = s.get("pixel_rules", {})
        print(
            f"screen:  {s['kept']} kept, {s['rejected']} rejected of {s['screened']}; pixel rules run on "
            f"{pixels.get('computed', 0)} clip(s), {pixels.get('reused', 0)} reused (clip and rules unchanged)"
        )
        if s.get("reasons"):
            print("         rejected by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(s["reasons"].items())))
        for note in s.get("notes", []):
            print(f"         note: {note}")
    if "score" in report:
        s = report["score"]
        print(f"score:   {s['scored']} clip(s) scored, {s['rejected']} rejected")
        for challenge, scale in sorted(s["challenges"].items()):
            print(
                f"         {challenge}: raw score {scale['raw_min']:.3f} .. {scale['raw_max']:.3f} over {scale['n_clips']} clip(s)"
            )
    if "precision" in report:
        workers = report.get("workers") or []
        print(
            f"extract: {report['precision']} on {report.get('device')}, BlazePose backend {report.get('pose_backend')}, "
            f"{len(workers)} worker process(es) checked"
        )
    print("extract: modality   computed  skipped  failed  seconds")
    for modality, e in report.get("extract", {}).items():
        print(f"         {modality:<9} {e['computed']:>9} {e['skipped']:>8} {e['failed']:>7} {e['seconds']:>8.1f}")
    if report.get("failed"):
        print(f"         FAILED: {report['failed']}")
    if "extract_totals" in report:
        t = report["extract_totals"]
        print(f"         total: {t['computed']} computed, {t['skipped']} skipped (shard current), {t['failed']} failed")
    if "train" in report:
        print(f"train:   {report['train']}")
    if "release" in report:
        from cli.release import print_release

        print_release(report["release"], indent=" " * 9)
    if report.get("report"):
        print(f"report:  {report['report']}")
    if "seconds" in report:
        print(f"done in {report['seconds']:.1f} s (work: {os.path.abspath(report.get('work', args.work))})")
