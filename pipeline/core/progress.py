"""Progress bars over clips, epochs or bytes that log lines do not break.

``progress(total, desc)`` is a context manager around a ``tqdm`` bar that shows a count, a rate
and a time estimate. While it is open, log records of the console handlers go through
``tqdm.write`` (tqdm's logging redirect), so a warning prints above the bar instead of tearing
it. The bar is shown only when its stream is a terminal and ``CI`` is not set to true: a
scheduled run, a redirected log file or a CI job gets the log lines and no bar.

    with progress(len(clips), "extract", unit="clip") as bar:
        for clip in clips:
            ...
            bar.update()

``track(iterable, ...)`` is the same for a plain loop.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

from pipeline.core import stopping

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}


def progress_enabled(stream: IO | None = None) -> bool:
    """A bar is drawn only on a terminal and never when ``$CI`` is true."""
    if os.environ.get("CI", "").strip().lower() in _TRUE:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


@contextlib.contextmanager
def progress(
    total: int | float | None,
    desc: str,
    *,
    unit: str = "clip",
    unit_scale: bool = False,
    enabled: bool | None = None,
    stream: IO | None = None,
):
    """A tqdm bar (disabled off a terminal) with console logging redirected through it."""
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    stream = sys.stderr if stream is None else stream
    shown = progress_enabled(stream) if enabled is None else enabled
    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        unit_divisor=1024 if unit_scale else 1000,
        disable=not shown,
        file=stream,
        dynamic_ncols=True,
        leave=True,
    )
    redirect = logging_redirect_tqdm(tqdm_class=type(bar)) if shown else contextlib.nullcontext()
    if not shown:  # a disabled bar counts nothing: count here what a stopped run says it finished
        bar.update = functools.partial(_count, bar)
    stopping.bar_opened(desc, unit, bar)
    try:
        with redirect:
            yield bar
    except BaseException:
        stopping.bar_interrupted(bar)
        raise
    finally:
        stopping.bar_closed(bar)
        bar.close()


def _count(bar, n: float = 1) -> None:
    bar.n += n


def track(
    iterable: Iterable[T],
    desc: str,
    *,
    total: int | None = None,
    unit: str = "clip",
    enabled: bool | None = None,
    stream: IO | None = None,
) -> Iterator[T]:
    """Iterate ``iterable`` with a :func:`progress` bar advanced once per item."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress(total, desc, unit=unit, enabled=enabled, stream=stream) as bar:
        for item in iterable:
            yield item
            bar.update(1)


__all__ = ["progress", "progress_enabled", "track"]
