"""Learning check on real motion: does PSGCN learn a score that lives only in time?

Task (documented choice): **who leads**. From a real skeleton sequence (MPII-16, normalised as
in :mod:`models.data`) a window of ``T`` frames is taken in which the right arm and leg replay
the *mirror image* of the left arm and leg ``lag`` frames later, each re-attached at its own
shoulder or hip (a canon, the choreographic device)::

    follower[t] = root_f[t] + mirror(leader[t - lag] - root_l[t - lag])

Score 1 is that window as it is (the right side follows the left); score 0 is **the same window
played backwards** (now the right side leads). The canon is built on the real sequence and on
the real sequence reversed alike, so that each score level holds real movement in both
directions of time: the arrow of time of the movement itself says nothing about the score
(trained on forward movement only, PSGCN learnt the training clips' arrow of time and did not
carry over to held-out clips: fold 0 SRC 0.118 after 640 steps). The two levels therefore hold exactly the same
multiset of frames and the same speed distribution (a reversed clip has the same speeds, with
the opposite sign of velocity): any per-frame or pooled statistic, motion energy included,
is identical for the pair and carries no signal by construction. Only the order of frames,
one side's movement against the other's across time, tells the levels apart. The trunk, head
and leader limbs keep their real motion; the delayed frames come from the real sequence before
the window.

Why not the earlier task ("share of the window in canon" against unison): in unison the
follower mirrors the leader in every frame, so the left/right mismatch of one frame, a
parameter-free single-frame feature, reached SRC 0.866 there.

Augmentation (training only, a fresh draw every step): the source movement played at a random
tempo (``speeds``, 0.5x to 1.5x, log-uniform, by interpolating between frames) before the canon
is built on it, so the follower is still exactly ``lag`` frames behind; a random window start;
scale 0.8-1.2; rotation +-15 degrees; and a horizontal flip with half the windows (``flip``).
The tempo makes the same limb trajectories fast or slow against the fixed lag: without it,
PSGCN fitted the training clips (SRC 0.84 on their windows) and reached 0.26 on held-out fold
2, whose largest clip (hybrik_taiji) moves differently from every training clip; with it, 0.41
after the same 80 epochs. A flip swaps the
sides of the body, and so the answer: a flipped score-1 window is one in which the left side
follows the right, which is what a score-0 window is, and it is given score 0 (and a flipped
score-0 window score 1). So each level holds every movement in both of its mirror images, the
one thing that stays tied to the score is which side leads, and the training set is twice as
varied. Half the training windows (``graft``) are grafted first: the leader arm and the leader
leg each move as in another training window drawn the same way (its own clip, tempo and start),
re-attached at the window's own shoulder and hip, and the canon then copies them onto the other
side; the trunk and the two leader limbs come from up to three clips, so that the levels cannot
be told apart by recalling a training clip's whole-body movement. Test windows are every
``test_stride`` frames of a held-out source, each in both directions, unflipped, never grafted.

Held-out sources: a fold's test clips are never seen in training (a clip's pose run and its
keypoint file count as one clip). Reported per fold and training setting: SRC of PSGCN, of a
per-frame baseline (an SVR on the per-frame pose features pooled over the window: mean, std and
max of every joint's x, y and confidence) and of an SVR on per-joint motion energy, on the
held-out windows, and chance (a random predictor: mean and spread over 200 draws). With two
score levels the best possible SRC is sqrt(3)/2 = 0.866.

Training settings (``--settings``): ``paper`` is SPEC section 5 through ``models.train``
(:class:`~models.train.TrainConfig` defaults: Adam 1e-4, batch 8, dropout 0.5, MSE plus margin
ranking balanced by GradNorm, learning rate halved every 10 epochs); ``small-data`` is the
``[train] profile = "small-data"`` profile of :data:`models.train.PROFILES`. An epoch here is
``epoch_variants`` freshly drawn windows. Both train the same PSGCN (default widths a quarter of
the paper's, ``--channels``) with the same loss code as ``vdv train``.

Seeds (``--seeds``, default 3): each fold and setting trains ``n`` seeds, fixed before any run
(fold ``k``: ``n k`` to ``n k + n - 1``), and the figure is their mean, with the min and max beside
it and the SRC of the seeds' mean prediction (an ensemble of the ``n`` models). Every run starts
on a plateau where PSGCN predicts nearly one value for every window; when it leaves it depends
on the seed (with dropout 0.1: from epoch 30 to never within 160), and the held-out figure
follows. Each run therefore also reports PSGCN's SRC on training windows (``psgcn_train_src``):
near 0 for a run that never left the plateau, high for one that learnt.

Run: ``python bench/learning_check.py [--settings paper,small-data] [--epochs 40] [--seeds 3]``
(extracts skeletons from the real clips in ``../shared/data/clips`` with ``pipeline.modalities.pose`` into
``out/learning_check`` once, adds the real keypoint files of ``../shared/data/keypoints``, then
trains ``--seeds`` PSGCNs per fold and setting; writes ``out/learning_check/results.json`` (per
run, and the per-fold ``summary``) and ``results.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.data import normalize_skeleton  # noqa: E402
from tests.support.keypoints import load_keypoint_file  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"

# MPII joint order (SPEC section 4). Limbs as (root, joints moved with it), right then left.
R_ARM, L_ARM = (12, (11, 10)), (13, (14, 15))
R_LEG, L_LEG = (2, (1, 0)), (3, (4, 5))
# left <-> right swap of the MPII order, for the horizontal flip
FLIP = np.array([5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10])

# real clips with one person whose body moves (SOURCES.md)
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
# keypoint file -> the clip it was computed from (SOURCES.md): one source clip, one group
KEYPOINT_FILES = {"tfjs_pose_1.json": "tfjs_pose_1", "tfjs_pose_squats.full.json": "tfjs_pose_squats"}


def clip_of(source: str) -> str:
    """The source clip of a sequence name (``clip`` or ``clip:keypoints``): folds hold out clips."""
    return source.split(":")[0]


@dataclass(frozen=True)
class Task:
    frames: int = 32  # window length T (1.28 s at 25 fps)
    # the follower's delay: 12 frames = 0.48 s at 25 fps, well above the pose estimators'
    # frame-to-frame jitter, which hides delays of one or two frames on slow motion
    lag: int = 12
    test_stride: int = 4  # between test window starts in a held-out source
    scale: tuple[float, float] = (0.8, 1.2)  # training scale jitter
    rotate_deg: float = 15.0  # training rotation jitter
    flip: bool = True  # training: a horizontal flip (sides swapped, and so the score) half the time
    speeds: tuple[float, float] | None = (0.5, 1.5)  # training: tempo range of the source movement
    # training: share of windows whose leader arm and leg each move as in another training window
    graft: float = 0.5

    @property
    def max_lag(self) -> int:
        return self.lag


@dataclass(frozen=True)
class Training:
    settings: str = "small-data"  # a models.train profile: paper | small-data
    epochs: int = 160  # 2,560 steps of 32 (small-data): held-out SRC was still rising at 100
    epoch_variants: int = 512  # windows drawn per epoch (the paper's StepLR counts epochs)
    channels: tuple[int, ...] = (16, 32, 64)  # PSGCN widths: a quarter of the paper's (64, 128, 256)
    seed: int = 0
    threads: int = 0  # torch threads; 0 keeps torch's default
    extra: dict = field(default_factory=dict)  # further PSGCN config overrides

    def train_config(self):
        """The models.train configuration of these settings (profile resolved)."""
        from models.train import TrainConfig

        return TrainConfig(
            profile=self.settings, model="psgcn", modalities=("skeletal",), epochs=self.epochs, seed=self.seed
        ).resolved()


# -- the task -------------------------------------------------------------------------------------


def canon(seq: np.ndarray, start: int, lag: int, frames: int, leader: str = "left") -> np.ndarray:
    """Window ``[start, start + frames)`` of ``seq`` (L, 16, 3) whose follower limbs repeat the
    leader's, mirrored, ``lag`` frames later (see the module docstring). ``start >= lag``."""
    if start < lag or start + frames > len(seq):
        raise ValueError(f"window [{start - lag}, {start + frames}) outside a sequence of {len(seq)}")
    win = seq[start : start + frames].copy()
    past = seq[start - lag : start - lag + frames]
    pairs = ((L_ARM, R_ARM), (L_LEG, R_LEG)) if leader == "left" else ((R_ARM, L_ARM), (R_LEG, L_LEG))
    for (lroot, ljoints), (froot, fjoints) in pairs:
        rel = past[:, list(ljoints), :2] - past[:, lroot : lroot + 1, :2]
        rel[..., 0] *= -1.0  # mirror: the follower is the other side of the body
        win[:, list(fjoints), :2] = win[:, froot : froot + 1, :2] + rel
        win[:, list(fjoints), 2] = past[:, list(ljoints), 2]
    return win


