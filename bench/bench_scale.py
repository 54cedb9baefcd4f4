"""Every stage at VDV's size: wall and CPU seconds, peak memory and growth with the number of clips.

    python bench/bench_scale.py 1000 4292 [--demo out/demo/work] [--json out/bench_scale.jsonl]

For each size N (and ``--baseline``, 50 clips, the size the growth is measured from) it builds an N-clip work
directory from the demo build's real outputs through the project's own writers, decoding no
video: a raw layout of N small files with N metadata records (the demo's kept clips' records,
each with its own video id, counts and uploader) and their probe results, each clip's pixel-rule
shard with its contact-sheet thumbnails, its feature shards of every modality written by the
modality's own shard writer (:meth:`pipeline.modalities.features.FeatureExtractor.write`, the extractor
described as the run's configuration builds it) and its scenic background. Clip ``i`` copies
kept demo clip ``i mod 5``; its feature values are the template's scaled by ``1 + (i + 1) * 1e-6``
(every float's low bits differ, so compression and caches see no repetition, while zeros stay
zeros and the compression ratio stays the real one) and its content signature gets its own
frame hashes (no two synthetic clips are near-duplicates).

It then times, each in a child process of its own (its peak RSS is its own):
``ingest`` (``pipeline.stages.run_ingest`` with the probe results given, as the build flow
does), ``screen`` (pixel rules reused from their shards), ``score``, ``release``
(``package_release``), ``verify`` (``verify_release``), ``report``, ``datasets:<config>``
(``datasets.load_dataset`` of each config of the release with the options its card shows, into an
empty cache removed after;
warnings counted) and ``loader:release`` / ``loader:work`` (``--epochs`` epochs, one by
default, of ``vdv train``'s loader over every scored clip, all four streams, no model; clips
per CPU second of each epoch; its decoded cache, :mod:`models.decoded`, in
``<out>/n<N>/decoded-<release|work>``, emptied first unless ``--warm-cache``). It prints wall and CPU seconds and peak
RSS per stage and size, then each stage's growth exponent between the sizes given: the slope of
log(CPU seconds at N minus CPU seconds at 50) against log(N), so start-up does not flatten it.
``--json FILE`` writes the same as JSON lines. The directories are kept under ``--out`` (sizes:
docs/SCALE.md) unless ``--clean``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINE = 50
STAGES = ("ingest", "screen", "score", "release", "verify", "report", "datasets", "loader:release", "loader:work")


# -- building an N-clip work directory ------------------------------------------------------------


def _templates(demo: Path) -> list[dict]:
    """The demo's kept clips with everything a synthetic copy needs."""
    from pipeline.core import tables
    from pipeline.modalities import registry as modalities

    clips = {r["clip_id"]: r for r in tables.read_table(demo, tables.CLIPS).to_pylist()}
    kept = sorted(r["clip_id"] for r in tables.read_table(demo, tables.SCREENING).to_pylist() if r["kept"])
    pixel = {  # either layout: flat, or fanned out by clip id
        r["clip_id"]: r
        for path in sorted((demo / "pixel_rules").rglob("pixel_rules.*.parquet"))
        for r in tables.read_file(path, tables.PIXEL_RULES).to_pylist()
    }
    out = []
    for cid in kept:
        shards = {}
        for m in modalities.names():
            found = sorted((demo / "features" / m).glob(f"{m}.{cid[:16]}.*.parquet"))
            if found:
                shards[m] = found[-1]
        previews = [
            (r.preview.folder, png)
            for r in modalities.registered()
            if r.preview is not None
            for png in tables.preview_files(demo, r.preview.folder).get(cid[:16], [])
        ]
        out.append(
            {
                "clip": clips[cid],
                "pixel": pixel[cid],
                "shards": shards,
                "previews": previews,
                "demo_thumbs": tables.thumbnails_dir(demo),
            }
        )
    if not out:
        raise SystemExit(f"{demo} has no kept clip; build it first (make demo)")
    return out


def _record(template: dict, i: int, video_id: str, rng) -> dict:
    rec = json.loads(json.dumps(template))
    rec["id"] = video_id
    rec["createTime"] = int(rec["createTime"]) - 3600 * (i % 500) - i
    rec["diggCount"] = int(rng.lognormal(8, 2))
    rec["commentCount"] = int(rng.lognormal(4, 2))
    rec["shareCount"] = int(rng.lognormal(3, 2))
    rec["authorMeta"] = dict(rec["authorMeta"], id=f"bench-uploader-{i // 3}", name=f"bench{i // 3}")
    return rec


