"""A work directory a command may write: made when missing, proven writable, and removed again
when the command that made it stops on bad input.

A run that could not write its work directory used to find out late: at the lock, with a
``PermissionError`` traceback, or inside a build after its first stages had run. :func:`prepare`
answers first, and for real: it creates the missing directories and writes (then removes) a
probe file in the work directory. Permission bits alone cannot answer, since they say nothing
for root, for a read-only mount, or for ``/proc`` and ``/sys``, which refuse writes of their
own accord. A refusal is one :class:`WorkDirError` naming the path and the system's reason.

:func:`prepare` returns the top-most directory it created. A command that then stops on bad
input (exit code 2) removes it with :func:`remove_created`, so that a typo in a flag or a file
leaves no empty or partial work directory behind. A directory that existed before the command
is never removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pipeline.core.errors import InputError

PROBE_PREFIX = ".vdv-write-probe-"


class WorkDirError(InputError):
    """The work directory cannot be created or written; the message names the path and why."""


def _reason(err: OSError, path: Path) -> str:
    """The system's reason, and the path it concerns when that is not ``path`` itself."""
    reason = err.strerror or str(err)
    blocking = next((p for p in path.parents if os.path.lexists(p) and not p.is_dir()), None)
    if blocking is not None:
        return f"{reason} ({blocking} is a file)"
    where = err.filename
    if where is not None and Path(where) != path:
        return f"{reason} ({where})"
    return reason


def _top_missing(path: Path) -> Path | None:
    """The top-most directory of ``path`` that does not exist yet (None: it exists)."""
    missing = None
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            break
        missing = candidate
    return missing


def prepare(work: str | os.PathLike, *, label: str = "work directory") -> Path | None:
    """Make ``work`` if it is missing and prove that a file can be written in it.

    Returns the top-most directory this call created (None when ``work`` existed), for
    :func:`remove_created`. Raises :class:`WorkDirError` naming ``label`` (``--work`` on the
    command line, the parameter's name in a flow), the path and the reason.
    """
    path = Path(work).absolute()
    if path.exists() and not path.is_dir():
        raise WorkDirError(f"{label} {work}: not a directory (a file is in its place)")
    created = _top_missing(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WorkDirError(f"{label} {work}: cannot create the directory: {_reason(err, path)}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        remove_created(created)
        # the probe's own name says nothing to the user: the reason alone
        raise WorkDirError(f"{label} {work}: cannot write in it: {err.strerror or err}") from None
    return created


def remove_created(created: Path | None) -> None:
    """Remove what :func:`prepare` created (nothing when it created nothing)."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
