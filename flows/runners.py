"""Where a build's per-clip tasks run: the task runners, the clips in flight, results as they finish.

The flow's ``runner`` parameter names the runner (``flows/build.py`` docstring): ``thread``
(default) runs ``workers`` clips at once in this process, sharing one copy of each model;
``process`` a process pool; ``dask`` prefect-dask's ``DaskTaskRunner`` on a local cluster of
``workers`` processes with ``threads_per_worker`` clips each, or on the scheduler at
``dask_address``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.attempts import MAX_DEATHS

RUNNERS = ("thread", "process", "dask")


def make_task_runner(
    runner: str = "thread",
    *,
    dask_address: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    worker_env: Mapping[str, str] | None = None,
):
    """The Prefect task runner named by ``runner`` (see the module docstring).

    ``worker_env``: environment of a local Dask cluster's worker processes.
    """
    if runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers or 2)
    if runner == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=workers or 2)
    if runner == "dask":
        import dask
        from prefect_dask import DaskTaskRunner

        # Dask counts a worker's death against every task it held, queued ones too: only a
        # backstop here, above the ledger's limit (pipeline.attempts); and a worker holds no
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


def flow_api_env() -> dict[str, str]:
    """``PREFECT_API_URL`` of the running flow's API, for worker processes this flow starts.

    Without it, each local Dask worker would start a temporary Prefect server of its own, record
    its task runs there, and leave that server running when the cluster closes.
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {"PREFECT_API_URL": str(client.api_url).rstrip("/")}


def open_clip_runner(runner: str, workers: int | None, threads_per_worker: int, dask_address: str | None):
    """The task runner of the per-clip tasks, chosen by the flow's parameters."""
    env = flow_api_env() if runner == "dask" and not dask_address else None
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


def as_completed(futures: Mapping, desc: str, *, unit: str):
    """``(future, value)`` of ``futures`` as they finish, with a progress bar (terminals only)."""
    from prefect.futures import as_completed as finished

    from pipeline.progress import progress

    with progress(len(futures), desc, unit=unit) as bar:
        for future in finished(list(futures)):
            yield future, futures[future]
            bar.update()


def survivors(futures: Mapping, desc: str):
    """``(value, result)`` of each future of ``futures`` whose worker did not die, as they finish;
    any other failure is raised."""
    for future, value in as_completed(futures, desc, unit="clip"):
        try:
            result = future.result()
        except Exception as err:  # noqa: BLE001 - only a dead worker is tolerated
            if not is_worker_death(err):
                raise
            continue
        yield value, result