def _signature(text: str | None, rng) -> str | None:
    """The template's signature with frame hashes of its own (version and duration kept)."""
    if not text:
        return text
    version, millis, hashes = text.split(":", 2)
    count = len([h for h in hashes.split(",") if h])
    return f"{version}:{millis}:" + ",".join(f"{int(h):016x}" for h in rng.integers(0, 2**63, count))


def build_raw(templates: list[dict], demo_raw: Path, pairing: Path, n: int, target: Path) -> dict:
    """``target/raw`` (clips, metadata, pairing) and the probe results by path; returns clip id -> template."""
    import csv

    import numpy as np

    from pipeline.ingest.probe import ProbeResult

    paired = {row["file"]: row for row in csv.DictReader(pairing.open())}
    by_video = {row["video_id"]: row for row in paired.values()}
    records = {}
    for path in sorted((demo_raw / "metadata").glob("*.json")):
        records.update({str(r["id"]): r for r in json.loads(path.read_text())})
    raw = target / "raw"
    (raw / "clips").mkdir(parents=True)
    (raw / "metadata").mkdir()
    out_records, pairs, probes, of = [], [], {}, {}
    for i in range(n):
        rng = np.random.default_rng(i)  # clip i is the same clip at every size
        t = templates[i % len(templates)]
        clip = t["clip"]
        path = raw / "clips" / f"clip{i:06d}.mp4"
        path.write_bytes(f"vdv bench clip {i}\n".encode())
        cid = hashlib.sha256(path.read_bytes()).hexdigest()
        video_id = str(7_100_000_000_000_000_000 + i)
        out_records.append(_record(records[clip["video_id"]], i, video_id, rng))
        pairs.append((path.name, video_id, by_video[clip["video_id"]]["challenge"]))
        fields = {k: clip[k] for k in ProbeResult.__dataclass_fields__ if k != "content_signature"}
        probe = ProbeResult(**fields, content_signature=_signature(clip["content_signature"], rng))
        probes[str(path)] = {"path": str(path), "clip_id": cid, "probe": probe, "reason": None, "message": None}
        of[cid] = t
    (raw / "metadata" / "bench_records.json").write_text(json.dumps(out_records))
    with (target / "pairing.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("file", "video_id", "challenge"), *pairs])
    (target / "probes.pkl").write_bytes(pickle.dumps(probes))
    return of


def build_work(of: dict, config: dict, work: Path) -> None:
    """Each clip's pixel-rule shard, thumbnails, feature shards and scenic background under ``work``."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.core import tables
    from pipeline.core.checksums import write_shard
    from pipeline.modalities import registry as modalities
    from pipeline.modalities.features import FeatureSequence
    from pipeline.screening.stage import PixelRules

    pixels = PixelRules(config, work, thumbnails=True)
    thumbs = tables.thumbnails_dir(work)
    writers, sequences = {}, {}
    for i, (cid, t) in enumerate(of.items()):
        results = json.loads(t["pixel"]["results"])
        for result in results:
            sheet = (result.get("details") or {}).get("contact_sheet")
            for frame in (sheet or {}).get("frames", []):
                src = t["demo_thumbs"] / frame["file"]
                frame["file"] = tables.thumbnail_name(cid, Path(frame["file"]).name.split(".", 1)[1])
                (thumbs / frame["file"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, thumbs / frame["file"])
        row = dict(t["pixel"], clip_id=cid, identity=pixels.identity(cid), results=json.dumps(results))
        target = pixels.shard_path(cid)  # written and recorded in the ledger as screening writes it
        write_shard(work, target, tables.to_table([row], tables.PIXEL_RULES, where=str(target)))
        scale = np.float32(1 + (i + 1) * 1e-6)
        for m, shard in t["shards"].items():
            if (shard, m) not in sequences:
                table = pq.read_table(shard)
                prov = table.slice(0, 1).to_pylist()[0]
                if m not in writers:
                    section = modalities.resolved_sections([m], config, prov["device"])[m]
                    writers[m] = modalities.describe(
                        m, section, untrained=prov["untrained"], device=prov["device"], precision=prov["precision"]
                    )
                sequences[(shard, m)] = FeatureSequence(
                    timestamps=np.asarray(prov["timestamps"], np.float64),
                    valid=np.asarray(prov["valid"], bool),
                    features=table.column("features")[0].values.flatten().to_numpy().reshape(-1, writers[m].dim),
                    fps=prov["fps"],
                    source_fps=prov["source_fps"],
                    frame_width=prov["frame_width"],
                    frame_height=prov["frame_height"],
                )
            seq = sequences[(shard, m)]
            writers[m].write(work, cid, dataclasses.replace(seq, features=seq.features * scale))
        for folder, png in t["previews"]:
            target = tables.preview_path(work, folder, cid, int(png.name.split(".")[1][:-2]))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, target)


def synthesise(sizes: list[int], args) -> dict[int, Path]:
    """``<out>/n<N>/`` of every size: the raw layout and probes, and a work directory whose
    per-clip files are hard links to those of the largest size's clips (written once, in
    ``<out>/pool``), so that clip ``i`` is the same files at every size."""
    from pipeline.sections import load_config

    if args.reuse and all((args.out / f"n{n}" / "work").is_dir() for n in sizes):
        return {n: args.out / f"n{n}" for n in sizes}  # measured again as they are (--reuse)
    templates = _templates(args.demo)
    pool = args.out / "pool"
    shutil.rmtree(args.out, ignore_errors=True)
    pool.mkdir(parents=True)
    of = build_raw(templates, args.raw, args.pairing, max(sizes), pool)
    t0 = time.monotonic()
    build_work(of, load_config(args.config), pool / "work")
    print(f"# {max(sizes)} clips' files written in {time.monotonic() - t0:.0f} s under {pool}", flush=True)
    ids = list(of)
    targets = {}
    for n in sizes:
        target = args.out / f"n{n}"
        target.mkdir()
        build_raw(templates, args.raw, args.pairing, n, target)
        wanted = {cid[:16] for cid in ids[:n]}
        for path in (pool / "work").rglob("*"):
            if path.is_file() and _clip_key(path.name) in wanted:
                link = target / "work" / path.relative_to(pool / "work")
                link.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, link)
        _ledger(pool / "work", target / "work")
        targets[n] = target
    shutil.rmtree(pool / "raw", ignore_errors=True)
    return targets


def _ledger(pool: Path, work: Path) -> None:
    """``work``'s checksum ledger: the pool's records of the shards linked into it (the others
    dropped by :func:`pipeline.core.checksums.fold`, as a run drops the records of files that are gone)."""
    from pipeline.core import checksums, tables

    for path in tables.table_files(pool, checksums.TABLE):
        copy = work / path.relative_to(pool)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    checksums.fold(work)


def _clip_key(name: str) -> str:
    """The clip-id prefix a per-clip file is named by (``pose.<clip16>.<id12>.parquet``, ``<clip16>.f00.jpg``)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 3 and parts[-1] == "parquet" else parts[0]


