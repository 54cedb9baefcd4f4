"""Learning check on real motion: does PSGCN learn a score that lives in the movement's structure?

Task (documented choice): **upper/lower-body desynchronisation**. From a real skeleton sequence
(MPII-16, 25 fps, normalised as in :mod:`models.data`), a window of ``T`` frames is taken and
the upper body (thorax, upper neck, head top, shoulders, elbows, wrists: joints 7 to 15) is
replaced by its own motion ``d`` frames earlier, re-attached at the current thorax::

    upper'[t] = thorax[t] + (upper[t - d] - thorax[t - d])        lower body unchanged

so the body stays connected and every joint keeps exactly the motion it had (the shifted
frames are taken from the real sequence before the window, so there are no edge effects), but
arms and head now move ``d`` frames behind the legs and hips. The score is ``d / D`` for
``d`` in ``0..D``. Every joint's speed distribution is unchanged, so motion energy (the
baseline's input) carries no signal by construction; the score is only visible in how limbs
move *relative to each other over time*, which no one-line statistic gives.

Held-out sources: variants are grouped by their source clip and the test sources are never seen
in training (no window or variant of a test clip is in the training set). Reported: SRC of
PSGCN and of an SVR on per-joint motion energy (mean squared velocity, 16 features) on the test
sources, and chance (SRC of a random predictor, mean and spread over 200 draws).

Run: ``python bench/learning_check.py`` (extracts skeletons from the real clips in
``../shared/data/clips`` with ``pipeline.pose`` into ``out/learning_check`` once, then trains).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.data import normalize_skeleton  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
UPPER = list(range(7, 16))  # thorax .. l-wrist (MPII order, SPEC section 4)
THORAX = 7
# real clips with one person whose whole body moves (SOURCES.md)
CLIPS = (
    "musepose_dance",
    "hybrik_taiji",
    "stgcn_ta_chi",
    "stgcn_clean_and_jerk",
    "tfjs_pose_1",
    "mmhuman3d_single_person_demo",
    "controlvideo_moonwalk",
    "tuneavideo_man-surfing",
    "pose2sim_singleperson_cam01",
    "tfjs_pose_squats",
)


@dataclass(frozen=True)
class Task:
    frames: int = 48  # window length T
    max_lag: int = 8  # D: the largest delay, in frames (0.32 s at 25 fps)
    stride: int = 8  # between window starts in a source
    variants: int = 3  # random lags per window


def desync(seq: np.ndarray, start: int, lag: int, frames: int) -> np.ndarray:
    """Window ``[start, start + frames)`` of ``seq`` (L, 16, 3) with the upper body ``lag`` frames late."""
    win = seq[start : start + frames].copy()
    past = seq[start - lag : start - lag + frames]
    win[:, UPPER, :2] = win[:, THORAX : THORAX + 1, :2] + (past[:, UPPER, :2] - past[:, THORAX : THORAX + 1, :2])
    win[:, UPPER, 2] = np.minimum(win[:, UPPER, 2], past[:, UPPER, 2])
    return win


def make_variants(sources: dict[str, np.ndarray], task: Task, seed: int = 0):
    """(x (N, 3, T, 16), score (N,), group (N,) source name) for every window and lag."""
    rng = np.random.default_rng(seed)
    xs, ys, groups = [], [], []
    for name, seq in sources.items():
        for start in range(task.max_lag, len(seq) - task.frames + 1, task.stride):
            lags = rng.choice(task.max_lag + 1, size=min(task.variants, task.max_lag + 1), replace=False)
            for lag in lags:
                win = desync(seq, start, int(lag), task.frames)
                xs.append(win.transpose(2, 0, 1))
                ys.append(lag / task.max_lag)
                groups.append(name)
    return np.stack(xs).astype(np.float32), np.array(ys, np.float32), np.array(groups)


def motion_energy(x: np.ndarray) -> np.ndarray:
    """Per-joint mean squared velocity of (N, 3, T, 16): the baseline's 16 features."""
    v = np.diff(x[:, :2], axis=2)
    return (v**2).sum(axis=1).mean(axis=1)


def chance(y: np.ndarray, draws: int = 200, seed: int = 0) -> tuple[float, float]:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    vals = [spearmanr(rng.normal(size=len(y)), y).statistic for _ in range(draws)]
    return float(np.mean(vals)), float(np.std(vals))


