"""AQA-7 loader on a tiny tree in the distributed layout, frames taken from a real sports clip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from flows import sports as recipe
from models import sports
from models.data import ViralityDataset, open_source
from pipeline.core import tables
from pipeline.core.decode import DecodeParams, iter_samples
from pipeline.extraction import stage as extraction

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def aqa(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("AQA-7")
    frames = [
        s.image for s in iter_samples(SHARED / "clips" / "stgcn_clean_and_jerk.mp4", DecodeParams(fps=10, end_s=1.2))
    ]
    for cls, num in ((1, 1), (1, 2), (2, 7), (6, 3)):
        d = root / "Seven" / f"{sports.AQA7_CLASSES[cls - 1]}-out" / f"{num:03d}"
        d.mkdir(parents=True)
        for i, img in enumerate(frames[num % 3 :], start=1):
            cv2.imwrite(str(d / f"img_{i:05d}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (root / "Split_4").mkdir()
    # class, sample, score; a repeated row, a score above 100, a sample without frames
    train = np.array([[1, 1, 45.5], [1, 2, 80.0], [1, 1, 45.5], [6, 3, 101.6], [2, 9, 15.0]])
    test = np.array([[2, 7, 14.2]])
    savemat(root / "Split_4" / "split_4_train_list.mat", {"consolidated_train_list": train})
    savemat(root / "Split_4" / "split_4_test_list.mat", {"consolidated_test_list": test})
    return root


def test_read_split_dedupes_and_reports(aqa: Path) -> None:
    samples, problems = sports.read_split(aqa, "train")
    assert [(s.class_index, s.sample) for s in samples] == [(1, 1), (1, 2), (6, 3)]
    assert samples[2].score == pytest.approx(101.6) and samples[2].class_name == "sync_diving_10m"
    assert [p["reason"] for p in problems] == ["no_clip"]  # class 2 sample 9 has no frames
    frames = recipe.frame_paths(samples[0])
    assert frames[0].name == "img_00001.jpg" and len(frames) == 11


# the holistic network small and untrained: the tests check the plumbing, not the features
HOLISTIC = {"short_side": 64, "crop": 56, "batch_size": 16}


def holistic_plan(**sections):
    return extraction.plan_extraction(
        list(sections), {m: dict(v) for m, v in sections.items()}, untrained=True, device="cpu", precision="float32"
    )


def test_prepare_writes_shards_scores_and_rejections(aqa: Path, tmp_path: Path, monkeypatch) -> None:
    opened = []
    real = extraction.decode_pass
    monkeypatch.setattr(extraction, "decode_pass", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    prep = recipe.prepare_aqa7(aqa, tmp_path, holistic_plan(holistic=HOLISTIC))
    # class 2's only train sample has no frames, so its test sample has no scale to be scored on
    assert len(prep["train"]) == 3 and len(prep["test"]) == 0 and prep["rejected"] == 2
    assert len(opened) == 4  # the extraction stage's loop: one decode pass per encoded sample
    scores = tables.read_table(tmp_path, tables.SCORES).to_pylist()
    by = {r["video_id"]: r for r in scores}
    assert by["6/003"]["raw_score"] == pytest.approx(101.6) and by["6/003"]["score"] == 0.5  # one clip in its class
    assert by["1/001"]["score"] == 0.0 and by["1/002"]["score"] == 1.0
    # the score stage's writer: scores, the per-class scale they were normalised on, the rejections
    scale = {r["challenge"]: r for r in tables.read_table(tmp_path, tables.SCORE_SCALE).to_pylist()}
    assert (scale["diving"]["raw_min"], scale["diving"]["raw_max"], scale["diving"]["n_clips"]) == (45.5, 80.0, 2)
    rej = tables.read_table(tmp_path, tables.REJECTIONS, "rejections").to_pylist()
    assert [r["reason"] for r in rej] == ["no_clip", "no_scale"] and rej[1]["video_id"] == "2/7"
    assert not (tmp_path / "attempts").exists()  # the attempt ledger, cleared once the stage is done
    ds = ViralityDataset(open_source(tmp_path), ("holistic",))
    item = ds[0]
    assert item["holistic"].shape == (256, 2048) and item["holistic_mask"].sum() == 11  # 11 frames at 25 fps
    again = recipe.prepare_aqa7(aqa, tmp_path, holistic_plan(holistic=HOLISTIC))
    assert again == prep  # current shards are skipped, as in any build


@pytest.fixture(scope="module")
def aqa_split4(tmp_path_factory) -> Path:
    """Two classes with train and test samples; a repeated row and a score above 100."""
    root = tmp_path_factory.mktemp("AQA-7-split4")
    frames = [
        s.image for s in iter_samples(SHARED / "clips" / "stgcn_clean_and_jerk.mp4", DecodeParams(fps=10, end_s=2.0))
    ]
    train = [[1, n, 20.0 + 9 * n] for n in (1, 2, 3, 4)] + [[2, n, 95.0 + 3 * n] for n in (1, 2, 3)]
    train.append([1, 2, 38.0])  # repeated row
    test = [[1, n, 30.0 + 5 * n] for n in (5, 6, 7)] + [[2, n, 90.0 + 4 * n] for n in (4, 5)]
    for cls, num, _ in train + test:
        d = root / "Seven" / f"{sports.AQA7_CLASSES[int(cls) - 1]}-out" / f"{int(num):03d}"
        d.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(frames[int(num) : int(num) + 10], start=1):
            cv2.imwrite(str(d / f"img_{i:05d}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (root / "Split_4").mkdir()
    savemat(root / "Split_4" / "split_4_train_list.mat", {"consolidated_train_list": np.array(train, float)})
    savemat(root / "Split_4" / "split_4_test_list.mat", {"consolidated_test_list": np.array(test, float)})
    return root


@pytest.fixture(scope="module")
def prepared(aqa_split4: Path, tmp_path_factory) -> tuple[Path, dict]:
    """The tree's samples through the real pose extractor (BlazePose) and a small untrained holistic one."""
    work = tmp_path_factory.mktemp("sports-work")
    prep = recipe.prepare_aqa7(aqa_split4, work, holistic_plan(pose={"max_side": 256}, holistic=HOLISTIC))
    return work, prep


