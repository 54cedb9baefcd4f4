"""Sports rating extension (SPEC section 8): AQA-7 / UNLV-Sports as distributed.

Layout read (as the AQA-7 archive unpacks)::

    <root>/Seven/<class>-out/<NNN>/img_<xxxxx>.jpg      frames of sample NNN (1-based, 3 digits)
    <root>/Split_4/split_4_train_list.mat                key consolidated_train_list
    <root>/Split_4/split_4_test_list.mat                 key consolidated_test_list

Each split row is ``(class index, sample number, score)``. Class indices are 1-based in the
order of the AQA-7 paper (Parmar and Morris, 2019): diving, gym vault, ski big air, snowboard
big air, synchronised diving 3 m, synchronised diving 10 m, trampoline. Expert scores are not
bounded by 100 (synchronised diving goes above it), so they are kept raw and normalised per
class by min-max for training, like VDV's per-challenge scores (paper eq. 2). The min and max
are those of the class's **train** samples only: test scores never shape the scale. A test
score outside the train range keeps its linear value (so its rank is exact) and is flagged
``out_of_scale``; a class with no train sample has no scale, and its samples are rejected
(``no_scale``). Rows can repeat in
the distributed lists: they are deduplicated on (class, sample), the first row winning; a
repeated row whose score differs is reported, not silently merged.

The same framework runs with the pose (skeleton) and holistic streams only (SPEC section 8). A
sample's clip id is the sha256 of ``aqa7/<class>/<NNN>``. Ingesting, extracting and scoring the
samples is the AQA-7 recipe of :mod:`flows.sports` (:func:`flows.sports.prepare_aqa7`), which
runs the pipeline's own extraction and score stages; this module reads the dataset and trains
and evaluates on what the recipe prepared.

Training and evaluation (:func:`train_sports`): the Split_4 train samples train the model (by
default the attentive fusion of PSGCN and the holistic RTCN, :mod:`models.train`), the Split_4
test samples are scored, and SRC is reported per class, over all test samples, and as the mean
of the per-class SRCs through Fisher's z (the AQA-7 convention, Parmar and Morris, 2019). One
model is trained over all classes on per-class normalised scores (like VDV's all-challenge
track), or one per class with ``per_class=True`` (like the single-challenge tracks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data import DataConfig, WorkDirSource, train_test_datasets
from models.evaluate import spearman
from models.train import TrainConfig, fit, predict
from pipeline.core import tables
from pipeline.core.errors import Reason
from pipeline.modalities import holistic, pose

log = logging.getLogger(__name__)

AQA7_CLASSES: tuple[str, ...] = (
    "diving",
    "gym_vault",
    "ski_big_air",
    "snowboard_big_air",
    "sync_diving_3m",
    "sync_diving_10m",
    "trampoline",
)
SPLIT_FILES = {
    "train": ("split_4_train_list.mat", "consolidated_train_list"),
    "test": ("split_4_test_list.mat", "consolidated_test_list"),
}
# the skeleton and holistic streams only (SPEC section 8), named by their records
STREAMS: tuple[str, ...] = (pose.MODALITY.name, holistic.MODALITY.name)


@dataclass(frozen=True)
class SportsConfig:
    """How AQA-7 samples become clips. Config section ``[sports]``."""

    fps: float = 25.0  # rate at which a sample's frames are played (one frame per grid step)
    classes: tuple[str, ...] = AQA7_CLASSES  # folder stem of class index i+1 is classes[i]


@dataclass(frozen=True)
class SportsSample:
    class_index: int  # 1-based, as in the split files
    sample: int  # 1-based sample number: folder NNN
    score: float  # expert score, raw
    split: str
    frames_dir: Path
    class_name: str

    @property
    def clip_id(self) -> str:
        return hashlib.sha256(f"aqa7/{self.class_name}/{self.sample:03d}".encode()).hexdigest()


def read_split(
    root: str | Path, split: str, config: SportsConfig = SportsConfig()
) -> tuple[list[SportsSample], list[dict]]:
    """Samples of one split, deduplicated on (class, sample); also the problems found, as records.

    A problem (unknown class, missing frame folder, conflicting duplicate) is returned with a
    reason, never raised for the whole split and never dropped silently.
    """
    seen: dict[tuple[int, int], float] = {}
    samples: list[SportsSample] = []
    problems: list[dict] = []
    for cls, num, score in _split_rows(root, split):
        key = (int(round(cls)), int(round(num)))
        if key in seen:
            if seen[key] != float(score):
                problems.append(
                    _problem(*key, Reason.CONFLICTING_DUPLICATE.value, f"score {score} after {seen[key]}; first kept")
                )
            continue
        seen[key] = float(score)
        found = _sample(root, split, *key, float(score), config)
        (samples if isinstance(found, SportsSample) else problems).append(found)
    for p in problems:
        log.warning(
            "AQA-7 %s split: class %s sample %s: %s (%s)",
            split,
            p["class_index"],
            p["sample"],
            p["reason"],
            p["message"],
        )
    return samples, problems


def _split_rows(root: str | Path, split: str) -> np.ndarray:
    """(N, 3) rows (class index, sample number, score) of a split file, as distributed."""
    from scipy.io import loadmat

    filename, key = SPLIT_FILES[split]
    path = Path(root) / "Split_4" / filename
    mat = loadmat(path)
    if key not in mat:
        raise KeyError(f"{path}: no key {key!r} (keys: {sorted(k for k in mat if not k.startswith('__'))})")
    return np.asarray(mat[key], dtype=np.float64).reshape(-1, 3)


def _problem(class_index: int, sample: int, reason: str, message: str) -> dict:
    return {"class_index": class_index, "sample": sample, "reason": reason, "message": message}


def _sample(
    root: str | Path, split: str, class_index: int, sample: int, score: float, config: SportsConfig
) -> SportsSample | dict:
    """The sample of one split row, or the problem that keeps it out (unknown class, no frames)."""
    if not 1 <= class_index <= len(config.classes):
        return _problem(class_index, sample, Reason.UNKNOWN_CLASS.value, f"class index {class_index}")
    name = config.classes[class_index - 1]
    frames = Path(root) / "Seven" / f"{name}-out" / f"{sample:03d}"
    if not frames.is_dir() or not any(frames.glob("img_*.jpg")):
        return _problem(class_index, sample, Reason.NO_CLIP.value, f"no frames in {frames}")
    return SportsSample(class_index, sample, score, split, frames, name)


def class_scales(samples: Iterable[SportsSample]) -> dict[int, tuple[float, float]]:
    """class index -> (min, max) expert score over the **train** samples of ``samples``."""
    scales: dict[int, tuple[float, float]] = {}
    for s in samples:
        if s.split != "train":
            continue
        lo, hi = scales.get(s.class_index, (s.score, s.score))
        scales[s.class_index] = (min(lo, s.score), max(hi, s.score))
    return scales


def normalised_scores(samples: Iterable[SportsSample]) -> dict[str, float]:
    """clip id -> per-class min-max score on the class's train scale (:func:`class_scales`):
    train samples land in [0, 1], test samples may fall outside it; 0.5 for a class whose train
    scores are all equal. Samples of a class without train samples are left out."""
    samples = list(samples)
    scales = class_scales(samples)
    out: dict[str, float] = {}
    for s in samples:
        if s.class_index not in scales:
            continue
        lo, hi = scales[s.class_index]
        out[s.clip_id] = 0.5 if hi == lo else (s.score - lo) / (hi - lo)
    return out


# -- training and evaluation on Split_4 -----------------------------------------------------------


def split_ids(root: str | Path, config: SportsConfig = SportsConfig()) -> dict[str, list[str]]:
    """Clip ids of the Split_4 train and test samples (read from the split files, no extraction)."""
    return {split: [s.clip_id for s in read_split(root, split, config)[0]] for split in ("train", "test")}


def fisher_mean(values: Iterable[float | None]) -> float | None:
    """Mean of correlations through Fisher's z (the AQA-7 average over classes); None if none."""
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    z = [math.atanh(min(max(v, -0.9999), 0.9999)) for v in kept]  # |SRC| = 1 has an infinite z
    # the mean of z lies between the extremes; the clamp above must not push it outside them
    return min(max(math.tanh(sum(z) / len(z)), min(kept)), max(kept))


