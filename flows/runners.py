"""Where a build's per-clip tasks run: the task runners, the clips in flight, results as they finish.

The flow's ``runner`` parameter names the runner (``flows/build.py`` docstring): ``thread``
(default) runs ``workers`` clips at once in this process, sharing one copy of each model;
``process`` a process pool; ``dask`` prefect-dask's ``DaskTaskRunner`` on a local cluster of
``workers`` processes with ``threads_per_worker`` clips each, or on the scheduler at
``dask_address``.

No wait on a worker is unbounded (:func:`as_completed`): a run waits as long as its workers show
a sign of life (a task finishes, or a running clip's attempt mark is touched, every
:data:`pipeline.core.attempts.BEAT_S` seconds), and fails with :class:`WorkersSilent` after
``[runner] worker_silence_s`` seconds without one (a worker frozen, or none left to take the
clips: a Dask nanny that could not restart its worker). A run stopped by a signal abandons its
runner at once (:func:`abandon`): no clip in flight is waited for.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from pipeline.core.attempts import BEAT_S, MAX_DEATHS, AttemptLedger, release_marks_on_sigterm
from pipeline.core.config import register_sections
from pipeline.core.errors import InputError

RUNNERS = ("thread", "process", "dask")
SCHEDULER_TIMEOUT_S = 10.0  # the Dask handshake's budget in check_scheduler
POLL_S = 1.0  # how often a wait on workers looks for a sign of life


@dataclass(frozen=True)
class RunnerConfig:
    """Configuration section ``[runner]``: how long a run waits on silent workers."""

    # seconds without a sign of life from the workers (a task finished, a running clip's mark
    # touched) after which the run fails instead of waiting for ever; well above a worker's
    # start-up and model loading on a loaded machine (tens of seconds), and above one clip's
    # pixel rules or probe, which touch no mark
    worker_silence_s: float = 600.0

    def __post_init__(self):
        if not self.worker_silence_s >= 3 * BEAT_S:
            raise ValueError(
                f"[runner] worker_silence_s must be at least {3 * BEAT_S:.0f} (three heartbeats of a running "
                f"clip, every {BEAT_S:.0f} s), got {self.worker_silence_s}"
            )


def register_config() -> None:
    """Name the ``[runner]`` section to the configuration check (a call, as the models do)."""
    register_sections({"runner": RunnerConfig})


register_config()


class WorkersSilent(RuntimeError):
    """No worker showed a sign of life for ``[runner] worker_silence_s`` seconds; the message says
    how many tasks were left."""


def make_task_runner(
    runner: str = "thread",
    *,
    dask_address: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    worker_env: Mapping[str, str] | None = None,
):
    """The Prefect task runner named by ``runner`` (see the module docstring).

    ``worker_env``: environment of the worker processes this runner starts (a process pool's, a
    local Dask cluster's).
    """
    if runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers or 2)
    if runner == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(
            max_workers=workers or 2, initializer=start_pool_worker, initargs=(dict(worker_env or {}),)
        )
    if runner == "dask":
        import dask
        from prefect_dask import DaskTaskRunner

        # Dask counts a worker's death against every task it held, queued ones too: only a
        # backstop here, above the ledger's limit (pipeline.core.attempts); and a worker holds no
        # more clips than it has threads, so few wait in a queue that a death empties
        dask.config.set(
            {
                "distributed.scheduler.allowed-failures": MAX_DEATHS + 1,
                "distributed.scheduler.worker-saturation": 1.0,
            }
        )
        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers or 2,
                "processes": True,
                "threads_per_worker": threads_per_worker,
                "dashboard_address": None,
                "env": dict(worker_env or {}),
            }
        )
    raise ValueError(f"unknown runner {runner!r}; choose one of {RUNNERS}")


DEFAULT_WORKERS = 2  # clips in flight (thread or process pool) or local Dask workers, on the CPU


@dataclass(frozen=True)
class Layout:
    """How many clips a run holds in flight, where: what :func:`resolve_layout` decided."""

    workers: int  # thread-pool size, process-pool size, or local Dask worker processes
    threads_per_worker: int  # clips in flight per local Dask worker process
    per_process: int | None  # clips in flight in each process that runs networks (None: a remote cluster's)
    warning: str | None = None  # said once when a CUDA build would step one clip per forward


def resolve_layout(
    runner: str,
    workers: int | None,
    threads_per_worker: int | None,
    *,
    device: str,
    max_batch: int,
    remote: bool = False,
) -> Layout:
    """The run's layout from the options the user gave (None: left to the default) and the
    placement's ``device``.

    On the CPU the defaults are :data:`DEFAULT_WORKERS` clips (or local Dask worker processes of
    one clip each). On CUDA the networks batch frames of the clips in flight in a process
    (``pipeline.core.batching``), so the defaults hold ``max_batch`` (``[pose] max_batch``) clips in
    flight per process: a thread pool of ``max_batch`` workers, or one local Dask worker process
    (one GPU, one copy of the models) with ``max_batch`` threads. What the user gave is kept; a
    CUDA layout left with one clip per process (a process pool, ``--workers 1``,
    ``--threads-per-worker 1``) gets a ``warning``. A remote Dask cluster sets its own threads.
    """
    cuda = device.startswith("cuda")
    if runner == "dask":
        n = workers or (1 if cuda else DEFAULT_WORKERS)
        threads = threads_per_worker or (max_batch if cuda else 1)
        per_process = None if remote else threads
    elif runner == "thread":
        n = workers or (max_batch if cuda else DEFAULT_WORKERS)
        threads, per_process = threads_per_worker or 1, n
    else:  # a process pool: each worker process holds one clip
        n, threads, per_process = workers or DEFAULT_WORKERS, threads_per_worker or 1, 1
    warning = None
    if cuda and per_process == 1 and max_batch > 1:
        fix = {
            "thread": "raise --workers",
            "dask": "raise --threads-per-worker",
        }.get(runner, "use --runner thread or --runner dask")
        warning = (
            f"{runner} runner on {device} holds one clip per process: every forward steps one clip's frame "
            f"([pose] max_batch = {max_batch} is never filled); {fix} to batch the clips in flight"
        )
    return Layout(n, threads, per_process, warning)


class SchedulerUnreachable(InputError):
    """No Dask scheduler answers at the address a run was given; the message says what was tried."""


def check_scheduler(address: str, label: str = "dask_address", timeout_s: float = SCHEDULER_TIMEOUT_S) -> None:
    """Return once a Dask scheduler has answered at ``address``; else :class:`SchedulerUnreachable`.

    Asked before a run does any work: without it a wrong address costs the client's 30 s connect
    timeout and ends in an ``OSError`` from inside the task runner. Two tries, and the error names
    the one that failed: a TCP connection to the host and port (refused or unanswered: nothing
    listens there), then Dask's own handshake and an ``identity`` request, within ``timeout_s``
    in all, which tells a scheduler from any other server on that port (a ``Client`` would wait
    for ever on a server that accepts and says nothing). ``label`` names the option or parameter.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    hint = f"start one with `dask scheduler`, or leave {label} out for a local cluster"
    try:
        scheme, location = parse_address(address, strict=False)
        host, port = parse_host_port(location) if scheme in ("tcp", "tls") else (None, None)
    except ValueError as err:
        raise SchedulerUnreachable(f"{label} {address}: not a Dask address ({err}); e.g. tcp://host:8786") from None
    if host is not None:
        _tcp_probe(address, label, host, port, min(timeout_s, 5.0), hint)
    try:
        kind = _identity(address, timeout_s).get("type")
    except (OSError, TimeoutError, ValueError) as err:
        why = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise SchedulerUnreachable(
            f"{label} {address}: no Dask scheduler answered within {timeout_s:.0f} s ({why}); {hint}"
        ) from None
    if kind != "Scheduler":
        raise SchedulerUnreachable(f"{label} {address}: a Dask {kind or 'server'} answered, not a scheduler; {hint}")


def _identity(address: str, timeout_s: float) -> dict:
    """The ``identity`` reply of the Dask server at ``address``, all within ``timeout_s``.

    Run on a thread of its own, so that it never meets an event loop running in the caller's.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect

    async def ask() -> dict:
        comm = await connect(address, timeout=timeout_s)
        try:
            await comm.write({"op": "identity", "reply": True})
            reply = await comm.read()
        finally:
            comm.abort()
        return reply if isinstance(reply, dict) else {}

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(ask(), timeout_s)).result()


def _tcp_probe(address: str, label: str, host: str, port: int, timeout_s: float, hint: str) -> None:
    """A plain TCP connection to ``host:port``; refused or unanswered is :class:`SchedulerUnreachable`."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except TimeoutError:
        tried = f"a TCP connection to {host} port {port} got no answer within {timeout_s:.0f} s"
    except OSError as err:
        tried = f"a TCP connection to {host} port {port} failed: {err.strerror or err}"
    raise SchedulerUnreachable(f"{label} {address}: no Dask scheduler there: {tried}; {hint}")


def start_pool_worker(env: Mapping[str, str]) -> None:
    """Set up a process pool's worker when it starts: its environment (the flow's API, so that it
    starts no temporary Prefect server of its own), and its attempt marks cleared when the pool
    stops it (SIGTERM, sent to every worker when one dies), so that only the clip a worker died
    on is blamed (:mod:`pipeline.core.attempts`)."""
    os.environ.update(env)
    release_marks_on_sigterm()


def flow_api_env() -> dict[str, str]:
    """``PREFECT_API_URL`` of the running flow's API, for worker processes this flow starts.

    Without it, each local Dask worker or process-pool worker would start a temporary Prefect
    server of its own (seconds of start-up for every worker), record its task runs there, and
    leave that server running when the cluster closes.
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {"PREFECT_API_URL": str(client.api_url).rstrip("/")}


def worker_silence_s(config: Mapping) -> float:
    """``[runner] worker_silence_s`` of a run's configuration."""
    from pipeline.core.config import stage_config

    return stage_config(RunnerConfig, dict(config), "runner").worker_silence_s


def open_clip_runner(runner: str, workers: int | None, threads_per_worker: int, dask_address: str | None):
    """The task runner of the per-clip tasks, chosen by the flow's parameters."""
    env = flow_api_env() if runner == "process" or runner == "dask" and not dask_address else None
    return make_task_runner(
        runner, dask_address=dask_address, workers=workers, threads_per_worker=threads_per_worker, worker_env=env
    )


def clips_in_flight(runner) -> int | None:
    """Clips processed at once on this machine's cores by ``runner`` (None: a remote cluster)."""
    name = type(runner).__name__
    if name == "DaskTaskRunner":
        kwargs = getattr(runner, "cluster_kwargs", None) or {}
        if kwargs.get("n_workers"):
            # local cluster: its workers share this machine's cores
            return kwargs["n_workers"] * kwargs.get("threads_per_worker", 1)
        return None  # a remote cluster: its workers set their own threads
    return getattr(runner, "_max_workers", None) or 1


def is_worker_death(err: BaseException) -> bool:
    return type(err).__name__ in ("KilledWorker", "BrokenProcessPool")


def as_completed(futures: Mapping, desc: str, *, unit: str, silence_s: float, ledger: AttemptLedger | None = None):
    """``(future, value)`` of ``futures`` as they finish, with a progress bar (terminals only).

    Raises :class:`WorkersSilent` when ``silence_s`` seconds pass without a sign of life: no
    future finished and no attempt mark of ``ledger`` touched (see the module docstring).
    """
    from pipeline.core.progress import progress

    finished: queue.SimpleQueue = queue.SimpleQueue()
    for future in futures:
        future.add_done_callback(finished.put)
    pending = set(futures)
    life = time.time()
    with progress(len(futures), desc, unit=unit) as bar:
        while pending:
            try:
                future = finished.get(timeout=POLL_S)
            except queue.Empty:
                beat = ledger.last_beat() if ledger is not None else None
                life = max(life, beat or life)
                if time.time() - life > silence_s:
                    raise WorkersSilent(
                        f"{desc}: no worker showed a sign of life for {silence_s:.0f} s "
                        f"([runner] worker_silence_s) with {len(pending)} of {len(futures)} {unit}(s) unfinished; "
                        "a worker hung, or none is left to take them"
                    ) from None
                continue
            if future not in pending:
                continue  # a callback that fired twice
            pending.discard(future)
            life = time.time()
            yield future, futures[future]
            bar.update()


def survivors(futures: Mapping, desc: str, silence_s: float):
    """``(value, result)`` of each future of ``futures`` whose worker did not die, as they finish;
    any other failure is raised."""
    for future, value in as_completed(futures, desc, unit="clip", silence_s=silence_s):
        try:
            result = future.result()
        except Exception as err:  # noqa: BLE001 - only a dead worker is tolerated
            if not is_worker_death(err):
                raise
            continue
        yield value, result


@contextmanager
def opened(runner):
    """``with opened(runner):`` runs the body with ``runner`` started; the runner is closed as
    usual when the body ends, and abandoned (:func:`abandon`) when a signal stopped it or its
    workers went silent."""
    with runner:
        try:
            yield runner
        except BaseException as err:
            if not isinstance(err, Exception) or WorkersSilent in (type(err), type(err.__cause__)):
                abandon(runner)  # stopped (KeyboardInterrupt, Prefect's TerminationSignal), or hung
            raise


def abandon(runner) -> None:
    """Stop ``runner`` without waiting for its clips in flight: queued tasks are cancelled, a
    thread pool's running ones are left to die with this process, and the worker processes of
    this process (a process pool's, a local Dask cluster's) are stopped. Prefect's own exit of
    the runner then has nothing left to wait for."""
    from pipeline.core.stopping import descendants, stop_processes

    for event in list(getattr(runner, "_cancel_events", {}).values()):
        try:
            event.set()
        except (OSError, ValueError):
            pass  # a process pool's event, already closed
    executor = getattr(runner, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
        runner._executor = None  # Prefect's exit would wait for it
    if type(runner).__name__ == "DaskTaskRunner":
        _abandon_dask(runner)
    stop_processes(descendants(), grace_s=2.0)


def _abandon_dask(runner) -> None:
    """Close a Dask runner's local cluster (its nannies stop their workers, and restart none),
    within a few seconds; its remaining processes are stopped by the caller."""
    import logging

    runner._exit_stack.pop_all()  # Prefect's exit would close them again, with no time limit
    for closing in (getattr(runner, "_client", None), getattr(runner, "_cluster", None)):
        if closing is None:
            continue
        try:
            closing.close(timeout=3)
        except Exception as err:  # noqa: BLE001 - the processes are stopped next whatever happened here
            logging.getLogger("flows").debug("closing %s: %s", type(closing).__name__, err)