def run(
    sources: dict[str, np.ndarray],
    test_sources: list[str],
    task: Task = Task(),
    *,
    epochs: int = 30,
    lr: float = 1e-3,
    seed: int = 0,
    channels=(32, 64, 128),
    verbose: bool = False,
) -> dict:
    """Train PSGCN and the SVR baseline on the training sources; SRC on the held-out sources."""
    import torch
    from scipy.stats import spearmanr
    from sklearn.svm import SVR

    from models import build_model

    x, y, g = make_variants(sources, task, seed)
    test = np.isin(g, test_sources)
    if not test.any() or test.all():
        raise ValueError("need training and test sources")
    torch.manual_seed(seed)
    model = build_model("psgcn", channels=tuple(channels), dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x[~test]), torch.from_numpy(y[~test])
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(perm) - 1, 16):
            idx = perm[i : i + 16]
            if len(idx) < 2:
                continue
            loss = torch.nn.functional.mse_loss(model(xt[idx]).score, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if verbose:
            print(f"epoch {epoch}: loss {float(loss):.4f}", flush=True)
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x[test])).score.numpy()
    svr = SVR().fit(motion_energy(x[~test]), y[~test])
    base = svr.predict(motion_energy(x[test]))
    mean, std = chance(y[test])
    return {
        "n_train": int((~test).sum()),
        "n_test": int(test.sum()),
        "train_sources": sorted(set(g[~test])),
        "test_sources": sorted(test_sources),
        "psgcn_src": float(spearmanr(pred, y[test]).statistic),
        "svr_energy_src": float(spearmanr(base, y[test]).statistic),
        "chance_src_mean": mean,
        "chance_src_std": std,
        "train_seconds": train_s,
        "epochs": epochs,
    }


def load_keypoint_sources() -> dict[str, np.ndarray]:
    """The two real keypoint files as normalised (L, 16, 3) sequences (no video decoding)."""
    from models.data import load_keypoint_file

    out = {}
    for name in ("tfjs_pose_1.json", "tfjs_pose_squats.full.json"):
        rows = load_keypoint_file(SHARED / "keypoints" / name).reshape(-1, 16, 3)
        out[name] = normalize_skeleton(rows, np.ones(len(rows), bool))
    return out


def extract_sources(work: Path, clips=CLIPS) -> dict[str, np.ndarray]:
    """Skeletons of the real clips by ``pipeline.pose`` (cached in ``work``), normalised, valid frames only."""
    from models.data import WorkDirSource
    from pipeline.pose import PoseConfig, build_extractor

    extractor = build_extractor(PoseConfig(max_side=320))
    out = {}
    for name in clips:
        path = SHARED / "clips" / f"{name}.mp4"
        cid = name.ljust(64, "_")[:64]
        t0 = time.perf_counter()
        _, computed = extractor.extract_to(work, path, cid)
        if computed:
            print(f"pose {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        feats, valid = WorkDirSource(work).load("skeletal", cid)
        joints = feats.reshape(-1, 16, 3)
        if valid.sum() < 60:
            print(f"skip {name}: {int(valid.sum())} frames with a person")
            continue
        # keep the longest run of valid frames so that windows are real continuous motion
        best, cur, best_end = 0, 0, 0
        for i, v in enumerate(valid):
            cur = cur + 1 if v else 0
            if cur > best:
                best, best_end = cur, i + 1
        seg = joints[best_end - best : best_end]
        out[name] = normalize_skeleton(seg, np.ones(len(seg), bool))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=str(ROOT / "out" / "learning_check"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--folds", type=int, default=3, help="held-out source folds")
    args = parser.parse_args()
    sources = extract_sources(Path(args.work))
    print("sources:", {k: len(v) for k, v in sources.items()})
    names = sorted(sources)
    rng = np.random.default_rng(0)
    rng.shuffle(names)
    results = []
    for k in range(args.folds):
        test = names[k :: args.folds]
        r = run(sources, test, epochs=args.epochs, seed=k)
        results.append(r)
        print(json.dumps(r), flush=True)
    print(
        f"mean over {args.folds} folds: PSGCN SRC {np.mean([r['psgcn_src'] for r in results]):.3f}, "
        f"SVR(motion energy) SRC {np.mean([r['svr_energy_src'] for r in results]):.3f}, "
        f"chance {np.mean([r['chance_src_mean'] for r in results]):.3f} +- {np.mean([r['chance_src_std'] for r in results]):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