def test_min_max_comes_from_the_train_scores_only(prepared) -> None:
    """Split_4 as published: class 1 train scores 29, 38, 47, 56 and test 55, 60, 65; class 2
    train 98, 101, 104 and test 106, 110. Scores are min-max on the train range (by hand)."""
    work, _ = prepared
    by = {r["video_id"]: r for r in tables.read_table(work, tables.SCORES).to_pylist()}
    expected = {
        "1/001": 0.0, "1/002": 9 / 27, "1/004": 1.0, "1/005": 26 / 27, "1/006": 31 / 27, "1/007": 36 / 27,
        "2/001": 0.0, "2/003": 1.0, "2/004": 8 / 6, "2/005": 12 / 6,
    }  # fmt: skip
    for vid, score in expected.items():
        assert by[vid]["score"] == pytest.approx(score), vid
        assert by[vid]["out_of_scale"] == (score > 1.0), vid


def test_train_sports_reports_src_per_class_on_split4_test(aqa_split4: Path, prepared, tmp_path: Path) -> None:
    from models.data import DataConfig
    from models.train import TrainConfig

    work, prep = prepared
    out = tmp_path / "out"
    assert len(prep["train"]) == 7 and len(prep["test"]) == 5 and prep["rejected"] == 0
    assert sports.split_ids(aqa_split4) == {"train": prep["train"], "test": prep["test"]}
    # the real skeleton: BlazePose found the lifter in the frames of the sample
    _, valid = open_source(work).load("pose", prep["test"][0])
    assert len(valid) == 10 and valid.sum() >= 8

    config = TrainConfig(model="multimodal", epochs=2, batch_size=4, dropout=0.1)
    data = DataConfig(seconds={"pose": 16 / 25, "holistic": 16 / 25})
    res = sports.train_sports(aqa_split4, work, out, config, data)

    assert tuple(res["train_config"]["modalities"]) == ("pose", "holistic")  # SPEC section 8: two streams only
    assert set(res["classes"]) == {"diving", "gym_vault"}
    assert res["classes"]["diving"]["n_test"] == 3 and res["classes"]["diving"]["n_train"] == 4
    assert res["classes"]["gym_vault"]["n_test"] == 2 and res["classes"]["gym_vault"]["n_train"] == 3
    assert res["all"]["n_test"] == 5 and set(res["predictions"]) == set(prep["test"])
    for r in res["classes"].values():  # two or three test samples: SRC is a rank correlation in [-1, 1]
        assert r["src"] is not None and -1.0 <= r["src"] <= 1.0
    srcs = [r["src"] for r in res["classes"].values()]
    assert min(srcs) <= res["mean_src_fisher_z"] <= max(srcs)
    assert (out / "results.json").is_file() and "| diving |" in (out / "results.md").read_text()
    run = out / "runs" / "all"
    assert (run / "checkpoint.pt").is_file() and (run / "train_log.jsonl").read_text().count("\n") >= 2


def test_train_sports_refuses_streams_outside_spec(aqa_split4: Path, tmp_path: Path) -> None:
    from models.train import TrainConfig

    with pytest.raises(ValueError, match="facial"):
        sports.train_sports(
            aqa_split4, tmp_path, tmp_path / "out", TrainConfig(model="multimodal", modalities=("skeletal", "facial"))
        )


def test_fisher_mean() -> None:
    assert sports.fisher_mean([0.5, None, 0.5]) == pytest.approx(0.5)
    assert sports.fisher_mean([None]) is None
    # z-averaging: tanh((atanh 0.2 + atanh 0.6) / 2), above the plain mean 0.4
    assert sports.fisher_mean([0.2, 0.6]) == pytest.approx(0.4202, abs=1e-4)


def test_vdv_sports_cli_per_class_skeleton_model(aqa_split4: Path, prepared, tmp_path: Path, capsys) -> None:
    from cli import main

    work, prep = prepared
    config = tmp_path / "sports.toml"
    config.write_text("[data]\nseconds = { pose = 0.64 }\n\n[train]\nbatch_size = 4\n")
    argv = ["sports", str(aqa_split4), "--work", str(work), "--out", str(tmp_path / "out"), "--config", str(config)]
    rc = main([*argv, "--skip-extract", "--per-class", "--model", "psgcn", "--modalities", "skeletal", "--epochs", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| diving |" in printed and "| gym_vault |" in printed and "Fisher z" in printed
    # one model per class, each trained on its own class's Split_4 train samples
    assert {p.name for p in (tmp_path / "out" / "runs").iterdir()} == {"diving", "gym_vault"}
