"""Evaluation: SRC, tracks from the split rule, ablation switches, JSON + Markdown results, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import main
from models import data, evaluate, train
from tests.test_train import make_work


def test_spearman() -> None:
    assert evaluate.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert evaluate.spearman([4, 3, 2, 1], [10, 20, 30, 40]) == pytest.approx(-1.0)
    assert evaluate.spearman([1, 1, 1], [1, 2, 3]) is None  # undefined, not a number


def test_ablation_switches() -> None:
    base = train.TrainConfig()
    assert evaluate.ablation_config(base, "no_facial").modalities == ("skeletal", "holistic", "scenic")
    assert evaluate.ablation_config(base, "average_fusion").fusion == "average"
    assert evaluate.ablation_config(base, "no_downsampling").downsample is False
    assert evaluate.ablation_config(base, "no_relational_pooling").relational_pooling is False
    assert evaluate.ablation_config(base, "no_mse").mse is False
    assert evaluate.ablation_config(base, "no_ranking").ranking is False
    with pytest.raises(ValueError, match="unknown ablation"):
        evaluate.ablation_config(base, "no_music")


def test_protocol_writes_json_and_markdown(tmp_path: Path) -> None:
    work = make_work(tmp_path / "work", n=16)
    src = data.open_source(work)
    tracks = evaluate.track_splits(src)
    assert set(tracks) == {"all", "challenge-c0", "challenge-c1"}
    assert sum(s == "test" for s in tracks["all"].values()) == 3  # round(0.2 * 16)
    cfg = train.TrainConfig(model="psgcn", modalities=("skeletal",), epochs=1, device="cpu")
    small = data.DataConfig(skeletal_frames=8)
    res = evaluate.run_protocol(
        src, tmp_path / "eval", cfg, small, tracks=["all"], ablations=["full", "no_downsampling"]
    )
    stored = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert stored["ablations"]["full"]["all"]["n_test"] == 3 and stored["ablations"]["full"]["all"]["n_train"] == 13
    assert set(res["ablations"]) == {"full", "no_downsampling"}
    md = (tmp_path / "eval" / "results.md").read_text()
    assert md.startswith("| model | all |") and "| no_downsampling |" in md


def test_cli_train_then_evaluate_checkpoint(tmp_path: Path, capsys) -> None:
    work = make_work(tmp_path / "work", n=12)
    cfg = tmp_path / "vdv.toml"
    cfg.write_text("[data]\nskeletal_frames = 8\n")
    rc = main(
        [
            "train",
            "--work",
            str(work),
            "--config",
            str(cfg),
            "--out",
            str(tmp_path / "run"),
            "--model",
            "psgcn",
            "--modalities",
            "skeletal",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and (tmp_path / "run" / "checkpoint.pt").exists()
    rc = main(
        [
            "evaluate",
            "--work",
            str(work),
            "--out",
            str(tmp_path / "ev"),
            "--checkpoint",
            str(tmp_path / "run" / "checkpoint.pt"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["ablations"]["checkpoint"]["all"]["n_test"] == 2
