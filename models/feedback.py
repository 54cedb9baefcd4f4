"""Action feedback (paper sections 4.2 and 5.3, SPEC section 7).

Action guidance: the gradient of PSGCN's predicted score with respect to every joint's 2D
coordinates in every frame. It says in which direction moving a joint would raise the
predicted virality. The model sees normalised coordinates (:mod:`models.data`); the clip's
centre and scale are held fixed, so the gradient in pixels is the normalised gradient divided
by the clip's scale (the direction is the same). Saved as ``guidance.npy`` ``(T, 16, 2)`` and
``guidance.parquet`` (one row per frame and joint), drawn as arrows on the dancer's frames (PNG
for chosen frames, and an MP4 encoded with PyAV).

Dance tips (paper eq. 9): temporal attention of a challenge = mean over its clips of the
guidance magnitude per joint per frame, the clips brought to one relative-time grid of ``T``
samples by the dataset's uniform sampling, each frame averaged over the clips for which it is a
valid frame; overall attention = per clip the mean over its own valid frames, then the mean over
the challenge's clips, per joint. Padded and invalid frames (no person found) never count.
Saved as ``.npy`` and drawn as heat maps (matplotlib).

The guidance comes from a skeleton model: PSGCN or ST-GCN, or the skeleton stream of the fused
model (:func:`skeleton_model`), whose score is the skeletal part of the multi-dimensional
recommendation (paper section 5.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models import graph
from models.data import NUM_JOINTS, normalize_skeleton
from pipeline.core.tables import atomic_write
from pipeline.modalities import registry

JOINT_NAMES = tuple(name.replace("_", "-") for name in graph.JOINTS)  # plot labels
BONES = graph.EDGES


def skeleton_stream() -> str:
    """The name of the skeleton stream (the registered modality a PSGCN reads: ``pose``), the
    key of its arrays in dataset items."""
    return registry.with_stream("skeleton")[0]


def skeleton_model(model):
    """The skeleton model that action guidance differentiates: the model itself for PSGCN or
    ST-GCN, the skeleton stream of a fused model. Anything else is a ValueError."""
    if getattr(model, "input_kind", None) == "skeleton":
        return model
    if getattr(model, "arch", None) == "multimodal":
        found = [name for name in model.streams if registry.get(name).stream == "skeleton"]
        if not found:
            raise ValueError(f"this fused model has no skeleton stream (streams {list(model.streams)})")
        return model.streams[found[0]]
    raise ValueError(f"a {getattr(model, 'arch', type(model).__name__)} model has no skeleton input to guide")


def guidance(model, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """d score / d (x, y) of every joint in every frame: ``x`` (3, T, 16) -> ``(T, 16, 2)``."""
    import torch

    model.eval()
    param = next(model.parameters())
    device = param.device
    # copies: the arrays may be read-only views of the loader's decoded cache (models.decoded)
    inp = torch.tensor(np.asarray(x), dtype=param.dtype, device=device)[None].requires_grad_(True)
    m = None if mask is None else torch.tensor(np.asarray(mask, dtype=bool), device=device)[None]
    out = model(inp, m)
    score = out.score if hasattr(out, "score") else out
    (grad,) = torch.autograd.grad(score.sum(), inp)
    return grad[0, :2].permute(1, 2, 0).cpu().numpy()  # (T, V, 2)


def clip_guidance(model, rows: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Guidance for a whole clip on its own frame grid: pose rows (T, 48) -> (pixel gradient (T, 16, 2), joints (T, 16, 3), scale)."""
    joints = np.asarray(rows, np.float32).reshape(len(rows), NUM_JOINTS, 3)
    valid = np.asarray(valid, bool)
    norm = normalize_skeleton(joints, valid)
    scale = _scale(joints, norm, valid)
    g = guidance(model, norm.transpose(2, 0, 1), valid) / scale
    g[~valid] = 0.0
    return g, joints, scale


def _scale(joints: np.ndarray, norm: np.ndarray, valid: np.ndarray) -> float:
    # recover the scale normalize_skeleton used, from one valid frame's spread
    a, b = joints[valid][..., :2], norm[valid][..., :2]
    da, db = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    nb = float(np.linalg.norm(db))
    return float(np.linalg.norm(da)) / nb if nb > 0 else 1.0


