"""A full disk for tests: a real small tmpfs where this process may mount one, else ENOSPC
injected into ``os.fsync`` for the files under a directory.

``tables.atomic_write`` (every table, shard and report file) calls ``os.fsync`` on the file it
wrote before renaming it, and a real full device can fail there as well as in ``write`` (delayed
allocation, network file systems); both end in the same ``OSError(ENOSPC)`` that the pipeline
must treat as the machine's fault.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path


class FullDisk:
    """``directory``'s device, full on :meth:`fill` and with space again on :meth:`free`.

    ``real`` is True when ``directory`` is a tmpfs of its own (mounted by :meth:`mount`),
    filled with a file; otherwise the files under ``directory`` fail ``os.fsync`` with ENOSPC
    while the disk is "full" (``monkeypatch`` undoes it at the end of the test).
    """

    def __init__(self, directory: Path, monkeypatch, size_kib: int = 2048, *, mount: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # mount=False: a directory that holds files already (a tmpfs would hide them)
        self.real = mount and _mount_tmpfs(self.directory, size_kib)
        self.full = False
        self._filler = self.directory / ".filler"
        if not self.real:
            real_fsync = os.fsync

            def fsync(fd: int) -> None:
                if self.full and _path_of(fd).startswith(str(self.directory) + os.sep):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                real_fsync(fd)

            monkeypatch.setattr(os, "fsync", fsync)

    def fill(self, leave_bytes: int = 2048) -> None:
        """No room left but ``leave_bytes`` (a real tmpfs), or every write failing (injected)."""
        self.full = True
        if self.real:
            free = shutil.disk_usage(self.directory).free
            with open(self._filler, "wb") as fh:
                fh.truncate(0)
                chunk = b"\0" * (1 << 16)
                left = max(free - leave_bytes, 0)
                while left > 0:
                    fh.write(chunk[: min(len(chunk), left)])
                    left -= min(len(chunk), left)

    def free(self) -> None:
        self.full = False
        self._filler.unlink(missing_ok=True)

    def close(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.directory)], check=False, capture_output=True)


def _mount_tmpfs(directory: Path, size_kib: int) -> bool:
    """Mount a tmpfs of ``size_kib`` on ``directory``; False where this process may not (not root,
    no mount command, a container without the capability)."""
    if os.geteuid() != 0 or shutil.which("mount") is None or os.environ.get("VDV_TEST_NO_TMPFS"):
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(directory)], check=False, capture_output=True
    )
    return done.returncode == 0


def _path_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
