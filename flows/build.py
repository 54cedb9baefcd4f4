"""The ``build`` flow: raw clips to a packaged, verified release, mapped over clips.

ingest -> pixel rules mapped over the clips that passed the cheap rules -> screen (assemble) ->
score -> one extraction task per kept clip (every requested modality from one decode pass) ->
(optional) training -> release. Every stage is incremental: the pixel rules of a clip are reused
while its bytes, the ``[visual]`` settings and their code are unchanged (the cheap rules run
again every time), and a modality is skipped for a clip whose shard has the same identity
(clip content hash, extractor code version, weights sha256, parameters, precision).

Work layout (``README.md`` "Scale-out"): the flow's ``runner`` parameter decides where the
per-clip tasks run, so a deployment chooses it per run like any other parameter. ``thread``
(default) runs ``workers`` clips at once in this process, sharing one copy of each model;
``process`` a process pool; ``dask`` prefect-dask's ``DaskTaskRunner`` on a local cluster of
``workers`` processes with ``threads_per_worker`` clips each, or on the scheduler at
``dask_address``. Torch's threads are split so that the clips in flight in one process do not
oversubscribe its cores. The stage tasks between the maps (ingest, screen, score, release) run
in the flow's own process.

The flow holds the work directory's lock (:mod:`pipeline.lock`) for its whole run, whether it
was started by ``vdv`` or by a deployment; the sweep of temporary files left by a killed run
happens once, under the lock.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from flows import artifacts, tasks
from pipeline import extraction
from pipeline.attempts import MAX_DEATHS, AttemptLedger, release_marks_on_sigterm
from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.lock import WorkLock

RUNNERS = ("thread", "process", "dask")
SCHEDULER_TIMEOUT_S = 10.0  # the Dask handshake's budget in check_scheduler


class BuildError(RuntimeError):
    """A build stage failed as a whole (not one clip); ``report`` holds what it did before."""

    def __init__(self, message: str, report: Mapping | None = None):
        super().__init__(message)
        self.report = dict(report or {})


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
    on is blamed (:mod:`pipeline.attempts`)."""
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


def check_workers(runner, plan: extraction.ExtractionPlan) -> list[str]:
    """Build the plan's extractors on every worker before clips are mapped to them.

    On Dask each worker is checked (``client.run``); otherwise this process is, which covers a
    thread pool and the code, weights and device of a process pool. A failure (missing or corrupt
    weights, an import, version or device error) raises :class:`BuildError` with one message.
    """
    try:
        if type(runner).__name__ == "DaskTaskRunner":
            return sorted(runner.client.run(tasks.check_worker, plan).values())
        return [tasks.check_worker(plan)]
    except Exception as err:  # noqa: BLE001 - the run's own failure, reported in one line
        raise BuildError(
            f"extractors cannot start ({', '.join(plan.modalities)}): {type(err).__name__}: {err}"
        ) from err


def _is_worker_death(err: BaseException) -> bool:
    return type(err).__name__ in ("KilledWorker", "BrokenProcessPool")


def extraction_plan(
    runner,
    config: Mapping[str, Any],
    modalities: Sequence[str],
    *,
    untrained: bool,
    device: str | None,
    precision: str | None = None,
) -> extraction.ExtractionPlan:
    """The plan of the per-clip tasks: device and precision resolved once, torch threads per clip."""
    from pipeline.runtime import place, threads_per_task

    section = extraction.extract_config(config)
    try:
        device, precision = place(device, precision or section.precision)
    except ValueError as err:
        raise BuildError(str(err)) from err
    in_flight = clips_in_flight(runner)
    return extraction.ExtractionPlan.make(
        modalities,
        config,
        untrained=untrained,
        device=device,
        precision=precision,
        # [extract] threads pins torch's threads per clip in flight; else the cores are shared out
        threads=section.threads or (threads_per_task(in_flight) if in_flight else None),
    )


