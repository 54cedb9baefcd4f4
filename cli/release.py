"""``vdv release [--out DIR] [--allow-untrained]`` and ``vdv release verify DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping


def register(subparsers, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "release",
        parents=[parent],
        help="package the work directory as a versioned dataset release, or verify one",
        description=(
            "Package WORK's scores, splits and feature shards as <out>/<name>-<version>/ (names from the "
            "[release] config section): one Hugging Face config per modality plus scores, split by the "
            "all-challenge track, single-challenge splits under splits/, a dataset card, SHA256SUMS and "
            "manifest.json with the provenance of every feature. `vdv release verify DIR` re-checks a release."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("action", nargs="?", choices=("verify",), help="verify DIR instead of packaging")
    p.add_argument("dir", nargs="?", metavar="DIR", help="with verify: the release directory")
    p.add_argument("--out", default="release", metavar="DIR", help="parent directory of the release")
    p.add_argument(
        "--allow-untrained",
        action="store_true",
        help="package features from untrained weights (card and manifest say so)",
    )
    p.add_argument(
        "--salt", help="salt of the uploader hashes (default: $VDV_RELEASE_SALT, else a random salt that is not kept)"
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="release even when kept clips lack current features (stale or missing shards): they are left out "
        "and listed in the card and manifest (packages directly, without a flow run)",
    )
    p.add_argument("--no-flow", action="store_true", help="package directly, without a Prefect flow run")
    p.set_defaults(func=_release)


def _release(args) -> int:
    if args.action == "verify":
        if not args.dir:
            print("vdv release verify: give the release directory", file=sys.stderr)
            return 2
        return _verify(args.dir)
    if args.dir:
        print(
            f"vdv release: unexpected argument {args.dir!r} (did you mean `vdv release verify {args.dir}`?)",
            file=sys.stderr,
        )
        return 2
    from pathlib import Path

    from pipeline.core.workdir import prepare, remove_created
    from pipeline.release import NothingToRelease, ReleaseError, check_releasable

    try:
        # before a flow starts: a work directory this run cannot write (its lock), or one with
        # nothing to release, or an --out it cannot write, is one line and exit code 2; a missing
        # work directory is never made here
        if Path(args.work).is_dir():
            prepare(args.work, label="--work")
        check_releasable(args.work, "--work")
        remove_created(prepare(args.out, label="--out"))  # proven writable; made when the release is
    except NothingToRelease as err:
        print(f"vdv release: error: {err}", file=sys.stderr)
        return 2
    from cli.flows import stoppable

    try:
        result = stoppable("release", lambda: _locked_release(args))
    except ReleaseError as err:
        print(f"vdv release: {err}", file=sys.stderr)
        return 1
    if not result["verified"]:
        return _verify(result["path"])
    print_release(result)
    return 0


def _locked_release(args) -> dict:
    """The release under the work directory's lock, taken first (the flow joins it): a busy
    directory is refused at once, before a temporary Prefect server starts."""
    from pipeline.core.lock import WorkLock

    with WorkLock(args.work, "vdv release", shared=True):
        return _package(args) if args.no_flow or args.allow_missing else _release_flow(args)


def _package(args) -> dict:
    """Package directly, without a flow run; the summary of the release, verified or not."""
    from flows.tasks import read_state
    from pipeline.core.placement import recorded_place
    from pipeline.release import release_stage
    from pipeline.sections import load_config

    built = read_state(args.work, "build_report")
    precision, device = recorded_place(args.work, built)  # what the features were made with
    run = release_stage(
        args.work,
        args.out,
        load_config(args.config),
        allow_untrained=args.allow_untrained,
        salt=args.salt,
        allow_missing=args.allow_missing,
        precision=precision,
        device=device,
    )
    return run.as_dict()


def _release_flow(args) -> dict:
    """The release flow (packages and verifies, or fails)."""
    from cli.flows import load_flow, prefect_defaults, temporary_server

    prefect_defaults()
    with temporary_server(args.work):
        release_flow = load_flow("release")
        return release_flow(
            work=args.work, out=args.out, config_path=args.config, allow_untrained=args.allow_untrained, salt=args.salt
        )


def print_release(release: Mapping, indent: str = "  ") -> None:
    """A verified release: its path, rows per config and split, and which features are untrained."""
    print(f"release: {release['path']} (verified)")
    _print_counts(release["counts"], indent)
    if release["untrained_modalities"]:
        print(f"{indent}WARNING: {', '.join(release['untrained_modalities'])} features come from UNTRAINED weights")


def _print_counts(counts: Mapping[str, Mapping[str, int]], indent: str) -> None:
    for config, splits in counts.items():
        print(f"{indent}{config:<9} train {splits.get('train', 0)}, test {splits.get('test', 0)}")


def _verify(directory: str) -> int:
    from pipeline.release import verify_release

    result = verify_release(directory)
    _print_counts(result.counts, "  ")
    if result.ok:
        print(f"{directory}: OK (checksums, schemas, counts, splits)")
        return 0
    for problem in result.problems:
        print(f"  problem: {problem}", file=sys.stderr)
    print(f"{directory}: {len(result.problems)} problem(s)", file=sys.stderr)
    return 1