def train_sports(
    root: str | Path,
    work: str | Path,
    out_dir: str | Path,
    train_config: TrainConfig | None = None,
    data_config: DataConfig | None = None,
    *,
    config: SportsConfig = SportsConfig(),
    per_class: bool = False,
) -> dict:
    """Train on the Split_4 train samples of ``work`` (prepared by :func:`flows.sports.prepare_aqa7`), score
    the Split_4 test samples; SRC per class, overall and the Fisher-z mean over classes.

    ``train_config`` is a :class:`models.train.TrainConfig` (default: the paper's training with
    the multimodal model on the pose and holistic streams); its modalities must be among
    :data:`STREAMS` (older names such as ``skeletal`` are read). Writes ``<out_dir>/results.json``, ``results.md`` and one run directory per
    trained model (checkpoint and GradNorm log). Samples without features (rejected while
    preparing) are left out and counted in ``skipped``.
    """
    train_config = _sports_train_config(train_config)
    data_config = data_config or DataConfig()
    out = Path(out_dir)
    source = WorkDirSource(work)
    ids = split_ids(root, config)
    records = {r.clip_id: r for r in source.records()}
    groups = sorted({records[c].challenge for c in ids["train"] if c in records}) if per_class else ["all"]
    results: dict = {
        "train_config": train_config.as_dict(),
        "data_config": dataclasses.asdict(data_config),
        "per_class_models": per_class,
        "skipped": 0,
    }
    predictions: dict[str, float] = {}
    for group in groups:
        wanted = {
            side: [c for c in ids[side] if group == "all" or (c in records and records[c].challenge == group)]
            for side in ("train", "test")
        }
        predicted, skipped = _train_group(source, wanted, train_config, data_config, out / "runs" / group)
        predictions.update(predicted)
        results["skipped"] += skipped
    results.update(_sports_scores(ids, records, predictions))
    results["predictions"] = predictions
    _write_results(results, out)
    return results