def run_extraction(
    runner,
    work: str,
    clips: list[dict],
    config: Mapping[str, Any],
    modalities: Sequence[str],
    *,
    untrained: bool,
    device: str | None,
    precision: str | None = None,
    force: bool = False,
) -> dict:
    """Map one extraction task per clip and collect every clip x modality item.

    Returns ``{"precision", "workers", "items", "extract" (per-modality totals)}``. Raises
    :class:`BuildError` when the extractors cannot start or a task fails for a reason that is
    not the clip's.
    """
    plan = extraction_plan(runner, config, modalities, untrained=untrained, device=device, precision=precision)
    workers = check_workers(runner, plan) if clips else []
    decode = dict(config.get("decode", {}))
    extraction.decode_config(config)  # a bad [decode] section fails here, not in every task
    # longest clips first: the last clips to start are short, so no worker is left with a long
    # one while the others are idle (the longest-processing-time-first rule)
    ledger = AttemptLedger.fresh(work)  # which clips a dead worker was on (pipeline.attempts)
    args = {"work": work, "plan": plan, "decode": decode, "force": force, "attempts": str(ledger.root)}
    ordered = sorted(clips, key=lambda c: (-(c.get("duration_s") or 0.0), c["clip_id"]))
    try:
        items, failures = _extract_rounds(runner, args, ordered, plan, ledger)
    finally:
        ledger.clear()
    order = {c["clip_id"]: i for i, c in enumerate(clips)}
    items.sort(key=lambda it: (order[it.clip_id], extraction.MODALITIES.index(it.modality)))
    extraction.record_rejections(work, items)
    result = {
        "precision": plan.precision,
        "device": plan.device,
        "pose_backend": plan.pose_backend,
        "workers": workers,
        "items": [it.as_dict() for it in items],
        "extract": {
            m: extraction.totals(items).get(m, dict(computed=0, skipped=0, failed=0, seconds=0.0))
            for m in plan.modalities
        },
    }
    if failures:
        raise BuildError(f"extraction failed on {len(failures)} clip(s), first: {failures[0]}", result)
    return result


def _extract_rounds(
    runner, args: Mapping, clips: list[dict], plan: extraction.ExtractionPlan, ledger: AttemptLedger
) -> tuple[list[extraction.ItemResult], list[str]]:
    """One extraction task per clip on ``runner``; the clips a broken process pool lost go to a
    fresh pool of the same size, until none is lost. Returns the items and the run's failures.

    A process pool whose worker dies is broken: every clip it held, the one the dead worker was
    on and the ones that waited, fails with ``BrokenProcessPool``, and it takes no more work.
    The ledger knows the clip the worker died on (its mark outlived the process; the pool's
    other workers clear theirs, :func:`pipeline.attempts.release_marks_on_sigterm`). So every
    lost clip is simply submitted again: a clip that only waited runs as if nothing happened,
    the clip a worker died on gets its next worker, and after :data:`MAX_DEATHS` its own task
    rejects it ``worker_died``. A pool that breaks with no clip's mark left behind (a worker
    that dies outside any clip) is tried :data:`MAX_DEATHS` times, then the lost clips are the
    run's failures. Dask needs no rounds: its scheduler gives a dead worker's clips to others.
    """
    import logging
    from contextlib import ExitStack

    items: list[extraction.ItemResult] = []
    failures: list[str] = []
    pool, todo, unexplained = runner, clips, 0
    with ExitStack() as fresh:
        while todo:
            deaths = sum(len(ledger.dead(c["clip_id"])) for c in todo)
            futures = {pool.submit(tasks.extract_clip, {**args, "clip": clip}): clip for clip in todo}
            done, failed, todo = _collect_items(futures, plan)
            items += done
            failures += failed
            if not todo:
                break
            if sum(len(ledger.dead(c["clip_id"])) for c in todo) == deaths:
                unexplained += 1
                if unexplained >= MAX_DEATHS:
                    why = f"the process pool broke {unexplained} times with no clip's work in flight"
                    failures += [f"{c['clip_id'][:12]}: {why}" for c in todo]
                    break
            logging.getLogger("flows").warning(
                "a worker process died; the %d clip(s) its pool held go to a fresh pool", len(todo)
            )
            fresh.close()  # the previous fresh pool, if there was one
            pool = fresh.enter_context(runner.duplicate())
    return items, failures