def save_guidance(out: Path, grad: np.ndarray, joints: np.ndarray, fps: float) -> None:
    """``guidance.npy`` (T, 16, 2) and ``guidance.parquet`` (frame, t, joint, x, y, dx, dy, magnitude)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "guidance.npy", lambda tmp: np.save(open(tmp, "wb"), grad))  # noqa: SIM115
    t, v = grad.shape[:2]
    frame = np.repeat(np.arange(t), v)
    table = pa.table(
        {
            "frame": frame.astype(np.int32),
            "t": (frame / fps).astype(np.float32),
            "joint": np.tile(np.array(JOINT_NAMES), t),
            "x": joints[..., 0].reshape(-1),
            "y": joints[..., 1].reshape(-1),
            "dx": grad[..., 0].reshape(-1),
            "dy": grad[..., 1].reshape(-1),
            "magnitude": np.linalg.norm(grad, axis=-1).reshape(-1),
        }
    )
    atomic_write(out / "guidance.parquet", lambda tmp: pq.write_table(table, tmp))


def draw_arrows(image: np.ndarray, joints: np.ndarray, grad: np.ndarray, length_px: float) -> np.ndarray:
    """Skeleton and one arrow per joint (direction of the gradient, length by magnitude)."""
    import cv2

    img = np.ascontiguousarray(image.copy())
    for a, b in BONES:
        cv2.line(img, tuple(int(v) for v in joints[a, :2]), tuple(int(v) for v in joints[b, :2]), (255, 255, 255), 2)
    for j in range(NUM_JOINTS):
        p = joints[j, :2]
        q = p + grad[j] * length_px
        cv2.circle(img, (int(p[0]), int(p[1])), 3, (0, 255, 0), -1)
        if np.linalg.norm(q - p) >= 1:
            cv2.arrowedLine(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), (255, 0, 0), 2, tipLength=0.3)
    return img


def render(
    video: str | Path,
    out: Path,
    grad: np.ndarray,
    joints: np.ndarray,
    fps: float,
    *,
    frames: Sequence[int] = (),
    max_side: int = 640,
) -> dict:
    """Arrows on the clip's frames (same time grid as the pose shard): PNGs of ``frames`` and an MP4."""
    import av
    import cv2

    from pipeline.core.decode import DecodeParams, iter_samples

    out.mkdir(parents=True, exist_ok=True)
    mag = np.linalg.norm(grad, axis=-1)
    peak = float(mag.max()) if mag.size and mag.max() > 0 else 1.0
    pngs, container, stream, written = [], None, None, 0
    ratio = None
    try:
        for sample in iter_samples(video, DecodeParams(fps=fps, max_side=max_side)):
            k = sample.index
            if k >= len(grad):
                break
            h, w = sample.image.shape[:2]
            # pose rows are in pixels of the native upright frame: scale to the decoded size
            if ratio is None:
                ratio = w / _native_width(video)
            pts = joints[k].copy()
            pts[:, :2] *= ratio
            # arrow length: the clip's largest gradient spans 15 % of the frame height
            img = draw_arrows(sample.image, pts, grad[k] / peak, 0.15 * h)
            if k in set(frames):
                path = out / f"guidance_{k:05d}.png"
                cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                pngs.append(str(path))
            if container is None:
                container = av.open(str(out / "guidance.mp4"), "w")
                stream = container.add_stream("libx264", rate=int(round(fps)))
                stream.width, stream.height, stream.pix_fmt = w // 2 * 2, h // 2 * 2, "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[: h // 2 * 2, : w // 2 * 2]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            written += 1
    finally:
        if container is not None:
            for packet in stream.encode():
                container.mux(packet)
            container.close()
    return {"pngs": pngs, "mp4": str(out / "guidance.mp4") if written else None, "frames": written}


def _native_width(video: str | Path) -> float:
    from pipeline.core.decode import stream_info

    return float(stream_info(video).width)


# -- dance tips -----------------------------------------------------------------------------------


def dance_tips(model, items: Sequence[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per challenge: ``temporal`` (T, 16), ``overall`` (16,) attention and ``clips`` (SPEC section 7).

    ``items`` are dataset items (the skeleton stream's ``pose`` (3, T, 16), ``pose_mask`` (T,),
    ``challenge``; older items may say ``skeletal``).
    Only each clip's valid frames count (paper eq. 9); a frame index no clip has valid stays 0 in
    ``temporal``, and a clip with no valid frame is left out.
    """
    model = skeleton_model(model)
    by: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    name = skeleton_stream()
    for item in items:
        key = name if name in item else "skeletal"
        mask = np.asarray(item[f"{key}_mask"], bool)
        if not mask.any():
            continue
        g = guidance(model, item[key], mask)
        by.setdefault(item["challenge"], []).append((np.linalg.norm(g, axis=-1), mask))
    tips = {}
    for ch, clips in sorted(by.items()):
        mags = np.stack([m for m, _ in clips])  # (clips, T, 16)
        masks = np.stack([v for _, v in clips]).astype(np.float64)  # (clips, T)
        per_frame = masks.sum(axis=0)  # how many clips have frame t valid
        temporal = (mags * masks[..., None]).sum(axis=0) / np.maximum(per_frame, 1.0)[:, None]
        per_clip = (mags * masks[..., None]).sum(axis=1) / masks.sum(axis=1)[:, None]  # (clips, 16)
        tips[ch] = {"temporal": temporal, "overall": per_clip.mean(axis=0), "clips": np.array(len(clips))}
    return tips


def save_tips(out: Path, tips: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """``tips_<challenge>_temporal.npy``/``.png`` per challenge and ``tips_overall.npy``/``.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.scoring.splits import challenge_track

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for ch, t in tips.items():
        stem = challenge_track(ch)
        np.save(out / f"tips_{stem}_temporal.npy", t["temporal"])
        fig, ax = plt.subplots(figsize=(8, 4))
        im = ax.imshow(t["temporal"].T, aspect="auto", cmap="hot", interpolation="nearest")
        ax.set_yticks(range(NUM_JOINTS), JOINT_NAMES, fontsize=7)
        ax.set_xlabel("frame (relative time grid)")
        ax.set_title(f"temporal attention: {ch} ({int(t['clips'])} clips)")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(out / f"tips_{stem}_temporal.png", dpi=100)
        plt.close(fig)
        written.append(str(out / f"tips_{stem}_temporal.png"))
    names = list(tips)
    overall = np.stack([tips[c]["overall"] for c in names]) if names else np.zeros((0, NUM_JOINTS))
    np.save(out / "tips_overall.npy", overall)
    fig, ax = plt.subplots(figsize=(8, 1 + 0.4 * max(len(names), 1)))
    im = ax.imshow(overall, aspect="auto", cmap="hot", interpolation="nearest")
    ax.set_xticks(range(NUM_JOINTS), JOINT_NAMES, rotation=60, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title("overall attention per joint and challenge")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "tips_overall.png", dpi=100)
    plt.close(fig)
    written.append(str(out / "tips_overall.png"))
    return written
