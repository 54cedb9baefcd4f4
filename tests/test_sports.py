"""AQA-7 loader on a tiny tree in the distributed layout, frames taken from a real sports clip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from models import sports
from models.data import ViralityDataset, open_source
from pipeline import tables
from pipeline.decode import DecodeParams, iter_samples
from pipeline.features import FeatureExtractor, FeatureSequence

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
    frames = sports.frame_paths(samples[0])
    assert frames[0].name == "img_00001.jpg" and len(frames) == 11


class MeanColour(FeatureExtractor):
    """A cheap stand-in holistic extractor: per-frame mean colour, to keep the test fast."""

    modality, name, dim, version = "holistic", "mean-colour", 3, "test"

    def params(self) -> dict:
        return {"fps": 25.0}

    def compute(self, path, clip_id) -> FeatureSequence:
        imgs = [s.image for s in iter_samples(path, DecodeParams(fps=25.0))]
        return FeatureSequence(
            np.arange(len(imgs)) / 25.0, np.ones(len(imgs), bool), np.stack([i.mean(axis=(0, 1)) for i in imgs]), 25.0
        )


def test_prepare_writes_shards_scores_and_rejections(aqa: Path, tmp_path: Path) -> None:
    prep = sports.prepare_aqa7(aqa, tmp_path, {"holistic": MeanColour()})
    assert len(prep["train"]) == 3 and len(prep["test"]) == 1 and prep["rejected"] == 1
    scores = tables.read_table(tmp_path, tables.SCORES).to_pylist()
    by = {r["video_id"]: r for r in scores}
    assert by["6/003"]["raw_score"] == pytest.approx(101.6) and by["6/003"]["score"] == 0.5  # one clip in its class
    assert by["1/001"]["score"] == 0.0 and by["1/002"]["score"] == 1.0
    rej = tables.read_table(tmp_path, tables.REJECTIONS, "rejections").to_pylist()
    assert rej[0]["reason"] == "no_clip"
    ds = ViralityDataset(open_source(tmp_path), ("holistic",))
    item = ds[0]
    assert item["holistic"].shape == (256, 3) and item["holistic_mask"].sum() == 11  # 11 frames at 25 fps