def _collect_items(
    futures: Mapping, plan: extraction.ExtractionPlan
) -> tuple[list[extraction.ItemResult], list[str], list[dict]]:
    """The items of the extraction tasks as they finish, the failures that are the run's, and the
    clips a broken process pool lost (:func:`_extract_rounds` submits them again).

    A clip whose workers died on it is rejected ``worker_died`` by its own task (the ledger of
    :mod:`pipeline.attempts`). Should Dask give up on a clip first (``allowed-failures``, its
    backstop) it is rejected ``worker_died`` here, in every modality. Any other task failure is
    the run's.
    """
    items: list[extraction.ItemResult] = []
    failures: list[str] = []
    lost: list[dict] = []
    for future, clip in _as_completed(futures, "extract", unit="clip"):
        try:
            items.extend(extraction.ItemResult(**d) for d in future.result())
        except Exception as err:  # noqa: BLE001 - sorted below: a dead worker is the clip's, the rest the run's
            if type(err).__name__ == "BrokenProcessPool":
                lost.append(clip)  # the worker that died may have been on another clip
            elif _is_worker_death(err):
                message = f"the runner gave up on it after worker processes died ({type(err).__name__})"
                items.extend(extraction.worker_died(clip, plan.modalities, message))
            else:
                failures.append(f"{clip['clip_id'][:12]}: {type(err).__name__}: {err}")
    return items, failures, lost


def _as_completed(futures: Mapping, desc: str, *, unit: str):
    """``(future, value)`` of ``futures`` as they finish, with a progress bar (terminals only)."""
    from prefect.futures import as_completed

    from pipeline.progress import progress

    with progress(len(futures), desc, unit=unit) as bar:
        for future in as_completed(list(futures)):
            yield future, futures[future]
            bar.update()


def _survivors(futures: Mapping, desc: str):
    """``(value, result)`` of each future of ``futures`` whose worker did not die, as they finish;
    any other failure is raised."""
    for future, value in _as_completed(futures, desc, unit="clip"):
        try:
            result = future.result()
        except Exception as err:  # noqa: BLE001 - only a dead worker is tolerated
            if not _is_worker_death(err):
                raise
            continue
        yield value, result


def probe_clips(runner, raw_dir: str, config: Mapping[str, Any]) -> dict[str, dict]:
    """Each clip file hashed and probed by a task on ``runner``: ``{path: probe_file result}``.

    A file whose worker died is left out; ingest then probes it in this process.
    """
    from pipeline.probe import close_idle_workers

    futures = {
        runner.submit(tasks.probe_clip, {"path": path, "config": dict(config)}): path
        for path in tasks.clip_files(raw_dir, config)
    }
    try:
        return dict(_survivors(futures, "probe"))
    finally:
        close_idle_workers()  # the ones a thread pool used in this process


