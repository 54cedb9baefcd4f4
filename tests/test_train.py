"""Training loop: loss weights logged per step, checkpoints that rebuild the model, resume."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from models import data, train
from pipeline.core import tables
from tests import realdata
from tests.support.keypoints import load_keypoint_file
from tests.support.shards import write_stream

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
KEYPOINTS = SHARED / "keypoints"


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> Path:
    return realdata.session_release(tmp_path_factory)


def make_work(root: Path, n: int = 12, *, facial_every: int = 3, seed: int = 0) -> Path:
    """``n`` clips: windows of the real tfjs skeletons, random appearance features, some faceless.

    Scores follow the skeleton window's vertical extent so they are not noise, but the tests
    here check the training machinery, not how well it learns.
    """
    rng = np.random.default_rng(seed)
    seqs = [
        load_keypoint_file(KEYPOINTS / "tfjs_pose_1.json"),
        load_keypoint_file(KEYPOINTS / "tfjs_pose_squats.full.json"),
    ]
    rows = []
    for i in range(n):
        cid = f"{i:02d}" * 32
        seq = seqs[i % 2]
        start = int(rng.integers(0, len(seq) - 40))
        write_stream(root, "pose", cid, seq[start : start + 40])
        write_stream(root, "holistic", cid, rng.normal(size=(40, 64)))
        has_face = i % facial_every != 0
        write_stream(root, "facial", cid, rng.normal(size=(5, 32)) * has_face, np.full(5, has_face), fps=3.0)
        rows.append(
            {
                "clip_id": cid,
                "video_id": str(i),
                "challenge": f"c{i % 2}",
                "existing_days": 2.0,
                "raw_score": float(i),
                "score": i / (n - 1),
                "out_of_scale": False,
                "degenerate_challenge": False,
            }
        )
    tables.replace_table(rows, tables.SCORES, root)
    return root


# the shards are at 25 fps (facial 3 fps): 16, 16, 4 and 4 samples
SMALL = data.DataConfig(seconds={"pose": 16 / 25, "holistic": 16 / 25, "facial": 4 / 3, "scenic": 4 * 12 / 25})


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return make_work(tmp_path_factory.mktemp("work"))


def test_psgcn_trains_logs_weights_and_checkpoints(work: Path, tmp_path: Path) -> None:
    ds = data.ViralityDataset(data.open_source(work), ("pose",), config=SMALL)
    cfg = train.TrainConfig(model="psgcn", modalities=("pose",), epochs=2, device="cpu")
    result = train.fit(ds, cfg, out_dir=tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(lines) == 4  # 12 clips, batch 8 -> 2 steps per epoch, 2 epochs
    assert lines[0]["lr"] == pytest.approx(1e-4)
    assert set(lines[0]["weights"]) == {"a", "b", "c"}
    assert all(np.isfinite(x["loss"]) for x in lines)
    # the checkpoint carries its config and rebuilds the same model
    model, cfg2, dcfg, dims = train.load_checkpoint(result.checkpoint, "cpu")
    assert cfg2 == cfg and dcfg == SMALL and dims == {"pose": 48}
    p1 = train.predict(result.model, ds, cfg)["final"]
    p2 = train.predict(model, ds, cfg2)["final"]
    assert np.allclose(p1, p2, atol=1e-6)


def test_step_lr_halves_every_ten_epochs(work: Path, tmp_path: Path) -> None:
    ds = data.ViralityDataset(
        data.open_source(work), ("pose",), clip_ids=None, config=data.DataConfig(seconds={"pose": 8 / 25})
    )
    cfg = train.TrainConfig(model="psgcn", modalities=("pose",), epochs=2, lr_step_epochs=1, device="cpu")
    train.fit(ds, cfg, out_dir=tmp_path)
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(5e-5)


def test_resume_continues_from_the_checkpoint(work: Path, tmp_path: Path) -> None:
    ds = data.ViralityDataset(data.open_source(work), ("pose",), config=data.DataConfig(seconds={"pose": 8 / 25}))
    cfg = train.TrainConfig(model="psgcn", modalities=("pose",), epochs=1, device="cpu")
    train.fit(ds, cfg, out_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    longer = train.TrainConfig(model="psgcn", modalities=("pose",), epochs=2, device="cpu")
    result = train.fit(ds, longer, out_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in result.history] == [1]  # only the missing epoch ran
    steps = [json.loads(x)["step"] for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_multimodal_with_a_missing_face_stream(work: Path, tmp_path: Path) -> None:
    src = data.open_source(work)
    ds = data.ViralityDataset(src, ("pose", "holistic", "facial"), config=SMALL)
    assert not all(ds[i]["stream_mask"][2] for i in range(len(ds)))  # some clips have no face
    cfg = train.TrainConfig(modalities=("pose", "holistic", "facial"), epochs=1, device="cpu")
    result = train.fit(ds, cfg, out_dir=tmp_path)
    out = train.predict(result.model, ds, cfg)
    assert out["final"].shape == (12,) and out["streams"].shape == (12, 3)
    # a faceless clip gives the facial stream no weight; the rest sum to one
    w = out["weights"]
    faceless = [i for i in range(len(ds)) if not ds[i]["stream_mask"][2]]
    assert np.allclose(w[faceless, 2], 0.0) and np.allclose(w.sum(axis=1), 1.0, atol=1e-5)
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert all("w_mse" in x and "gradnorm_loss" in x for x in log)


def test_gradnorm_weights_move_when_gradient_scales_differ(work: Path, tmp_path: Path) -> None:
    """With scores scaled to [0, 1] the MSE gradient is far smaller than the ranking terms':
    GradNorm must move (a, b, c) away from (1, 1, 1), and the log must show it per step."""
    src = data.open_source(work)
    ds = data.ViralityDataset(src, ("pose", "holistic"), config=SMALL)
    cfg = train.TrainConfig(modalities=("pose", "holistic"), epochs=3, device="cpu", gradnorm_lr=0.05)
    train.fit(ds, cfg, out_dir=tmp_path)
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    first, last = log[0]["weights"], log[-1]["weights"]
    assert sum(last.values()) == pytest.approx(3.0, abs=1e-4)
    assert max(abs(last[k] - 1.0) for k in "abc") > 0.05
    assert first != last


def test_loss_ablation_no_mse_fixes_its_weight_at_zero(work: Path, tmp_path: Path) -> None:
    ds = data.ViralityDataset(data.open_source(work), ("pose",), config=data.DataConfig(seconds={"pose": 8 / 25}))
    cfg = train.TrainConfig(model="psgcn", modalities=("pose",), epochs=1, mse=False, device="cpu")
    train.fit(ds, cfg, out_dir=tmp_path)
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert all(x["weights"]["a"] == 0.0 for x in log)
    with pytest.raises(ValueError, match="disabled"):
        train.fit(ds, train.TrainConfig(model="psgcn", modalities=("pose",), mse=False, ranking=False))


def test_wrong_modalities_for_a_model_are_an_error(work: Path) -> None:
    with pytest.raises(ValueError, match="skeleton model"):
        train.build(train.TrainConfig(model="psgcn"), {})


def test_model_sections_are_trained_and_restored(work: Path, tmp_path: Path) -> None:
    """[psgcn] channels and kernel reach the trained model, and the checkpoint rebuilds them
    without the sections (the one checkpoint format: architecture + full model config)."""
    from models import load_checkpoint

    ds = data.ViralityDataset(data.open_source(work), ("pose",), config=data.DataConfig(seconds={"pose": 8 / 25}))
    sections = {"psgcn": {"channels": [8, 16, 24], "temporal_kernel": 3}}
    cfg = train.TrainConfig(model="psgcn", modalities=("pose",), epochs=1, device="cpu")
    result = train.fit(ds, cfg, out_dir=tmp_path, sections=sections)
    assert result.model.config.channels == (8, 16, 24) and result.model.feature_dim == 24
    model, state = load_checkpoint(result.checkpoint)
    assert state["arch"] == "psgcn" and state["config"]["temporal_kernel"] == 3
    assert model.config == result.model.config
    assert model.blocks[0].tcn.conv.kernel_size == (3, 1)
    assert state["train_config"]["model"] == "psgcn" and state["data_config"]["seconds"] == {"pose": 0.32}
    p1 = train.predict(result.model, ds, cfg)["final"]
    p2 = train.predict(model, ds, cfg)["final"]
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    # the fused model takes its streams from [psgcn] and [rtcn], its fusion from [multimodal]
    mm = train.build(
        train.TrainConfig(modalities=("pose", "holistic")),
        {"holistic": 64},
        {**sections, "rtcn": {"heads": 2, "channels": [8, 8, 8, 8, 16, 16]}, "multimodal": {"fusion_hidden": 7}},
    )
    assert mm.config.psgcn.channels == (8, 16, 24) and mm.config.rtcn.heads == 2
    assert mm.config.fusion_hidden == 7 and mm.config.dims == {"holistic": 64}
    from pipeline.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"\[psgcn\]"):
        train.build(cfg, {}, {"psgcn": {"chanels": [8, 8, 8]}})


def test_small_data_profile_fills_only_default_fields() -> None:
    paper = train.TrainConfig().resolved()
    assert (paper.lr, paper.batch_size, paper.dropout) == (1e-4, 8, None)  # SPEC section 5
    small = train.TrainConfig(profile="small-data").resolved()
    assert small.lr == train.PROFILES["small-data"]["lr"] != 1e-4
    # no dropout (docs/RESULTS.md "Learning check"): 0.0 must reach the model, not fall back to its 0.5
    skeleton = dataclasses.replace(small, model="psgcn", modalities=("pose",))
    assert small.dropout == 0.0 and train.build(skeleton, {}).config.dropout == 0.0
    mine = train.TrainConfig(profile="small-data", lr=3e-4).resolved()
    assert mine.lr == 3e-4 and mine.batch_size == small.batch_size
    with pytest.raises(ValueError, match="profile"):
        train.TrainConfig(profile="fast").resolved()


def test_train_and_resume_from_a_packaged_release(release: Path, tmp_path: Path, capsys) -> None:
    """``vdv train --source <release>`` on the output of package_release (data/scores/ and
    data/pose/ of real skeleton windows), then ``--resume`` for one more epoch."""
    from models import load_checkpoint

    run = realdata.train_on_release(release, tmp_path / "run", "--model", "psgcn", "--modalities", "pose")
    model, state = load_checkpoint(run / "checkpoint.pt")
    assert state["arch"] == "psgcn" and model.config.channels == (8, 16, 16) and state["epoch"] == 1
    n_train = sum(1 for r in pq.read_table(release / "splits" / "all.parquet").to_pylist() if r["split"] == "train")
    steps = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, -(-n_train // 8) + 1))  # every train clip of the release, batch 8
    # the models' older name of the pose stream is still an accepted option
    realdata.train_on_release(release, run, "--model", "psgcn", "--modalities", "skeletal", "--epochs", "2", "--resume")
    _, state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 2 and state["step"] == 2 * steps[-1]
    capsys.readouterr()
    from cli import main

    assert main(["train", "--source", str(release), "--out", str(tmp_path / "x"), "--track", "nope"]) == 2
    assert "unknown track" in capsys.readouterr().err


def test_ctrl_c_stops_vdv_train_with_one_line_and_keeps_a_whole_checkpoint(work: Path, tmp_path: Path) -> None:
    """Started in a process group of its own with SIGINT at its default disposition (a shell's
    background job would ignore it), stopped after its second epoch."""
    import signal
    import subprocess
    import sys
    import time

    from models.train import load_checkpoint

    out, log = tmp_path / "run", tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "cli", "train", "--source", str(work), "--out", str(out)]
    command += ["--model", "psgcn", "--modalities", "pose", "--epochs", "100000"]
    env = {**os.environ, "VDV_DECODED_CACHE": str(tmp_path / "cache")}
    with open(log, "w") as err:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while "epoch 2:" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert proc.poll() is None, log.read_text()
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=120) == 130
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert text.strip().splitlines()[-1].startswith("vdv train: stopped by Ctrl-C; --out keeps the checkpoint")
    model, *_ = load_checkpoint(out / "checkpoint.pt", "cpu")  # a whole checkpoint, not half of one
    assert model is not None