# -- the stages, each run in a child process ------------------------------------------------------


def _stage(name: str, target: Path, config_path: Path) -> dict:
    """Run one stage on ``target`` (in this process); returns what it reports beside the timings."""
    from pipeline.sections import load_config

    config = load_config(config_path)
    work, release_out = target / "work", target / "release"
    if name == "ingest":
        from pipeline.stages import run_ingest

        probes = pickle.loads((target / "probes.pkl").read_bytes())
        result = run_ingest(target / "raw", work, config, pairing=target / "pairing.csv", probed=probes)
        return {"clips": len(result.clips), "rejected": len(result.rejections)}
    if name == "screen":
        from pipeline.stages import pixel_rules, run_screen

        pixels = pixel_rules(config, work)
        result = run_screen(work, config, pixels=pixels)
        return {"kept": len(result.kept), "pixel_rules_computed": pixels.computed}
    if name == "score":
        from pipeline.stages import run_score

        return {"scored": len(run_score(work, config).rows)}
    if name == "release":
        from pipeline.core.config import stage_config
        from pipeline.release import ReleaseConfig, package_release

        release = stage_config(ReleaseConfig, config, "release")
        summary = package_release(
            work, release_out, config=release, run_config=config, allow_untrained=True, salt="bench", device="cpu"
        )
        return {"rows": summary.counts, "files": summary.files}
    release_dir = next(release_out.glob("*/manifest.json")).parent if release_out.is_dir() else None
    if name == "verify":
        from pipeline.release import verify_release

        result = verify_release(release_dir)
        return {"ok": result.ok, "problems": result.problems[:5]}
    if name == "report":
        from pipeline.report import write_report

        write_report(work, release_dir)
        return {}
    if name.startswith("datasets:"):
        return _load_dataset(release_dir, name.split(":", 1)[1], target / "hf-cache")
    if name.startswith("loader:"):
        return _epoch(release_dir if name == "loader:release" else work, int(os.environ.get("BENCH_EPOCHS", "1")))
    raise ValueError(f"unknown stage {name}")


