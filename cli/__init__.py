"""The ``vdv`` command line: one thin subcommand per stage.

Each module of :func:`command_modules` defines ``register(subparsers)``, which adds its subcommand(s) and
sets ``func`` on the parser; ``func(args)`` returns the process exit code. Heavy libraries
(torch, mediapipe) are imported inside the functions so that ``vdv --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def command_modules() -> tuple:
    """The command modules, one line each, in the order in which a user meets them (imported
    here, so that the graph of imports shows them; each imports its heavy libraries lazily)."""
    from cli import build, extract, models, release, report, stages, train, weights

    return (stages, extract, weights, models, train, build, release, report)


# What a command does with --work, set as ``work_access`` in its parser's defaults (cli.main
# checks it before the command runs): None, it does not write it; "create", it writes it and may
# make it (ingest, build); "update", it writes one that must exist already (screen, report). A
# command that holds the lock itself in cli.main also sets ``writes_work`` (the lock's owner), and
# one that writes other directories names their destinations in ``output_dirs`` (proven
# writable before the command runs, like --work, and removed again if the check made them).
WORK_ACCESS = (None, "create", "update")

EPILOG = """\
A run keeps its tables under a work directory (--work, default ./work):
  clips/ rejections/ screening/ scores/ score_scale/ features/<modality>/
See docs/REFERENCE.md for the raw layout and the tables, README.md for the configuration file.
"""


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand accepts (added as a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--work", default="work", metavar="DIR", help="work directory holding the tables (default: %(default)s)"
    )
    parent.add_argument(
        "--config", metavar="TOML", help="configuration file with one [section] per stage (see data/demo/config.toml)"
    )
    parent.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vdv",
        description="Rebuild the VDV viral dance video dataset from raw clips and train virality models on it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parent = common_options()
    for module in command_modules():
        module.register(sub, parent)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from pipeline.core.workdir import remove_created

    created: list = []  # the work directory, when this command made it
    code = _run(args, created)
    if code == 2:
        # stopped on bad input: a work directory this command made holds nothing worth keeping
        for path in created:
            remove_created(path)
    return code


def _run(args: argparse.Namespace, created: list) -> int:
    """Run the command of ``args``; a usage or input error is one line on stderr and exit code 2.

    A command that writes the work directory says so in its parser's defaults (``work_access``,
    see :data:`WORK_ACCESS`); the directory is then made if the command may make it, and proven
    writable, before the command runs (:func:`pipeline.core.workdir.prepare`). What this made is
    appended to ``created``.
    """
    from models import register_config
    from pipeline.core.config import ConfigError
    from pipeline.core.errors import DiskFull, InputError, WeightsError, disk_full
    from pipeline.sections import load_config

    register_config()  # the models' configuration sections ([train], [psgcn], ...), by a call
    from flows.runners import register_config as register_runner_config

    register_runner_config()  # the flows' [runner] section
    from pipeline.core.lock import WorkDirLocked, WorkLock
    from pipeline.core.tables import SchemaMismatch
    from pipeline.core.workdir import prepare, remove_created

    try:
        if getattr(args, "config", None):
            # the whole file is checked before any work starts, whichever command reads it
            load_config(args.config)
        access = getattr(args, "work_access", None)
        if access not in WORK_ACCESS:
            raise ValueError(f"vdv {args.command}: work_access {access!r} is not one of {list(WORK_ACCESS)}")
        if access == "update" and not os.path.isdir(args.work):
            raise FileNotFoundError(
                f"--work {args.work}: no such work directory; run `vdv ingest` first (or `vdv build`)"
            )
        if access is not None:
            created.append(prepare(args.work, label="--work"))
        for dest in getattr(args, "output_dirs", ()):
            # an output directory is proven writable before the work, not after it, and left as
            # it was: the command makes it when it writes there
            if getattr(args, dest, None):
                remove_created(prepare(getattr(args, dest), label="--" + dest.replace("_", "-")))
        # a command that writes the work directory holds its lock (the flows take their own)
        writes = getattr(args, "writes_work", None)
        if writes:
            with WorkLock(args.work, f"vdv {writes}"):
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C in a command without the flows' own stop (cli.flows.stoppable): one line, no traceback
        note = getattr(args, "stop_note", None)
        print(f"vdv {args.command}: stopped by Ctrl-C" + (f"; {note}" if note else ""), file=sys.stderr)
        return 130
    except WorkDirLocked as err:
        print(f"vdv {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except (ConfigError, InputError, WeightsError, SchemaMismatch, FileNotFoundError) as err:
        # SchemaMismatch: a table file of another table or schema version (an older work directory)
        # bad input: one line that names the file, section or value; no traceback
        print(f"vdv {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (PermissionError, NotADirectoryError, IsADirectoryError) as err:
        # a path the user gave that cannot be used as given; -vv logs where it was met
        logging.getLogger("cli").debug("path error", exc_info=True)
        where = f"{err.filename}: " if err.filename else ""
        print(f"vdv {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except OSError as err:
        full = disk_full(err)
        if full is None:
            raise
        if full.filename is None and getattr(args, "work", None):
            full = DiskFull(full.errno, full.strerror, args.work)  # the write that failed named no file
        # the machine's fault, not the input's: the command stops; what it finished is kept
        print(f"vdv {args.command}: error: {full}", file=sys.stderr)
        return 1


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


if __name__ == "__main__":
    sys.exit(main())
