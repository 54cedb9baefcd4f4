"""The ``build`` flow: raw clips to a packaged, verified release, mapped over clips.

ingest -> pixel rules mapped over the clips that passed the cheap rules -> screen (assemble) ->
score -> one extraction task per kept clip (every requested modality from one decode pass) ->
(optional) training -> release. Every stage is incremental: the pixel rules of a clip are reused
while its bytes, the ``[visual]`` settings and their code are unchanged (the cheap rules run
again every time), and a modality is skipped for a clip whose shard has the same identity
(clip content hash, extractor code version, weights sha256, parameters, precision).

Work layout (``docs/SCALE_OUT.md``): the flow's ``runner`` parameter decides where the
per-clip tasks run, so a deployment chooses it per run like any other parameter. ``thread``
(default) runs ``workers`` clips at once in this process, sharing one copy of each model;
``process`` a process pool; ``dask`` prefect-dask's ``DaskTaskRunner`` on a local cluster of
``workers`` processes with ``threads_per_worker`` clips each, or on the scheduler at
``dask_address``. Torch's threads are split so that the clips in flight in one process do not
oversubscribe its cores. On CUDA the defaults hold ``[pose] max_batch`` clips in flight per
process so that batches fill (:func:`flows.runners.resolve_layout`). The stage tasks between the maps (ingest, screen, score, release) run
in the flow's own process.

The flow holds the work directory's lock (:mod:`pipeline.core.lock`) for its whole run, whether it
was started by ``vdv`` or by a deployment; the sweep of temporary files left by a killed run
happens once, under the lock.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from flows import artifacts, tasks
from flows.runners import (
    Layout,
    WorkersSilent,
    as_completed,
    check_scheduler,
    clips_in_flight,
    is_worker_death,
    open_clip_runner,
    opened,
    resolve_layout,
    survivors,
    worker_silence_s,
)
from pipeline import stages
from pipeline.core.attempts import MAX_DEATHS, AttemptLedger
from pipeline.core.batching import close_servers
from pipeline.core.config import ConfigError
from pipeline.core.decode import decoded_per_clip
from pipeline.core.errors import disk_full
from pipeline.core.lock import WorkLock
from pipeline.core.placement import Placement, checked_placement
from pipeline.extraction import stage as extraction
from pipeline.modalities import registry
from pipeline.sections import load_config


class BuildError(RuntimeError):
    """A build stage failed as a whole (not one clip); the run's report says what it did before."""


