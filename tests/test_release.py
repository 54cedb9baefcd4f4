"""Release packaging (SPEC section 9) from a work directory built from real clips and metadata.

The work directory is made here with the project's own writers: clips table rows from the real
TikTok-scraper sample paired with real clip files (their sha256 is the clip id), scores from
those records, and feature shards written through ``FeatureExtractor.extract_to`` by a small
extractor that decodes the real clips (colour statistics on a coarse grid) so that the test does
not depend on model weights.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipeline import release
from pipeline.core import tables
from pipeline.core.decode import DecodeParams, iter_samples
from pipeline.core.provenance import sha256_file
from pipeline.modalities import registry
from pipeline.modalities.features import FeatureExtractor, FeatureSequence
from pipeline.scoring import splits

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIPS = [
    "stgcn_ta_chi.mp4",
    "stgcn_clean_and_jerk.mp4",
    "tfjs_pose_1.mp4",
    "liveportrait_d18_face.mp4",
    "trackanything_test-sample2_cat.mp4",
]
CRAWL = dt.datetime.fromtimestamp(1609948309033 / 1000, dt.UTC)  # the sample file's name stamp


class ColourExtractor(FeatureExtractor):
    """Per-sample mean colour of a grid of cells of the real decoded frames, tiled to ``dim``."""

    name = "test-colour-grid"
    version = "test-1"

    def __init__(self, modality: str, dim: int, *, fps: float = 2.0, untrained: bool = False, cells: int = 4):
        self.modality, self.dim, self.fps, self.cells = modality, dim, fps, cells
        self.weights_sha256 = "untrained" if untrained else "0" * 64

    def params(self) -> dict:
        return {"fps": self.fps, "cells": self.cells, "max_side": 64}

    def compute(self, path, clip_id):
        ts, rows = [], []
        for s in iter_samples(path, DecodeParams(fps=self.fps, max_side=64, end_s=3.0), clip_id):
            h, w, _ = s.image.shape
            cells = [
                s.image[
                    i * h // self.cells : (i + 1) * h // self.cells, j * w // self.cells : (j + 1) * w // self.cells
                ].mean(axis=(0, 1))
                for i in range(self.cells)
                for j in range(self.cells)
            ]
            vec = np.concatenate(cells) / 255.0
            rows.append(np.resize(vec, self.dim))
            ts.append(s.t)
        return FeatureSequence(np.array(ts), np.ones(len(ts), bool), np.array(rows, np.float32), self.fps, 30.0, 64, 64)


def colour_extractors(untrained_modality: str | None = None, modalities=("pose", "facial")) -> dict:
    """What ``make_work`` extracts with, as ``package_release(extractors=...)`` expects it."""
    return {m: [ColourExtractor(m, registry.get(m).dim, untrained=m == untrained_modality)] for m in modalities}


def records() -> list[dict]:
    return json.loads((SHARED / "metadata" / "tiktok_scraper_sample.json").read_text())


def make_work(
    work: Path, clips=CLIPS, *, untrained_modality: str | None = None, modalities=("pose", "facial")
) -> dict[str, str]:
    """Write clips, scores, score scale and feature shards for ``clips``; returns file name -> clip id."""
    recs = records()
    ids, clip_rows, score_rows = {}, [], []
    for i, name in enumerate(clips):
        path = SHARED / "clips" / name
        cid = sha256_file(path)
        ids[name] = cid
        rec = recs[i]
        # two uploaders and two challenges, so that grouping and tracks are exercised
        challenge = "challenge-a" if i % 2 == 0 else "challenge-b"
        clip_rows.append(
            {
                "clip_id": cid,
                "video_id": rec["id"],
                "path": str(path),
                "challenge": challenge,
                "uploader_id": rec["authorMeta"]["id"] + ("" if i < 3 else "-other"),
                "uploader_followers": rec["authorMeta"]["fans"],
                "likes": rec["diggCount"],
                "comments": rec["commentCount"],
                "reposts": rec["shareCount"],
                "plays": rec["playCount"],
                "create_time": dt.datetime.fromtimestamp(rec["createTime"], dt.UTC),
                "crawl_time": CRAWL,
                "crawl_time_source": "file_name",
                "metadata_source": "tiktok_scraper_sample.json",
                "duration_s": 5.0,
                "size_bytes": path.stat().st_size,
            }
        )
        days = (CRAWL.timestamp() - rec["createTime"]) / 86400
        raw = math.log((rec["diggCount"] + rec["commentCount"] + rec["shareCount"] + 1) / min(max(days, 1), 7))
        score_rows.append((cid, rec["id"], challenge, days, raw))
    tables.replace_table(clip_rows, tables.CLIPS, work)
    scale = {}
    for _, _, ch, _, raw in score_rows:
        lo, hi, n = scale.get(ch, (raw, raw, 0))
        scale[ch] = (min(lo, raw), max(hi, raw), n + 1)
    rows = []
    for cid, vid, ch, days, raw in score_rows:
        lo, hi, _ = scale[ch]
        score = 0.5 if hi == lo else (raw - lo) / (hi - lo)
        rows.append(
            {
                "clip_id": cid,
                "video_id": vid,
                "challenge": ch,
                "existing_days": days,
                "raw_score": raw,
                "score": score,
                "out_of_scale": False,
                "degenerate_challenge": hi == lo,
            }
        )
    tables.replace_table(rows, tables.SCORES, work)
    tables.replace_table(
        [
            {"challenge": c, "raw_min": lo, "raw_max": hi, "n_clips": n, "params": "{}"}
            for c, (lo, hi, n) in scale.items()
        ],
        tables.SCORE_SCALE,
        work,
    )
    for modality in modalities:
        ex = ColourExtractor(modality, registry.get(modality).dim, untrained=modality == untrained_modality)
        for name, cid in ids.items():
            ex.extract_to(work, SHARED / "clips" / name, cid)
    return ids


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("work")
    return root, make_work(root, untrained_modality="facial")


@pytest.fixture(scope="module")
def released(work, tmp_path_factory) -> release.ReleaseSummary:
    root, _ = work
    out = tmp_path_factory.mktemp("release")
    return release.package_release(
        root, out, allow_untrained=True, salt="test-salt", extractors=colour_extractors("facial")
    )


def test_untrained_features_need_explicit_permission(work, tmp_path):
    root, _ = work
    with pytest.raises(release.ReleaseError, match="untrained"):
        release.package_release(root, tmp_path, extractors=colour_extractors("facial"))
    assert not any(tmp_path.iterdir()) or not (tmp_path / "vdv-0.1.0").exists()


def test_layout_counts_and_splits(released, work):
    _, ids = work
    root = released.path
    assert root.name == "vdv-0.1.0"
    manifest = json.loads((root / "manifest.json").read_text())
    # the uploaders: clips 0-2 share one, clips 3-4 another
    uploader = {cid: ("u1" if i < 3 else "u2") for i, cid in enumerate(ids.values())}
    expected_split = splits.track_split("all", ids.values(), uploader)
    for config in ("scores", "pose", "facial"):
        assert manifest["configs"][config]["num_rows"] == {
            "train": sum(v == "train" for v in expected_split.values()),
            "test": sum(v == "test" for v in expected_split.values()),
        }
        assert (root / "data" / config / "train-00000-of-00001.parquet").is_file()
        assert (root / "data" / config / "test-00000-of-00001.parquet").is_file()
        for split in ("train", "test"):
            got = (
                pq.read_table(root / "data" / config / f"{split}-00000-of-00001.parquet").column("clip_id").to_pylist()
            )
            assert sorted(got) == sorted(c for c, s in expected_split.items() if s == split)
    assert "holistic" not in manifest["configs"]  # no shard, no config
    assert set(manifest["tracks"]) == {"all", "challenge-challenge-a", "challenge-challenge-b"}
    for track in manifest["tracks"]:
        assert (root / "splits" / f"{track}.parquet").is_file()
    assert (root / "score_scale.parquet").is_file()
    sums = (root / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == len([p for p in root.rglob("*") if p.is_file()]) - 1


def test_privacy_and_provenance(released, work):
    root = released.path
    manifest = json.loads((root / "manifest.json").read_text())
    scores = pq.read_table(root / "data" / "scores" / "train-00000-of-00001.parquet")
    assert "uploader_id" not in scores.column_names and "path" not in scores.column_names
    raw_ids = {r["authorMeta"]["id"] for r in records()}
    everything = "".join(p.read_text(errors="ignore") for p in root.rglob("*") if p.suffix in (".json", ".md"))
    for r in records()[:5]:
        assert r["text"][:30] not in everything  # captions
        assert r["authorMeta"]["name"] not in everything  # usernames
    assert not raw_ids & set(scores.column("uploader").to_pylist())
    assert "test-salt" not in everything
    assert manifest["uploader_hash"]["salt_source"] == "option"
    both = pads.dataset(root / "data" / "scores", format="parquet").to_table().to_pylist()
    expected = release.salted_hash(records()[0]["authorMeta"]["id"], b"test-salt")
    assert sum(r["uploader"] == expected for r in both) == 3  # clips 0-2 share that uploader
    # provenance of every feature and the run lineage
    assert manifest["untrained"] is True and manifest["untrained_modalities"] == ["facial"]
    assert "UNTRAINED" in (root / "README.md").read_text()
    prov = manifest["features"]["pose"]["provenance"]
    assert prov[0]["extractor"] == "test-colour-grid" and prov[0]["params"]["fps"] == 2.0 and prov[0]["clips"] == 5
    assert len(manifest["features"]["pose"]["identities"]) == 5
    assert manifest["lineage"]["libraries"]["pyarrow"]
    assert "code_commit" in manifest["lineage"]


def test_verify_passes_then_catches_tampering(released, tmp_path):
    result = release.verify_release(released.path)
    assert result.ok, result.problems
    assert result.counts["pose"]["train"] + result.counts["pose"]["test"] == 5
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(released.path, copy)
    target = copy / "data" / "pose" / "train-00000-of-00001.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    (copy / "splits" / "all.parquet").unlink()
    problems = release.verify_release(copy).problems
    assert any("train-00000-of-00001.parquet: checksum mismatch" in p for p in problems)
    assert any("splits/all.parquet" in p for p in problems)


def test_loads_with_pyarrow_dataset_and_hf_datasets(released, tmp_path, monkeypatch):
    root = released.path
    ds = pads.dataset(root / "data" / "pose", format="parquet")
    table = ds.to_table()
    assert table.num_rows == 5
    assert table.schema.field("features").type.value_type.list_size == 48
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    files = {s: str(root / "data" / "pose" / f"{s}-*.parquet") for s in ("train", "test")}
    hf = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    assert hf["train"].num_rows + hf["test"].num_rows == 5
    assert len(hf["train"][0]["features"][0]) == 48
    # the card's YAML describes the features exactly as datasets derives them from the files
    header = release.read_card_header(root / "README.md")
    info = {c["config_name"]: c for c in header["dataset_info"]}
    for config in ("scores", "pose", "facial"):
        schema = pq.read_schema(root / "data" / config / "train-00000-of-00001.parquet")
        assert info[config]["features"] == datasets.Features.from_arrow_schema(schema)._to_yaml_list()
    # and the directory loads by config name through the card
    by_card = datasets.load_dataset(str(root), "scores", cache_dir=str(tmp_path / "cache2"))
    assert by_card["train"].num_rows + by_card["test"].num_rows == 5


def test_rerelease_is_reproducible_in_content(work, released, tmp_path):
    root, _ = work
    again = release.package_release(
        root, tmp_path, allow_untrained=True, salt="test-salt", extractors=colour_extractors("facial")
    )
    a = pq.read_table(released.path / "data" / "facial" / "test-00000-of-00001.parquet")
    b = pq.read_table(again.path / "data" / "facial" / "test-00000-of-00001.parquet")
    assert a.equals(b)
    assert release.verify_release(again.path).ok


def test_small_shard_limit_gives_several_files(work, tmp_path):
    root, _ = work
    cfg = release.ReleaseConfig(max_shard_mb=0.0001, modalities=("pose",))
    summary = release.package_release(
        root, tmp_path, config=cfg, allow_untrained=True, salt="s", extractors=colour_extractors("facial")
    )
    train = sorted(p.name for p in (summary.path / "data" / "pose").glob("train-*.parquet"))
    n = summary.counts["pose"]["train"]
    assert train == [release.shard_name("train", i, n) for i in range(n)]
    assert release.verify_release(summary.path).ok


def test_one_uploader_keeps_all_in_train_unless_grouping_is_off(tmp_path):
    work = tmp_path / "work"
    make_work(work, clips=CLIPS[:3], modalities=("pose",))  # clips 0-2 share one uploader
    ex = colour_extractors(modalities=("pose",))
    grouped = release.package_release(work, tmp_path / "a", salt="s", extractors=ex)
    manifest = json.loads((grouped.path / "manifest.json").read_text())
    assert grouped.counts["scores"] == {"train": 3, "test": 0}
    assert any("share one uploader" in n for n in manifest["notes"])
    assert "share one uploader" in (grouped.path / "README.md").read_text()
    assert release.verify_release(grouped.path).ok
    off = release.package_release(
        work, tmp_path / "b", config=release.ReleaseConfig(group_by_uploader=False), salt="s", extractors=ex
    )
    assert off.counts["scores"] == {"train": 2, "test": 1}
    assert release.verify_release(off.path).ok


def test_cli_release_and_verify(work, tmp_path, capsys):
    """Through the command line the configuration decides the identities: the colour-grid shards
    of this work directory are not what `[pose]`/`[facial]` compute, so the release refuses
    (untrained first, then stale naming every clip and the fix) unless told to leave them out."""
    from cli import main

    root, ids = work
    out = tmp_path / "cli"
    command = ["release", "--work", str(root), "--out", str(out), "--no-flow", "--salt", "s"]
    assert main(command) == 1  # untrained features are refused without the flag
    assert "untrained" in capsys.readouterr().err
    assert main([*command, "--allow-untrained"]) == 1
    err = capsys.readouterr().err
    assert "only stale shards" in err and f"vdv reextract --work {root} --modalities pose,facial" in err
    assert all(cid[:16] in err for cid in ids.values())
    assert main([*command, "--allow-untrained", "--allow-missing"]) == 0
    manifest = json.loads((out / "vdv-0.1.0" / "manifest.json").read_text())
    assert sorted(manifest["features"]["pose"]["stale_clips"]) == sorted(ids.values())
    assert "5 kept clip(s) left out" in (out / "vdv-0.1.0" / "README.md").read_text()
    assert main(["release", "verify", str(out / "vdv-0.1.0")]) == 0
    assert "OK" in capsys.readouterr().out
    (out / "vdv-0.1.0" / "README.md").write_text("tampered")
    assert main(["release", "verify", str(out / "vdv-0.1.0")]) == 1


# -- only current features go in --------------------------------------------------------------


def _reject(work: Path, modality: str, cid: str, message: str) -> None:
    row = {
        "stage": f"extract:{modality}",
        "clip_id": cid,
        "video_id": None,
        "path": None,
        "reason": "extract_failed",
        "message": message,
    }
    tables.write_table([row], tables.REJECTIONS, tables.shard_path(work, "rejections", f"extract-{modality}"))


def test_stale_features_never_ship(tmp_path):
    """After a parameter change, a clip whose re-extraction failed is left out and listed; a clip
    that was not re-extracted at all makes the release refuse, naming it and the fix."""
    work = tmp_path / "work"
    ids = make_work(work, modalities=("pose",))
    new = ColourExtractor("pose", registry.get("pose").dim, cells=2)  # the changed [pose] parameters
    names = list(ids)
    failed, forgotten = ids[names[0]], ids[names[1]]
    for name in names[2:]:
        new.extract_to(work, SHARED / "clips" / name, ids[name])
    _reject(work, "pose", failed, "RuntimeError: decoder crashed")
    with pytest.raises(release.ReleaseError) as caught:
        release.package_release(work, tmp_path / "out", salt="s", extractors={"pose": [new]})
    message = str(caught.value)
    assert forgotten[:16] in message and failed[:16] not in message
    assert "only stale shards" in message and f"vdv reextract --work {work} --modalities pose" in message
    assert not (tmp_path / "out" / "vdv-0.1.0").exists()

    new.extract_to(work, SHARED / "clips" / names[1], forgotten)
    summary = release.package_release(work, tmp_path / "out", salt="s", extractors={"pose": [new]})
    manifest = json.loads((summary.path / "manifest.json").read_text())
    pose = manifest["features"]["pose"]
    assert list(pose["rejected_clips"]) == [failed] and "decoder crashed" in pose["rejected_clips"][failed]
    assert pose["stale_clips"] == [] and pose["missing_clips"] == []
    assert set(pose["identities"]) == set(ids.values()) - {failed}
    assert all(pose["identities"][c] == new.identity(c) for c in pose["identities"])
    released = pads.dataset(summary.path / "data" / "pose", format="parquet").to_table()
    assert sorted(released.column("clip_id").to_pylist()) == sorted(set(ids.values()) - {failed})
    assert set(released.column("identity").to_pylist()) == {new.identity(c) for c in set(ids.values()) - {failed}}
    card = (summary.path / "README.md").read_text()
    assert "extraction was rejected" in card and failed[:16] in card
    assert summary.missing == {"pose": [failed]}
    assert release.verify_release(summary.path).ok


def test_a_clip_with_no_shard_and_no_rejection_refuses(tmp_path):
    work = tmp_path / "work"
    ids = make_work(work, modalities=("pose",))
    lost = next(iter(ids.values()))
    for path in (work / "features" / "pose").glob(f"pose.{lost[:16]}.*.parquet"):
        path.unlink()
    ex = colour_extractors(modalities=("pose",))
    with pytest.raises(release.ReleaseError, match=f"no shard and no recorded rejection: {lost[:16]}"):
        release.package_release(work, tmp_path / "out", salt="s", extractors=ex)
    summary = release.package_release(work, tmp_path / "out", salt="s", extractors=ex, allow_missing=True)
    assert summary.missing == {"pose": [lost]}
    assert release.verify_release(summary.path).ok


def test_identities_come_from_the_run_configuration(tmp_path):
    """Real BlazePose shards made with `[pose] max_side = 160` are current for that configuration
    and stale for another one (what a release built from the new configuration would compute)."""
    from pipeline.modalities import pose

    work = tmp_path / "work"
    clips = ["tfjs_pose_1.mp4", "controlvideo_moonwalk.mp4"]
    ids = make_work(work, clips=clips, modalities=())
    extractor = pose.MODALITY.build({"max_side": 160})
    for name, cid in ids.items():
        extractor.extract_to(work, SHARED / "clips" / name, cid)
    summary = release.package_release(work, tmp_path / "a", salt="s", run_config={"pose": {"max_side": 160}})
    manifest = json.loads((summary.path / "manifest.json").read_text())
    assert manifest["features"]["pose"]["identities"] == {c: extractor.identity(c) for c in sorted(ids.values())}
    assert release.verify_release(summary.path).ok
    with pytest.raises(release.ReleaseError, match="only stale shards"):
        release.package_release(work, tmp_path / "b", salt="s", run_config={"pose": {"max_side": 192}})


def test_verify_reports_a_damaged_parquet_footer(released, tmp_path, capsys):
    import shutil

    from cli import main

    copy = tmp_path / "copy"
    shutil.copytree(released.path, copy)
    for rel in ("data/pose/train-00000-of-00001.parquet", "data/scores/test-00000-of-00001.parquet"):
        target = copy / rel
        data = bytearray(target.read_bytes())
        data[-5] ^= 0xFF  # the footer length, just before the closing magic bytes
        target.write_bytes(bytes(data))
    problems = release.verify_release(copy).problems
    for rel in ("data/pose/train-00000-of-00001.parquet", "data/scores/test-00000-of-00001.parquet"):
        assert f"{rel}: checksum mismatch" in problems
        assert any(p.startswith(f"{rel}: unreadable Parquet file") for p in problems)
    assert main(["release", "verify", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{len(problems)} problem(s)" in err
    assert all("\n" not in p for p in problems)


def test_verify_reports_a_malformed_manifest_or_a_missing_directory(released, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(released.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["configs"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    problems = release.verify_release(copy).problems
    assert "manifest.json: checksum mismatch" in problems
    assert any(p.startswith("manifest.json is malformed (KeyError") for p in problems)
    assert release.verify_release(tmp_path / "nowhere").problems == [f"{tmp_path / 'nowhere'} is not a directory"]


SCENIC_SMALL = {"scenic": {"end_s": 1.0, "short_side": 48, "mask_max_side": 256}}


def _extract_scenic(work: Path, ids: dict[str, str], untrained: bool):
    from pipeline.extraction import stage as extraction

    plan = extraction.plan_extraction(["scenic"], SCENIC_SMALL, untrained=untrained, device="cpu", precision="float32")
    clips = [{"clip_id": cid, "path": str(SHARED / "clips" / name)} for name, cid in ids.items()]
    run = extraction.run_extraction(work, clips, plan, show_progress=False)
    assert {it.status for it in run.items} == {"computed"}
    return plan


def _no_network_loads(monkeypatch) -> None:
    from pipeline.blazepose import backends
    from pipeline.weights import inference

    def refuse(*args, **kwargs):
        raise AssertionError("the release loaded a network")

    monkeypatch.setattr(inference, "load_model", refuse)
    monkeypatch.setattr(backends, "shared_networks", refuse)


def test_a_release_is_packaged_without_the_weights_cache(tmp_path, monkeypatch):
    """Identities come from the configuration, the code and the recorded weights sha256: with no
    weights cache at all, untrained features (explicitly allowed) are released, and no network
    is loaded to tell which shards are current."""
    work = tmp_path / "work"
    ids = make_work(work, clips=CLIPS[:2], modalities=())
    monkeypatch.setenv("VDV_WEIGHTS_DIR", str(tmp_path / "no-cache"))
    plan = _extract_scenic(work, ids, untrained=True)
    _no_network_loads(monkeypatch)
    run = release.release_stage(
        work, tmp_path / "out", SCENIC_SMALL, allow_untrained=True, salt="s", device="cpu", precision=plan.precision
    )
    assert run.checked.ok and run.summary.untrained_modalities == ["scenic"]
    shards = {
        p: pq.read_table(p, columns=["clip_id", "identity"]).to_pylist()[0]
        for p in (work / "features" / "scenic").glob("*.parquet")
    }
    manifest = json.loads((run.summary.path / "manifest.json").read_text())
    assert manifest["features"]["scenic"]["identities"] == {r["clip_id"]: r["identity"] for r in shards.values()}
    assert not (tmp_path / "no-cache").exists()  # nothing was written into a cache either
    with pytest.raises(release.ReleaseError, match="scenic: .*--allow-untrained"):
        release.release_stage(
            work, tmp_path / "refused", SCENIC_SMALL, salt="s", device="cpu", precision=plan.precision
        )


def test_a_weights_file_changed_after_extraction_names_the_stale_modality(tmp_path, monkeypatch):
    """Features extracted with the cached Places365 weights; then the cache's file is replaced
    (other weights imported) or altered: the release refuses, naming scenic, without loading it."""
    from test_weights import _reference, write_published

    from pipeline.weights import cache, fetch

    work = tmp_path / "work"
    ids = make_work(work, clips=CLIPS[:2], modalities=())
    weights = tmp_path / "cache"
    monkeypatch.setenv("VDV_WEIGHTS_DIR", str(weights))
    reference = _reference("resnet18_places365")
    write_published("resnet18_places365", tmp_path / "w1.pth.tar", reference)
    fetch.import_weights("resnet18_places365", tmp_path / "w1.pth.tar", allow_other_source=True)
    plan = _extract_scenic(work, ids, untrained=False)
    _no_network_loads(monkeypatch)
    kwargs = {"salt": "s", "device": "cpu", "precision": plan.precision}
    assert release.release_stage(work, tmp_path / "a", SCENIC_SMALL, **kwargs).checked.ok

    # other weights imported into the cache: the shards were made with the old ones
    write_published("resnet18_places365", tmp_path / "w2.pth.tar", {k: v * 1.01 for k, v in reference.items()})
    fetch.import_weights("resnet18_places365", tmp_path / "w2.pth.tar", allow_other_source=True)
    with pytest.raises(release.ReleaseError) as caught:
        release.release_stage(work, tmp_path / "b", SCENIC_SMALL, **kwargs)
    assert "scenic" in str(caught.value) and "only stale shards" in str(caught.value)
    assert "--modalities scenic" in str(caught.value)

    # a file altered behind its lock: the recorded sha256 no longer holds, and scenic is named
    path = cache.cached_file("resnet18_places365")
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(release.ReleaseError, match="scenic: weights resnet18_places365 failed verification"):
        release.release_stage(work, tmp_path / "c", SCENIC_SMALL, **kwargs)