def _load_dataset(release_dir: Path, config: str, cache: Path) -> dict:
    import logging
    import warnings

    import datasets

    shutil.rmtree(cache, ignore_errors=True)
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                seen.append(record.getMessage()[:200])

    from pipeline.release import card, read_card_header

    # loaded as the card says (writer_batch_size for a config of one-clip rows)
    (info,) = [i for i in read_card_header(release_dir / "README.md")["dataset_info"] if i["config_name"] == config]
    options = card.load_options(info)
    logging.getLogger("datasets").addHandler(Catch())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = datasets.load_dataset(str(release_dir), config, cache_dir=str(cache), **options)
    seen += [str(w.message)[:200] for w in caught]
    out = {
        "rows": {s: d.num_rows for s, d in ds.items()},
        "num_bytes": {s: d.info.splits[s].num_bytes for s, d in ds.items()},
        "cache_bytes": sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()),
        "warnings": seen,
        "options": options,
    }
    del ds
    shutil.rmtree(cache, ignore_errors=True)
    return out


def _epoch(source_path: Path, epochs: int = 1) -> dict:
    """``epochs`` epochs of the loader: the set-up's CPU seconds (the source's index, the dataset's
    probes, and with them the first reads, which may write the decoded cache) and clips per CPU
    second of each epoch, the first one also counted with the set-up. Torch's and the set-up's
    lazy imports, paid once a process, are paid before (two dummy items through the loader)."""
    import numpy as np
    import pandas  # noqa: F401  (imported by the set-up's table reads)
    import pyarrow.dataset  # noqa: F401

    from models.data import ViralityDataset, open_source
    from models.train import TrainConfig, _make_loader
    from pipeline.core import checksums  # noqa: F401
    from pipeline.modalities import features  # noqa: F401

    config = TrainConfig().resolved()
    for _ in _make_loader([{"x": np.zeros(2, np.float32)}] * 2, config, shuffle=True, seed=0):
        pass
    started = time.process_time()
    ds = ViralityDataset(open_source(source_path), config.modalities)
    setup = time.process_time() - started
    rates = []
    for epoch in range(epochs):
        started = time.process_time()
        clips = sum(len(batch["clip_id"]) for batch in _make_loader(ds, config, shuffle=True, seed=config.seed + epoch))
        cpu = time.process_time() - started
        rates.append(round(clips / cpu, 1) if cpu else None)
        if epoch == 0:
            first = round(clips / (cpu + setup), 1)
    return {"clips": clips, "clips_per_cpu_s": first, "setup_cpu_s": round(setup, 2), "epochs_clips_per_cpu_s": rates}


def child(name: str, target: Path, config_path: Path) -> None:
    import resource

    start_cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    extra = _stage(name, target, config_path)
    wall = time.monotonic() - started
    end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (end.ru_utime - start_cpu.ru_utime) + (end.ru_stime - start_cpu.ru_stime)
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec
    status = Path("/proc/self/status").read_text()
    peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
    print(
        "BENCH "
        + json.dumps({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "rss_mib": round(peak), **extra}, default=str)
    )