def run_rule_stages(
    runner,
    raw_dir: str,
    work: str,
    config: Mapping[str, Any],
    pairing: str | None,
    crawl_time: str | None,
    overrides: str | None,
) -> dict:
    """ingest, the pixel rules mapped over clips, screen, score; the report's entries."""
    t0 = time.monotonic()
    probed = probe_clips(runner, raw_dir, config)
    report = {"ingest": tasks.ingest(raw_dir, work, config, pairing, crawl_time, probed)}
    report["ingest"]["probed_by"] = sorted({found["worker"] for found in probed.values()})
    t1 = time.monotonic()
    todo = tasks.pixel_rule_clips(work, config)
    futures = {
        runner.submit(tasks.screen_clip, {"work": work, "clip": clip, "config": dict(config)}): clip for clip in todo
    }
    computed = reused = 0
    # a clip whose worker died is left to the screen task below, which computes what is missing
    for _clip, done in _survivors(futures, "pixel rules"):
        computed += done["computed"]
        reused += not done["computed"]
    report["screen"] = tasks.screen(work, config, overrides)
    report["screen"]["pixel_rules"] = {"computed": computed, "reused": reused}
    t2 = time.monotonic()
    report["score"] = tasks.score(work, config)
    report["stage_seconds"] = {"ingest": round(t1 - t0, 2), "screen": round(t2 - t1, 2)}
    return report


def write_report(work: str, name: str, report: Mapping) -> Path:
    tasks.write_state(work, name, report)
    return Path(work) / tasks.STATE_DIR / f"{name}.json"


def finish_run(work: str, name: str, kind: str, report: dict) -> None:
    """Write the run's JSON report, the HTML build report and the Prefect artifacts.

    The HTML report and the artifacts are for people; a failure there is logged and recorded,
    never allowed to fail a run whose tables are written.
    """
    import logging

    from pipeline.report import write_report as write_html

    log = logging.getLogger("flows")
    release = (report.get("release") or {}).get("path")
    # the HTML report shows the flow run that finished last, build or reextract: it reads both
    report.update(kind=kind, finished=datetime.now(UTC).isoformat(timespec="seconds"))
    write_report(work, name, report)  # the HTML report reads this run's counts from it
    try:
        # backgrounds come from the scenic extraction; the report decodes nothing itself here
        report["report"] = str(write_html(work, release, backgrounds_budget_s=0))
    except Exception as err:  # noqa: BLE001 - see the docstring
        log.exception("the build report could not be written")
        report["report_error"] = f"{type(err).__name__}: {err}"
    write_report(work, name, report)
    try:
        artifacts.publish_artifacts(report, kind)
    except Exception as err:  # noqa: BLE001 - see the docstring
        log.warning("Prefect artifacts not published: %s", err)


def _check_modalities(modalities: Sequence[str]) -> None:
    unknown = sorted(set(modalities) - set(extraction.MODALITIES))
    if unknown:
        raise BuildError(f"unknown modalities {unknown}; known: {list(extraction.MODALITIES)}")


def extract_stage(runner, report: dict, work: str, config, modalities, **kwargs) -> None:
    """Run the extraction into ``report`` (also on failure, so the report says what happened)."""
    t0 = time.monotonic()
    try:
        result = run_extraction(runner, work, tasks.kept_clips(work), config, modalities, **kwargs)
    except BuildError as err:
        report.update(err.report)
        report["failed"] = str(err)
        raise
    report.update(result)
    report.setdefault("stage_seconds", {})["extract"] = round(time.monotonic() - t0, 2)
    report["extract_totals"] = {
        k: sum(s[k] for s in report["extract"].values()) for k in ("computed", "skipped", "failed")
    }


@contextmanager
def open_run(
    kind: str,
    work: str,
    config_path: str | None,
    modalities: Sequence[str],
    runner: str,
    workers: int | None,
    threads_per_worker: int,
    dask_address: str | None,
    device: str | None = None,
) -> Iterator[tuple[Any, dict[str, Any], dict[str, Any]]]:
    """The frame of a ``kind`` run (build, reextract): ``(clip runner, configuration, report)``.

    Before any work: the configuration, the modalities, the device and the Dask scheduler are
    checked, each error naming the parameter. The body runs under the work directory's lock with
    the per-clip task runner open and fills the report; the run is finished (:func:`finish_run`)
    when the body returns, with its wall time, and when a stage fails with a :class:`BuildError`,
    so the report says what happened.
    """
    from pipeline.runtime import check_device
    from pipeline.workdir import prepare

    started = time.monotonic()
    artifacts.bridge_loggers()
    config = load_config(config_path)
    _check_modalities(modalities)
    if device:
        check_device(device, "device")
    if runner == "dask" and dask_address:
        check_scheduler(dask_address)
    prepare(work, label="work")  # made if missing, and writable: else one error naming it
    clip_runner = open_clip_runner(runner, workers, threads_per_worker, dask_address)
    report: dict[str, Any] = {}
    with WorkLock(work, kind), clip_runner:
        try:
            yield clip_runner, config, report
        except BuildError:
            finish_run(work, f"{kind}_report", kind, report)
            raise
        report["seconds"] = round(time.monotonic() - started, 1)
        finish_run(work, f"{kind}_report", kind, report)