def lead_window(seq: np.ndarray, start: int, task: Task, forward: bool, reverse_source: bool = False) -> np.ndarray:
    """The canon window at ``start`` (the right side ``task.lag`` frames behind the left), as it
    is (``forward``, score 1) or played backwards (score 0: the right side leads). With
    ``reverse_source`` the canon is built on the real sequence played backwards."""
    src = seq[::-1] if reverse_source else seq
    win = canon(src, start, task.lag, task.frames, "left")
    return win if forward else win[::-1].copy()


def augment(win: np.ndarray, rng: np.random.Generator, task: Task) -> np.ndarray:
    """Scale and rotate a window (T, 16, 3) about its mean pelvis; confidence untouched."""
    out = win.copy()
    theta = np.deg2rad(rng.uniform(-task.rotate_deg, task.rotate_deg))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], np.float32)
    centre = out[:, 6, :2].mean(axis=0)
    out[..., :2] = ((out[..., :2] - centre) @ rot.T) * rng.uniform(*task.scale) + centre
    return out


def flip(win: np.ndarray) -> np.ndarray:
    """A window (T, 16, 3) mirrored left to right about its mean pelvis: x negated, sides swapped."""
    out = win[:, FLIP].copy()
    out[..., 0] = 2.0 * win[:, 6, 0].mean() - out[..., 0]
    return out