def _sports_train_config(train_config: TrainConfig | None) -> TrainConfig:
    """The training config for sports: the fused model on :data:`STREAMS` by default; refuses other streams."""
    train_config = train_config or TrainConfig(model="multimodal", modalities=STREAMS)
    if train_config.model == "multimodal" and train_config.modalities == TrainConfig().modalities:
        train_config = dataclasses.replace(train_config, modalities=STREAMS)  # the paper's default has four
    extra = sorted(set(train_config.modalities) - set(STREAMS))
    if extra:
        raise ValueError(f"sports rating uses the streams {list(STREAMS)} only (SPEC section 8), not {extra}")
    return train_config


def _train_group(
    source: WorkDirSource,
    wanted: dict[str, list[str]],
    train_config: TrainConfig,
    data_config: DataConfig,
    run_dir: Path,
) -> tuple[dict[str, float], int]:
    """Train one model on the ``wanted`` train samples (in ``run_dir``) and predict the test
    ones; returns (clip id -> prediction, samples left out for lack of features)."""
    train_ds, test_ds = train_test_datasets(
        source, train_config.modalities, wanted["train"], wanted["test"], data_config
    )
    skipped = len(train_ds.skipped) + len(test_ds.skipped)
    if len(train_ds) < 2 or len(test_ds) == 0:
        log.warning("sports %s: %d train and %d test samples; not trained", run_dir.name, len(train_ds), len(test_ds))
        return {}, skipped
    trained = fit(train_ds, train_config, out_dir=run_dir, data_config=data_config)
    pred = predict(trained.model, test_ds, train_config)["final"]
    return {cid: float(p) for cid, p in zip(test_ds.clip_ids, pred, strict=True)}, skipped


def _sports_scores(ids: dict[str, list[str]], records: dict, predictions: dict[str, float]) -> dict:
    """SRC with the expert scores per class, over all test samples that got a prediction, and
    the Fisher-z mean over classes."""
    tested = [c for c in ids["test"] if c in predictions]
    classes = {}
    for cls in sorted({records[c].challenge for c in tested}):
        idx = [c for c in tested if records[c].challenge == cls]
        classes[cls] = {
            "src": spearman([predictions[c] for c in idx], [records[c].score for c in idx]),
            "n_test": len(idx),
            "n_train": sum(c in records and records[c].challenge == cls for c in ids["train"]),
        }
    return {
        "classes": classes,
        "all": {
            "src": spearman([predictions[c] for c in tested], [records[c].score for c in tested]),
            "n_test": len(tested),
        },
        "mean_src_fisher_z": fisher_mean(r["src"] for r in classes.values()),
    }


def markdown(results: dict) -> str:
    """One row per class, then all test samples and the Fisher-z mean."""

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    lines = ["| class | SRC | test samples | train samples |", "|---|---|---|---|"]
    for cls, r in results["classes"].items():
        lines.append(f"| {cls} | {fmt(r['src'])} | {r['n_test']} | {r['n_train']} |")
    lines.append(f"| all test samples | {fmt(results['all']['src'])} | {results['all']['n_test']} | |")
    lines.append(f"| mean over classes (Fisher z) | {fmt(results['mean_src_fisher_z'])} | | |")
    return "\n".join(lines) + "\n\nSRC: Spearman rank correlation with the expert scores on AQA-7 Split_4 test.\n"


def _write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tables.atomic_write(out / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2, sort_keys=True)))
    tables.atomic_write(out / "results.md", lambda tmp: tmp.write_text(markdown(results)))