def run_stage(name: str, target: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    if name.startswith("loader:"):  # the loader's decoded cache: the size's own, cold unless --warm-cache
        cache = target / f"decoded-{name.split(':', 1)[1]}"
        if not args.warm_cache:
            shutil.rmtree(cache, ignore_errors=True)
        env.update(VDV_DECODED_CACHE=str(cache), BENCH_EPOCHS=str(args.epochs))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--target", str(target)]
    cmd += ["--config", str(args.config)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"stage {name} at {target.name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("BENCH ") :])


# -- growth and output ----------------------------------------------------------------------------


def exponent(points: dict[int, float], baseline: int = BASELINE) -> float | None:
    """Least-squares slope of log(cost(N) - cost(baseline)) against log(N), over the sizes above it."""
    base = points.get(baseline)
    xs, ys = [], []
    for n, cost in sorted(points.items()):
        if n == baseline or base is None:
            continue
        if cost - base <= 0:
            return None
        xs.append(math.log(n))
        ys.append(math.log(cost - base))
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="*", help="numbers of clips (50 is always added as the baseline)")
    parser.add_argument("--demo", type=Path, default=ROOT / "out" / "demo" / "work", help="a built demo work directory")
    parser.add_argument("--raw", type=Path, default=ROOT.parent / "shared" / "data", help="the demo's RAW_DIR")
    parser.add_argument("--pairing", type=Path, default=ROOT / "data" / "demo" / "pairing.csv")
    parser.add_argument("--config", type=Path, default=ROOT / "data" / "demo" / "config.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_scale")
    parser.add_argument("--json", type=Path, help="write JSON lines here")
    parser.add_argument("--stages", nargs="+", help=f"only these ({', '.join(STAGES)})")
    parser.add_argument("--baseline", type=int, default=BASELINE, help="the size growth is measured from")
    parser.add_argument("--clean", action="store_true", help="remove each size's directory once measured")
    parser.add_argument("--reuse", action="store_true", help="measure the directories of an earlier run under --out")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each loader stage (each one's rate printed)")
    parser.add_argument(
        "--warm-cache", action="store_true", help="keep the loader's decoded cache of an earlier run (--reuse)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--target", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.target, args.config)
        return 0
    if any(n < 1 for n in [*args.sizes, args.baseline, args.epochs]):
        parser.print_usage(sys.stderr)
        print("bench_scale.py: sizes and --epochs are positive numbers", file=sys.stderr)
        return 2
    if not (args.demo / "screening").is_dir():
        print(f"bench_scale.py: {args.demo} is not a built work directory; run `make demo` first", file=sys.stderr)
        return 2
    return measure(sorted({args.baseline, *args.sizes}), args)


def measure(sizes: list[int], args) -> int:
    from pipeline.modalities import registry as modalities
    from pipeline.release.layout import SCORES_CONFIG

    stages = list(args.stages or STAGES)
    expanded = [
        s
        for st in stages
        for s in ([f"datasets:{c}" for c in (SCORES_CONFIG, *modalities.names())] if st == "datasets" else [st])
    ]
    results: dict[str, dict[int, dict]] = {}
    out = args.json.open("w") if args.json else None
    print(f"{'stage':<18}{'clips':>7}{'wall s':>10}{'CPU s':>10}{'peak RSS MiB':>14}  notes", flush=True)
    targets = synthesise(sizes, args)
    for n in sizes:
        target = targets[n]
        for name in expanded:
            got = run_stage(name, target, args)
            results.setdefault(name, {})[n] = got
            notes = {k: v for k, v in got.items() if k not in ("wall_s", "cpu_s", "rss_mib")}
            print(
                f"{name:<18}{n:>7}{got['wall_s']:>10.1f}{got['cpu_s']:>10.1f}{got['rss_mib']:>14}  {json.dumps(notes, default=str)[:160]}",
                flush=True,
            )
            if out:
                out.write(json.dumps({"stage": name, "clips": n, **got}, default=str) + "\n")
                out.flush()
        if args.clean:
            shutil.rmtree(target, ignore_errors=True)
    print(
        f"\n{'stage':<18}{'CPU exponent':>14}{'wall exponent':>15}  (sizes {', '.join(map(str, sizes))}; marginal cost over {args.baseline} clips)"
    )
    for name, by_size in results.items():
        cpu = exponent({n: r["cpu_s"] for n, r in by_size.items()}, args.baseline)
        wall = exponent({n: r["wall_s"] for n, r in by_size.items()}, args.baseline)
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{name:<18}{fmt(cpu):>14}{fmt(wall):>15}")
        if out:
            out.write(json.dumps({"stage": name, "exponent": cpu, "wall_exponent": wall, "sizes": sizes}) + "\n")
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