def time_warp(seq: np.ndarray, speed: float) -> np.ndarray:
    """``seq`` (L, ...) played at ``speed`` times its tempo: frames at times 0, speed, 2 speed, ...,
    each interpolated linearly between its two neighbouring frames."""
    t = np.arange(int((len(seq) - 1) / speed) + 1) * speed
    i = np.minimum(t.astype(int), len(seq) - 2)
    f = (t - i).reshape(-1, *([1] * (seq.ndim - 1)))
    return (seq[i] * (1.0 - f) + seq[i + 1] * f).astype(seq.dtype)


def _draw(sources: list[np.ndarray], task: Task, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A training source at a random tempo, and a random window start in it (``start >= lag``)."""
    weights = np.array([len(s) - task.frames - task.max_lag + 1 for s in sources], float)
    seq = sources[rng.choice(len(sources), p=weights / weights.sum())]
    if task.speeds:
        warped = time_warp(seq, float(np.exp(rng.uniform(*np.log(task.speeds)))))
        seq = warped if len(warped) >= task.frames + task.max_lag else seq
    return seq, int(rng.integers(task.max_lag, len(seq) - task.frames + 1))


def _segment(seq: np.ndarray, start: int, task: Task) -> np.ndarray:
    """The frames a canon window at ``start`` is built from: ``lag`` frames before it, and it."""
    return seq[start - task.max_lag : start + task.frames]


def graft(seq: np.ndarray, donor: np.ndarray, limb: tuple[int, tuple[int, ...]]) -> np.ndarray:
    """``seq`` (L, 16, 3) with ``limb`` (root, joints) moving as in ``donor`` (L, 16, 3): each
    joint at its place relative to the limb's root in ``donor``, re-attached at ``seq``'s root,
    with ``donor``'s confidence. The rest of the body is ``seq``'s own."""
    root, joints = limb
    out = seq.copy()
    out[:, list(joints), :2] = seq[:, root : root + 1, :2] + (
        donor[:, list(joints), :2] - donor[:, root : root + 1, :2]
    )
    out[:, list(joints), 2] = donor[:, list(joints), 2]
    return out


def sample_batch(sources: list[np.ndarray], n: int, task: Task, rng: np.random.Generator):
    """``n`` augmented training windows: (x (n, 3, T, 16), score (n,)), half of each level on average."""
    xs, ys = [], []
    for _ in range(n):
        seq, start = _draw(sources, task, rng)
        if task.graft:  # each window on its own frames, so that limbs of other windows can be grafted on
            seq, start = _segment(seq, start, task), task.max_lag
            if rng.random() < task.graft:
                for limb in (L_ARM, L_LEG):  # the leaders: the canon then copies them onto the right
                    seq = graft(seq, _segment(*_draw(sources, task, rng), task), limb)
        forward, backwards_source = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        win, score = lead_window(seq, start, task, forward, backwards_source), float(forward)
        if task.flip and rng.random() < 0.5:
            win, score = flip(win), 1.0 - score  # now the other side leads
        xs.append(augment(win, rng, task).transpose(2, 0, 1))
        ys.append(score)
    return np.stack(xs).astype(np.float32), np.array(ys, np.float32)


def test_set(sources: dict[str, np.ndarray], task: Task):
    """Every window (stride ``test_stride``) of the held-out sources and of the sources played
    backwards, each in both directions: (x (N, 3, T, 16), score (N,), source name (N,)); the
    two levels of a window are adjacent."""
    xs, ys, names = [], [], []
    for name, seq in sources.items():
        for backwards_source in (False, True):
            for start in range(task.max_lag, len(seq) - task.frames + 1, task.test_stride):
                for forward in (True, False):
                    xs.append(lead_window(seq, start, task, forward, backwards_source).transpose(2, 0, 1))
                    ys.append(float(forward))
                    names.append(name)
    return np.stack(xs).astype(np.float32), np.array(ys, np.float32), np.array(names)


def frame_features(x: np.ndarray) -> np.ndarray:
    """Per-frame pose features pooled over the window, (N, 3, T, 16) -> (N, 3 * 48): mean, std
    and max over frames of every joint's x, y and confidence (the per-frame baseline's input)."""
    from models.baselines import pool_sequence

    rows = x.transpose(0, 2, 3, 1).reshape(len(x), x.shape[2], -1)  # (N, T, 48)
    # each feature sorted over time: pooling is order-free, and so bit-identical for a reversal
    return np.stack([pool_sequence(np.sort(r, axis=0)) for r in rows])


def motion_energy(x: np.ndarray) -> np.ndarray:
    """Per-joint mean squared velocity of (N, 3, T, 16): the baseline's 16 features."""
    v = np.diff(x[:, :2], axis=2)
    # sorted over time first: the mean is then bit-identical for a window and its reversal
    return np.sort((v**2).sum(axis=1), axis=1).mean(axis=1)


