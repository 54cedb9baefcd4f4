"""``vdv report``: regenerate the build report ``<work>/report/index.html`` from the tables."""

from __future__ import annotations

import argparse


def register(subparsers, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "report",
        parents=[parent],
        help="write the HTML build report of a work directory",
        description=(
            "Write <work>/report/index.html from what screening and extraction wrote: screening decisions with "
            "contact sheets of the sampled frames (skeletons drawn), the scenic background of each kept clip, "
            "every rule's measured value against its threshold, the override line of each "
            "rejected clip, ingest rejections, per-challenge score histograms, extraction totals and the "
            "release. Pages hold a fixed number of clip cards and can be filtered by decision or reason; "
            "images are files beside the pages, so the report opens offline."
        ),
    )
    parser.add_argument(
        "--release",
        metavar="DIR",
        help="release to describe (a <name>-<version> directory or the output directory holding one); "
        "by default the one the last build recorded",
    )
    parser.add_argument(
        "--page-size", type=_positive, default=50, metavar="N", help="clip cards per page (default: 50)"
    )
    parser.add_argument(
        "--backgrounds-budget",
        type=float,
        metavar="SECONDS",
        help="no longer used, accepted for old scripts: the report computes nothing; a kept clip's scenic "
        "background is the one `vdv extract scenic` saved",
    )
    parser.set_defaults(func=_report, work_access="update")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value


def _report(args) -> int:
    import sys

    from pipeline.core.tables import SchemaMismatch
    from pipeline.report import write_report

    if args.backgrounds_budget is not None:
        print("vdv report: --backgrounds-budget is no longer used (the report computes nothing)", file=sys.stderr)
    try:
        index = write_report(args.work, args.release, page_size=args.page_size)
    except SchemaMismatch as err:  # a table of another version or a damaged file: one line, no traceback
        print(f"vdv report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {index}")
    return 0