@dataclass
class BuildState:
    """What a build or reextract run did, carried from :func:`open_run` through the stages to
    :func:`finish_run`, which writes it as ``flow_state/<kind>_report.json`` (:meth:`report`)."""

    kind: str  # build | reextract
    work: str
    config: dict[str, Any]  # the run's checked configuration file
    runner: Any = field(repr=False)  # the per-clip tasks' runner
    placement: Placement = field(default_factory=Placement)  # resolved once (pipeline.core.placement), recorded in work
    started: float = field(default_factory=time.monotonic)
    inputs: dict[str, Any] = field(default_factory=dict)  # what it was asked: raw_dir, runner, modalities, pid...
    stages: dict[str, dict] = field(default_factory=dict)  # ingest, screen, score: each stage's summary
    stage_seconds: dict[str, float] = field(default_factory=dict)
    extraction: extraction.ExtractionRun | None = None
    plan: extraction.ExtractionPlan | None = None  # made before the pixel rules when they share the pass
    one_pass: dict[str, list[dict]] = field(default_factory=dict)  # clip_id -> items of its one pass
    decoded: dict[str, int] = field(default_factory=dict)  # clip_id -> frames this run decoded for it
    decoding: dict | None = None  # pipeline.core.decode.decoded_per_clip over the kept clips
    workers: list[str] = field(default_factory=list)  # the worker processes checked before mapping clips
    train: dict | None = None
    release: dict | None = None  # the release stage's record (pipeline.release.ReleaseRun.as_dict)
    failed: str | None = None  # the stage failure that ended the run
    seconds: float | None = None  # wall time, when the run got to its end
    finished: str | None = None  # when it ended (UTC): the HTML report shows the run that ended last
    html_report: str | None = None  # <work>/report/index.html
    html_error: str | None = None  # why it could not be written

    def build_info(self) -> dict:
        """What the release records of the run that made the work directory."""
        info = {k: v for k, v in self.stages.items() if k in ("ingest", "screen", "score")}
        if self.extraction is not None:
            plan = self.extraction.plan
            info.update(extract=self.extraction.totals(), precision=plan.precision, device=plan.device)
        return info

    def report(self) -> dict:
        """The run's JSON report: per-stage counts and seconds, per-modality totals, every item."""
        out: dict[str, Any] = {**self.inputs, **self.stages}
        if self.stage_seconds:
            out["stage_seconds"] = dict(self.stage_seconds)
        if self.extraction is not None:
            out.update(self.extraction.summary(), workers=list(self.workers))
            out["extract_totals"] = {
                k: sum(t[k] for t in out["extract"].values()) for k in ("computed", "skipped", "failed")
            }
        out["kind"] = self.kind
        optional = {
            "decoding": self.decoding,
            "finished": self.finished,
            "train": self.train,
            "release": self.release,
            "failed": self.failed,
            "seconds": self.seconds,
            "report": self.html_report,
            "report_error": self.html_error,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out


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


def extract_stage(
    state: BuildState,
    modalities: Sequence[str],
    *,
    untrained: bool,
    force: bool = False,
) -> None:
    """The extraction stage of the kept clips (:func:`pipeline.extraction.stage.run_extraction`), one
    task per clip on the run's runner, on the run's placement, into ``state``.

    Raises :class:`BuildError` when the extractors cannot start or a task fails for a reason that
    is not the clip's; the items of the other clips are recorded first.
    """
    t0 = time.monotonic()
    plan = state.plan or make_plan(state, modalities, untrained=untrained)
    clips = stages.kept_clips(state.work)
    state.workers = check_workers(state.runner, plan) if clips else []
    failures: list[str] = []
    state.extraction = extraction.run_extraction(
        state.work,
        clips,
        plan,
        decode=state.config.get("decode", {}),
        force=force,
        run_clips=_mapped_on(state.runner, plan, failures, state.one_pass, worker_silence_s(state.config)),
    )
    passes: dict[str, int] = {}  # the clip's one extraction pass, the same count on each of its items
    for it in state.extraction.items:
        if it.clip_id not in state.one_pass:  # a one-pass clip's frames are counted with its pixel rules
            passes[it.clip_id] = max(passes.get(it.clip_id, 0), it.decoded_frames)
    for clip_id, frames in passes.items():
        state.decoded[clip_id] = state.decoded.get(clip_id, 0) + frames
    state.decoding = {**decoded_per_clip(state.decoded, clips), "one_pass": state.plan is not None}
    state.stage_seconds["extract"] = round(time.monotonic() - t0, 2)
    if failures:
        raise BuildError(f"extraction failed on {len(failures)} clip(s), first: {failures[0]}")


def make_plan(state: BuildState, modalities: Sequence[str], *, untrained: bool) -> extraction.ExtractionPlan:
    """The run's extraction plan, on its placement; a configuration error fails the run as a stage."""
    try:
        return extraction.plan_extraction(
            modalities,
            state.config,
            untrained=untrained,
            in_flight=clips_in_flight(state.runner),
            placement=state.placement,
        )
    except ConfigError as err:
        raise BuildError(str(err)) from err


def _mapped_on(
    runner, plan: extraction.ExtractionPlan, failures: list[str], done: Mapping[str, list[dict]], silence_s: float
):
    """``run_clips`` of :func:`pipeline.extraction.stage.run_extraction`: one ``extract_clip`` task per
    clip on ``runner``, results as they finish; the clips a broken process pool lost go to a
    fresh pool of the same size, until none is lost.

    A process pool whose worker dies is broken: every clip it held, the one the dead worker was
    on and the ones that waited, fails with ``BrokenProcessPool``, and it takes no more work. The
    attempt ledger knows the clip the worker died on (its mark outlived the process; the pool's
    other workers clear theirs, :func:`pipeline.core.attempts.release_marks_on_sigterm`), so every lost
    clip is submitted again: a clip that only waited runs as if nothing happened, the clip a
    worker died on gets its next worker, and after :data:`MAX_DEATHS` its own task rejects it
    ``worker_died``. A pool that breaks with no clip's mark left behind (a worker dying outside
    any clip) is tried :data:`MAX_DEATHS` times, then its lost clips are the run's failures. Dask
    needs no rounds: its scheduler gives a dead worker's clips to others. Any other task failure
    is the run's: appended to ``failures``. Workers silent for ``silence_s`` seconds fail the
    run (:class:`~flows.runners.WorkersSilent`). A clip in ``done`` was extracted in its pixel
    rules' pass (:mod:`pipeline.extraction.onepass`): its items are those.
    """

    def run_clips(jobs: list[dict]):
        for job in jobs:
            if job["clip"]["clip_id"] in done:
                yield job["clip"], [extraction.ItemResult(**d) for d in done[job["clip"]["clip_id"]]]
        jobs = [j for j in jobs if j["clip"]["clip_id"] not in done]
        pool, todo, unexplained = runner, jobs, 0
        ledger = AttemptLedger(jobs[0]["attempts"]) if jobs else None
        with ExitStack() as fresh:
            while todo:
                deaths = sum(len(ledger.dead(j["clip"]["clip_id"])) for j in todo)
                lost: list[dict] = []
                yield from _finished_clips(pool, todo, plan, failures, lost, silence_s)
                todo = lost
                if not todo:
                    break
                if sum(len(ledger.dead(j["clip"]["clip_id"])) for j in todo) == deaths:
                    unexplained += 1
                    if unexplained >= MAX_DEATHS:
                        why = f"the process pool broke {unexplained} times with no clip's work in flight"
                        failures.extend(f"{j['clip']['clip_id'][:12]}: {why}" for j in todo)
                        break
                logging.getLogger("flows").warning(
                    "a worker process died; the %d clip(s) its pool held go to a fresh pool", len(todo)
                )
                fresh.close()  # the previous fresh pool, if there was one
                pool = fresh.enter_context(runner.duplicate())

    return run_clips


def _finished_clips(
    pool, jobs: list[dict], plan: extraction.ExtractionPlan, failures: list[str], lost: list[dict], silence_s: float
):
    """``(clip, items)`` of each job's task on ``pool`` as it finishes; a job a broken process pool
    lost goes to ``lost``. Should the runner give up on a clip (Dask's ``allowed-failures``, its
    backstop) it is rejected ``worker_died`` here, in every modality."""
    futures = {pool.submit(tasks.extract_clip, {"job": job}): job for job in jobs}
    ledger = AttemptLedger(jobs[0]["attempts"])
    for future, job in as_completed(futures, "extract", unit="clip", silence_s=silence_s, ledger=ledger):
        clip = job["clip"]
        try:
            items = [extraction.ItemResult(**d) for d in future.result()]
        except Exception as err:  # noqa: BLE001 - sorted here: a dead worker is the clip's, the rest the run's
            if (full := disk_full(err)) is not None:
                raise BuildError(str(full)) from err  # the machine's fault: the build stops, no clip is blamed
            if type(err).__name__ == "BrokenProcessPool":
                lost.append(job)  # the worker that died may have been on another clip
                continue
            if not is_worker_death(err):
                failures.append(f"{clip['clip_id'][:12]}: {type(err).__name__}: {err}")
                continue
            message = f"the runner gave up on it after worker processes died ({type(err).__name__})"
            items = extraction.worker_died(clip, plan.modalities, message)
        yield clip, items


def probe_clips(runner, raw_dir: str, config: Mapping[str, Any]) -> dict[str, dict]:
    """Each clip file hashed and probed by a task on ``runner``: ``{path: probe_file result}``.

    A file whose worker died is left out; ingest then probes it in this process.
    """
    from pipeline.ingest.probe import close_idle_workers

    futures = {
        runner.submit(tasks.probe_clip, {"path": path, "config": dict(config)}): path
        for path in tasks.clip_files(raw_dir, config)
    }
    try:
        return dict(survivors(futures, "probe", worker_silence_s(config)))
    finally:
        close_idle_workers()  # the ones a thread pool used in this process


def run_rule_stages(
    state: BuildState, raw_dir: str, pairing: str | None, crawl_time: str | None, overrides: str | None
) -> None:
    """ingest, the pixel rules mapped over clips, screen, score; their summaries into ``state``."""
    runner, work, config = state.runner, state.work, state.config
    t0 = time.monotonic()
    probed = probe_clips(runner, raw_dir, config)
    state.stages["ingest"] = tasks.ingest(raw_dir, work, config, pairing, crawl_time, probed, overrides)
    state.stages["ingest"]["probed_by"] = sorted({found["worker"] for found in probed.values()})
    t1 = time.monotonic()
    futures = _pixel_rule_tasks(state, stages.pixel_rule_clips(work, config))
    computed = reused = changed = 0
    # a clip whose worker died is left to the screen task below, which computes what is missing
    for _clip, done in survivors(futures, "pixel rules", worker_silence_s(config)):
        computed += done["computed"]
        changed += done.get("changed", 0)
        reused += not (done["computed"] or done.get("changed", 0))
        state.decoded[done["clip_id"]] = state.decoded.get(done["clip_id"], 0) + done.get("decoded_frames", 0)
        if done.get("items"):
            state.one_pass[done["clip_id"]] = done["items"]
    state.stages["screen"] = tasks.screen(work, config, overrides, state.placement)
    close_servers()  # the people counter's and the one-pass extraction's, in this process
    state.stages["screen"]["pixel_rules"] = {"computed": computed, "reused": reused, "changed": changed}
    t2 = time.monotonic()
    state.stages["score"] = tasks.score(work, config)
    state.stage_seconds.update(ingest=round(t1 - t0, 2), screen=round(t2 - t1, 2))


def _pixel_rule_tasks(state: BuildState, clips: list[dict]) -> dict:
    """One pixel-rule task per clip on the run's runner: the rules alone, or, with a plan made
    for it (:mod:`pipeline.extraction.onepass`), the rules and the extraction from one decode pass."""
    base = {"work": state.work, "config": dict(state.config)}
    if state.plan is None:
        return {
            state.runner.submit(tasks.screen_clip, {**base, "clip": clip, "placement": state.placement}): clip
            for clip in clips
        }
    state.workers = check_workers(state.runner, state.plan) if clips else []
    return {
        state.runner.submit(tasks.screen_extract_clip, {**base, "clip": clip, "plan": state.plan}): clip
        for clip in sorted(clips, key=lambda c: (-(c.get("duration_s") or 0.0), c["clip_id"]))
    }


def finish_run(state: BuildState) -> None:
    """Write the run's JSON report, the HTML build report and the Prefect artifacts.

    The HTML report and the artifacts are for people; a failure there is logged and recorded,
    never allowed to fail a run whose tables are written.
    """
    from pipeline.report import write_report as write_html

    log = logging.getLogger("flows")
    name = f"{state.kind}_report"
    state.finished = datetime.now(UTC).isoformat(timespec="seconds")
    tasks.write_state(state.work, name, state.report())  # the HTML report reads this run's counts from it
    try:
        # it reads the tables and what the stages left for it (thumbnails, scenic backgrounds)
        state.html_report = str(write_html(state.work, (state.release or {}).get("path")))
    except Exception as err:  # noqa: BLE001 - see the docstring
        if (full := disk_full(err)) is not None:
            log.error("the build report could not be written: %s", full)
        else:
            log.exception("the build report could not be written")
        state.html_error = f"{type(err).__name__}: {err}"
    report = state.report()
    tasks.write_state(state.work, name, report)
    try:
        artifacts.publish_artifacts(report, state.kind)
    except Exception as err:  # noqa: BLE001 - see the docstring
        log.warning("Prefect artifacts not published: %s", err)


def _check_modalities(modalities: Sequence[str]) -> None:
    try:
        registry.ordered(modalities)
    except ValueError as err:
        raise BuildError(str(err)) from None


@contextmanager
def open_run(
    kind: str,
    work: str,
    config_path: str | None,
    modalities: Sequence[str],
    runner: str,
    workers: int | None,
    threads_per_worker: int | None,
    dask_address: str | None,
    device: str | None = None,
    precision: str | None = None,
) -> Iterator[BuildState]:
    """The frame of a ``kind`` run (build, reextract): its :class:`BuildState`.

    Before any work: the configuration, the modalities, the device and the Dask scheduler are
    checked, each error naming the parameter, and the work directory is made if missing and
    proven writable. The run's placement is resolved once (:mod:`pipeline.core.placement`: a build from
    its flags and configuration, a reextract with the work directory's record filling in what they
    leave open) and recorded in the work directory under the lock. The body runs under the work directory's lock with the per-clip task runner
    open and fills the state; the run is finished (:func:`finish_run`) when the body returns,
    with its wall time, and when a stage fails with a :class:`BuildError`, so the report says
    what happened.
    """
    from pipeline.core.placement import write_placement
    from pipeline.core.runtime import check_device
    from pipeline.core.workdir import prepare

    artifacts.bridge_loggers()
    config = load_config(config_path)
    _check_modalities(modalities)
    if device:
        check_device(device, "device")
    # a build decides afresh; a reextract's work directory fills in what the flags leave open
    placement = checked_placement(
        work, config, device, precision, backends=registry.backend_settings(config), recorded=kind != "build"
    )
    if runner == "dask" and dask_address:
        check_scheduler(dask_address)
    prepare(work, label="work")  # made if missing, and writable: else one error naming it
    layout = _layout(runner, workers, threads_per_worker, dask_address, config, placement)
    clip_runner = open_clip_runner(runner, layout.workers, layout.threads_per_worker, dask_address)
    state = BuildState(kind, work, config, clip_runner, placement=placement)
    state.inputs["layout"] = dataclasses.asdict(layout)
    with WorkLock(work, kind), opened(clip_runner):
        write_placement(work, placement, kind)
        state.inputs["placement"] = placement.as_dict()
        try:
            try:
                yield state
            except OSError as err:
                if (full := disk_full(err)) is None:
                    raise
                raise BuildError(str(full)) from err  # a full disk stops the build: one line, no clip blamed
        except BuildError as err:
            state.failed = str(err)
            _finish_failed(state)
            raise
        except WorkersSilent as err:
            state.failed = str(err)
            finish_run(state)
            raise BuildError(str(err)) from err
        state.seconds = round(time.monotonic() - state.started, 1)
        try:
            finish_run(state)
        except OSError as err:
            if (full := disk_full(err)) is None:
                raise
            raise BuildError(str(full)) from err


def _finish_failed(state: BuildState) -> None:
    """:func:`finish_run` of a failed run; a full disk there adds nothing to the failure reported."""
    try:
        finish_run(state)
    except OSError as err:
        if disk_full(err) is None:
            raise
        logging.getLogger("flows").warning("the run's report could not be written: %s", disk_full(err))


def _layout(runner, workers, threads_per_worker, dask_address, config, placement: Placement) -> Layout:
    """The clips in flight (:func:`flows.runners.resolve_layout`): on CUDA, enough per process to
    fill ``[pose] max_batch`` unless the parameters say otherwise; a layout that would step one
    clip per forward on CUDA is said once."""
    from pipeline.modalities import pose

    max_batch = pose.MODALITY.section(config.get(pose.MODALITY.name)).max_batch
    layout = resolve_layout(
        runner, workers, threads_per_worker, device=placement.device, max_batch=max_batch, remote=bool(dask_address)
    )
    if layout.warning:
        logging.getLogger("flows").warning(layout.warning)
    return layout


@flow(name="build")
def build(
    raw_dir: str,
    work: str = "work",
    config_path: str | None = None,
    pairing: str | None = None,
    overrides: str | None = None,
    crawl_time: str | None = None,
    modalities: list[str] | None = None,
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
    threads_per_worker: int | None = None,
    dask_address: str | None = None,
) -> dict:
    """Build the dataset in ``work`` from ``raw_dir`` (``RAW_DIR/clips`` and ``RAW_DIR/metadata``).

    Parameters
    ----------
    raw_dir: raw layout of ``pipeline.ingest.stage``; work: the run's table directory;
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
    modalities = list(modalities or registry.names())
    frame = open_run(
        "build",
        work,
        config_path,
        modalities,
        runner,
        workers,
        threads_per_worker,
        dask_address,
        device=device,
        precision=precision,
    )
    with frame as state:
        state.inputs.update(raw_dir=raw_dir, work=work, pid=os.getpid())
        state.inputs["partial_removed"] = extraction.sweep_partial_files(work)
        state.inputs["runner"] = {"name": runner, "workers": workers, "dask_address": dask_address}
        from pipeline.extraction.onepass import one_pass_on

        if one_pass_on(state.config, state.placement):  # screen and extract in one decode pass
            state.plan = make_plan(state, modalities, untrained=untrained)
        run_rule_stages(state, raw_dir, pairing, crawl_time, overrides)
        extract_stage(state, modalities, untrained=untrained)
        if train:
            state.train = tasks.train(work, train_dir or str(Path(work) / "train"), state.config)
        if release_out:
            state.release = release_stage(state, release_out, allow_untrained, salt)
    return state.report()


def release_stage(state: BuildState, out: str, allow_untrained: bool, salt: str | None) -> dict:
    """The build's release; a release that refuses (nothing kept, stale shards, untrained
    features not allowed) fails the build as a stage, with its one-line reason."""
    from pipeline.release import ReleaseError

    plan = state.extraction.plan
    try:
        return tasks.package(
            state.work, out, state.config, allow_untrained, salt, state.build_info(), plan.precision, plan.device
        )
    except ReleaseError as err:
        raise BuildError(f"release refused: {err}") from err