def chance(y: np.ndarray, draws: int = 200, seed: int = 0) -> tuple[float, float]:
    """SRC of a random predictor against ``y``: mean and standard deviation over ``draws``."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    vals = [spearmanr(rng.normal(size=len(y)), y).statistic for _ in range(draws)]
    return float(np.mean(vals)), float(np.std(vals))


# -- training and evaluation ----------------------------------------------------------------------


def train_psgcn(train: list[np.ndarray], task: Task, cfg: Training, log=None):
    """Train a PSGCN on freshly drawn windows of ``train`` with the optimiser, schedule, loss
    (models.losses, GradNorm included) and dropout of ``cfg.settings``; returns (model, losses)."""
    import torch

    from models import build_model
    from models.train import make_loss

    tc = cfg.train_config()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    overrides = dict(cfg.extra)
    if tc.dropout is not None:
        overrides["dropout"] = tc.dropout
    model = build_model("psgcn", channels=tuple(cfg.channels), **overrides)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=tc.lr_step_epochs, gamma=tc.lr_gamma)
    loss_fn = make_loss(tc)
    steps = max(cfg.epoch_variants // tc.batch_size, 1)
    losses = []
    for epoch in range(cfg.epochs):
        model.train()
        total = 0.0
        for _ in range(steps):
            x, y = sample_batch(train, tc.batch_size, task, rng)
            x, y = torch.from_numpy(x), torch.from_numpy(y)
            pred = model(x).score
            loss, _ = loss_fn.step_loss(pred, y, None, None, model.shared_parameters())
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        sched.step()
        losses.append(total / steps)
        if log:
            log(f"  epoch {epoch + 1}/{cfg.epochs}: loss {losses[-1]:.4f}, weights {loss_fn.weights().tolist()}")
    model.eval()
    return model, losses


def predict(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate(
            [model(torch.from_numpy(x[i : i + batch])).score.numpy() for i in range(0, len(x), batch)]
        )


def _src(pred: np.ndarray, y: np.ndarray) -> float:
    from models.evaluate import spearman

    value = spearman(pred, y)
    return 0.0 if value is None else value  # a constant predictor ranks nothing


def run_fold(
    sources: dict[str, np.ndarray],
    test_clips: list[str],
    task: Task = Task(),
    cfg: Training = Training(),
    log=None,
) -> dict:
    """Train PSGCN and the two baselines on every source but those of the clips ``test_clips``;
    SRC on those (a clip's pose run and its keypoint file go together)."""
    from sklearn.svm import SVR

    from models.baselines import SVRBaseline

    held = {k: v for k, v in sources.items() if clip_of(k) in test_clips}
    train = [v for k, v in sources.items() if clip_of(k) not in test_clips]
    if not held or not train:
        raise ValueError("need training and held-out sources")
    t0 = time.perf_counter()
    model, losses = train_psgcn(train, task, cfg, log)
    train_s = time.perf_counter() - t0
    x, y, names = test_set(held, task)
    pred = predict(model, x)
    # the baselines see 2,000 training windows drawn like PSGCN's
    xb, yb = sample_batch(train, 2000, task, np.random.default_rng(cfg.seed + 2))
    energy = SVR().fit(motion_energy(xb), yb).predict(motion_energy(x))
    per_frame = SVRBaseline().fit(frame_features(xb), yb).predict(frame_features(x))
    mean, std = chance(y, seed=cfg.seed)
    return {
        "settings": cfg.settings,
        "test_sources": sorted(held),
        "train_sources": sorted(k for k in sources if clip_of(k) not in test_clips),
        "n_test": int(len(y)),
        "n_train_variants": int(cfg.epochs * cfg.epoch_variants),
        "psgcn_src": _src(pred, y),
        "psgcn_src_per_source": {n: _src(pred[names == n], y[names == n]) for n in held},
        # on the baselines' training windows: near 0 when PSGCN never left the constant predictor
        "psgcn_train_src": _src(predict(model, xb), yb),
        "per_frame_svr_src": _src(per_frame, y),
        "svr_energy_src": _src(energy, y),
        "chance_src_mean": mean,
        "chance_src_std": std,
        "train_seconds": train_s,
        "final_loss": losses[-1],
        "losses": losses,
        "pred": pred.tolist(),
        "target": y.tolist(),
    }


# -- skeleton sources -----------------------------------------------------------------------------


def longest_valid_run(valid: np.ndarray) -> slice:
    """The longest run of consecutive true values (continuous real motion)."""
    best, cur, end = 0, 0, 0
    for i, v in enumerate(valid):
        cur = cur + 1 if v else 0
        if cur > best:
            best, end = cur, i + 1
    return slice(end - best, end)


def load_keypoint_sources(files=KEYPOINT_FILES) -> dict[str, np.ndarray]:
    """The real keypoint files (tfjs pose-detection outputs) as normalised (L, 16, 3) sequences."""
    out = {}
    for name in files:
        rows = load_keypoint_file(SHARED / "keypoints" / name).reshape(-1, 16, 3)
        out[f"{KEYPOINT_FILES[name]}:keypoints"] = normalize_skeleton(rows, np.ones(len(rows), bool))
    return out


def extract_sources(work: Path, clips=CLIPS, min_frames: int = 60) -> dict[str, np.ndarray]:
    """Skeletons of the real clips by ``pipeline.modalities.pose`` (cached in ``work``), normalised, the
    longest run of frames with a person."""
    from models.data import WorkDirSource
    from pipeline.modalities.pose import MODALITY, PoseConfig

    extractor = MODALITY.build(PoseConfig(max_side=320))
    out = {}
    for name in clips:
        path = SHARED / "clips" / f"{name}.mp4"
        cid = name.ljust(64, "_")[:64]
        if not extractor.is_current(work, cid):
            t0 = time.perf_counter()
            extractor.write(work, cid, extractor.compute(path, cid))  # its checksum recorded
            print(f"pose {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        feats, valid = WorkDirSource(work).load("skeletal", cid)
        seg = longest_valid_run(valid)
        joints = feats.reshape(-1, 16, 3)[seg]
        if len(joints) < min_frames:
            print(f"skip {name}: {len(joints)} consecutive frames with a person (< {min_frames})")
            continue
        out[name] = normalize_skeleton(joints, np.ones(len(joints), bool))
    return out


def plot(results: list[dict], path: Path) -> None:
    """Bar chart of held-out SRC per fold and setting: PSGCN, the two baselines and chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(results), 3.6))
    idx = np.arange(len(results))
    ax.bar(idx - 0.3, [r["psgcn_src_mean"] for r in results], 0.2, label="PSGCN (mean of seeds)",
           yerr=[[r["psgcn_src_mean"] - r["psgcn_src_min"] for r in results],
                 [r["psgcn_src_max"] - r["psgcn_src_mean"] for r in results]])  # fmt: skip
    ax.bar(idx - 0.1, [r["per_frame_svr_src"] for r in results], 0.2, label="SVR (per-frame pose, pooled)")
    ax.bar(idx + 0.1, [r["svr_energy_src"] for r in results], 0.2, label="SVR (motion energy)")
    ax.bar(idx + 0.3, [r["chance_src_mean"] for r in results], 0.2, label="chance",
           yerr=[2 * r["chance_src_std"] for r in results])  # fmt: skip
    ax.set_xticks(idx, [f"fold {r['fold']}\n{r['settings']}" for r in results], fontsize=7)
    ax.set_ylabel("held-out SRC")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def seeds_of(fold: int, n: int) -> list[int]:
    """The training seeds of a fold: ``n * fold`` to ``n * fold + n - 1``, fixed before any run."""
    return [n * fold + i for i in range(n)]


def summarise(runs: list[dict]) -> dict:
    """One fold and setting over its seeds: PSGCN's held-out SRC per seed, their mean, min and
    max, and the SRC of the seeds' mean prediction (an ensemble); the baselines' mean."""
    from models.evaluate import spearman

    src = [r["psgcn_src"] for r in runs]
    target = np.asarray(runs[0]["target"])
    ensemble = spearman(np.mean([r["pred"] for r in runs], axis=0), target)
    return {
        "fold": runs[0]["fold"],
        "settings": runs[0]["settings"],
        "test_sources": runs[0]["test_sources"],
        "seeds": [r["seed"] for r in runs],
        "psgcn_src_per_seed": src,
        "psgcn_train_src_per_seed": [r["psgcn_train_src"] for r in runs],
        "psgcn_src_mean": float(np.mean(src)),
        "psgcn_src_min": float(np.min(src)),
        "psgcn_src_max": float(np.max(src)),
        "psgcn_ensemble_src": 0.0 if ensemble is None else float(ensemble),
        "per_frame_svr_src": float(np.mean([r["per_frame_svr_src"] for r in runs])),
        "svr_energy_src": float(np.mean([r["svr_energy_src"] for r in runs])),
        "chance_src_mean": runs[0]["chance_src_mean"],
        "chance_src_std": runs[0]["chance_src_std"],
    }


def folds_of(sources: dict[str, np.ndarray], folds: int) -> list[list[str]]:
    """Held-out clip groups: the source clips shuffled once (seed 0), dealt into ``folds``."""
    clips = sorted({clip_of(k) for k in sources})
    np.random.default_rng(0).shuffle(clips)
    folds = min(folds, len(clips))
    return [sorted(clips[k::folds]) for k in range(folds)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=str(ROOT / "out" / "learning_check"))
    parser.add_argument("--settings", default="paper,small-data", help="comma-separated models.train profiles")
    parser.add_argument("--epochs", type=int, default=Training.epochs)
    parser.add_argument("--epoch-variants", type=int, default=Training.epoch_variants, help="windows per epoch")
    parser.add_argument("--folds", type=int, default=3, help="held-out source folds")
    parser.add_argument("--only-fold", type=int, help="run this fold only")
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="training seeds per fold and setting (fold k: seeds n*k .. n*k+n-1); the figure is their mean",
    )
    parser.add_argument(
        "--graft",
        type=float,
        default=Task.graft,
        help="share of training windows (0 to 1) whose leader arm and leg move as in other training windows",
    )
    parser.add_argument("--keypoints-only", action="store_true", help="only the real keypoint files, no pose run")
    parser.add_argument("--channels", default="16,32,64", help="PSGCN channels per stage")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--results", default="results", help="name of the results files in --work (.json, .png)")
    args = parser.parse_args()
    work = Path(args.work)
    if not 0.0 <= args.graft <= 1.0:
        parser.error(f"--graft is a share of the training windows, 0 to 1; got {args.graft}")
    task = Task(graft=args.graft)
    sources = {} if args.keypoints_only else extract_sources(work)
    sources.update(load_keypoint_sources())
    print("sources (frames):", {k: len(v) for k, v in sources.items()})
    channels = tuple(int(c) for c in args.channels.split(","))
    results, summaries = [], []
    for k, test in enumerate(folds_of(sources, args.folds)):
        if args.only_fold is not None and k != args.only_fold:
            continue
        for settings in args.settings.split(","):
            runs = []
            for seed in seeds_of(k, args.seeds):
                cfg = Training(
                    settings=settings,
                    epochs=args.epochs,
                    epoch_variants=args.epoch_variants,
                    seed=seed,
                    channels=channels,
                    threads=args.threads,
                )
                print(f"fold {k} ({settings}, seed {seed}): held out {test}", flush=True)
                r = run_fold(sources, test, task, cfg, log=lambda s: print(s, flush=True))
                r["fold"], r["seed"] = k, seed
                runs.append(r)
                results.append(r)
                print(
                    f"fold {k} ({settings}, seed {seed}): PSGCN SRC {r['psgcn_src']:.3f} (training windows "
                    f"{r['psgcn_train_src']:.3f}) | per-frame SVR "
                    f"{r['per_frame_svr_src']:.3f} | motion-energy SVR {r['svr_energy_src']:.3f} | chance "
                    f"{r['chance_src_mean']:.3f} +- {r['chance_src_std']:.3f} | n_test {r['n_test']} | "
                    f"train {r['train_seconds']:.0f} s",
                    flush=True,
                )
                work.mkdir(parents=True, exist_ok=True)
                summary = {
                    "task": asdict(task),
                    "args": vars(args),
                    "summary": summaries + [summarise(runs)],
                    "folds": [{k: v for k, v in r.items() if k not in ("pred", "target")} for r in results],
                }
                (work / f"{args.results}.json").write_text(json.dumps(summary, indent=1))  # after every run
            summaries.append(summarise(runs))
    print(
        "| fold | held-out clips | settings | PSGCN, mean of seeds (min-max) | ensemble | per-frame SVR | motion-energy SVR | chance |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in summaries:
        held = ", ".join(sorted({clip_of(s) for s in r["test_sources"]}))
        print(
            f"| {r['fold']} | {held} | {r['settings']} | {r['psgcn_src_mean']:.3f} ({r['psgcn_src_min']:.3f}-"
            f"{r['psgcn_src_max']:.3f}) | {r['psgcn_ensemble_src']:.3f} | {r['per_frame_svr_src']:.3f} "
            f"| {r['svr_energy_src']:.3f} | {r['chance_src_mean']:.3f} +- {r['chance_src_std']:.3f} |"
        )
    plot(summaries, work / f"{args.results}.png")
    print(f"wrote {work / args.results}.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