@flow(name="build")
def build(
    raw_dir: str,
    work: str = "work",
    config_path: str | None = None,
    pairing: str | None = None,
    overrides: str | None = None,
    crawl_time: str | None = None,
    modalities: list[str] = list(extraction.MODALITIES),  # noqa: B006 - Prefect parameters need a JSON default
    untrained: bool = False,
    device: str | None = None,
    precision: str | None = None,
    train: bool = False,
    train_dir: str | None = None,
    release_out: str | None = None,
    allow_untrained: bool = False,
    salt: str | None = None,
    runner: str = "thread",
    workers: int | None = None,
    threads_per_worker: int = 1,
    dask_address: str | None = None,
) -> dict:
    """Build the dataset in ``work`` from ``raw_dir`` (``RAW_DIR/clips`` and ``RAW_DIR/metadata``).

    Parameters
    ----------
    raw_dir: raw layout of ``pipeline.ingest``; work: the run's table directory;
    config_path: TOML with one section per stage; pairing: CSV pairing clip files with records
    (and challenges); overrides: reviewer override CSV for screening; crawl_time: crawl time of
    records that lack one; modalities: extractors to run; untrained: let extractors use seeded
    random weights when theirs are missing (recorded in every row); device: cpu | cuda;
    precision: auto | bfloat16 | float32 (else ``[extract] precision``, else auto);
    train: run the training stage (``models.train.train_track`` on the all-challenge track);
    release_out: package a release there (skipped when None); allow_untrained: let untrained
    features into the release (marked loudly); salt: uploader hash salt (else ``$VDV_RELEASE_SALT``);
    runner, workers, threads_per_worker, dask_address: where the per-clip tasks run (module docstring).
    """
    frame = open_run(
        "build", work, config_path, modalities, runner, workers, threads_per_worker, dask_address, device=device
    )
    with frame as (clip_runner, config, report):
        swept = extraction.sweep_partial_files(work)
        report.update({"raw_dir": raw_dir, "work": work, "pid": os.getpid(), "partial_removed": swept})
        report["runner"] = {"name": runner, "workers": workers, "dask_address": dask_address}
        report.update(run_rule_stages(clip_runner, raw_dir, work, config, pairing, crawl_time, overrides))
        extract_stage(
            clip_runner, report, work, config, modalities, untrained=untrained, device=device, precision=precision
        )
        if train:
            report["train"] = tasks.train(work, train_dir or str(Path(work) / "train"), config)
        if release_out:
            report["release"] = release_stage(report, work, release_out, config, allow_untrained, salt)
    return report


def release_stage(report: Mapping, work: str, out: str, config, allow_untrained: bool, salt: str | None) -> dict:
    """The build's release; a release that refuses (nothing kept, stale shards, untrained
    features not allowed) fails the build as a stage, with its one-line reason."""
    from pipeline.release import ReleaseError

    info = {k: report[k] for k in ("ingest", "screen", "score", "extract", "precision", "device")}
    try:
        return tasks.package(work, out, config, allow_untrained, salt, json.loads(json.dumps(info, default=str)))
    except ReleaseError as err:
        raise BuildError(f"release refused: {err}") from err
