"""Evaluation: Spearman rank correlation per track, and the paper's ablations (SPEC section 6).

Tracks: ``all`` (every clip) and one ``challenge-<name>`` track per challenge, each a fixed 80/20
split (:func:`models.data.track_splits`: :mod:`pipeline.scoring.splits`; a release's stored splits win). The paper's protocol trains one
model per track on its train side and reports SRC between predicted and true scores on its test
side (paper section 5.1). :func:`run_protocol` does that for every requested ablation and writes
``results.json`` and ``results.md`` (a Markdown table, one row per ablation, one column per
track); :func:`evaluate_checkpoint` scores one trained model on the test side of its track.

A constant prediction (a collapsed model) has no rank correlation; it is reported as SRC 0 with
``"constant": true`` (Markdown: ``0.000 (constant)``), so it shows instead of hiding as n/a.
SRC is n/a only when it is undefined for any predictor: fewer than two test clips or a constant
truth.

Baselines: every registered model trains through the same protocol (``--model stgcn``, ...);
``model = "svr"`` fits the SVR baseline of :class:`models.baselines.SVRBaseline` per track on the
train side's pooled stream features (mean, std and max over each clip's valid frames of every
selected modality, concatenated) and scores the test side.

Ablation switches (paper Table 5, SPEC section 6): :func:`models.ablations.ablations`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.ablations import ablation_config
from models.data import DataConfig, ViralityDataset, side_ids, track_split, track_splits, train_test_datasets
from models.train import TrainConfig, fit, load_checkpoint, predict
from pipeline.scoring import splits as split_rule

log = logging.getLogger(__name__)


def spearman(pred: Sequence[float], true: Sequence[float]) -> float | None:
    """Spearman rank correlation (SRC, paper section 5.1); None when undefined (<2 clips or a constant side)."""
    from scipy.stats import spearmanr

    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if len(pred) < 2 or np.all(pred == pred[0]) or np.all(true == true[0]):
        return None
    value = float(spearmanr(pred, true).statistic)
    return None if math.isnan(value) else value


def src_report(pred: Sequence[float], true: Sequence[float]) -> dict:
    """``{"src": ..., "constant": bool}``: a constant prediction is SRC 0 flagged ``constant``;
    ``src`` is None only where SRC is undefined whatever the prediction (< 2 clips, constant truth)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if len(pred) < 2 or np.all(true == true[0]):
        return {"src": None, "constant": False}
    if np.all(pred == pred[0]):
        return {"src": 0.0, "constant": True}
    return {"src": spearman(pred, true), "constant": False}


def _report(pred: np.ndarray, ds: ViralityDataset) -> dict:
    """SRC overall and per challenge of predictions ``pred`` for the clips of ``ds``."""
    true = ds.scores
    challenges = [r.challenge for r in ds.records]
    per = {}
    for ch in sorted(set(challenges)):
        idx = [i for i, c in enumerate(challenges) if c == ch]
        per[ch] = {**src_report(pred[idx], true[idx]), "n": len(idx)}
    return {
        **src_report(pred, true),
        "n_test": len(ds),
        "per_challenge": per,
        "predictions": {cid: float(p) for cid, p in zip(ds.clip_ids, pred, strict=True)},
    }


def score_track(model, config: TrainConfig, ds: ViralityDataset) -> dict:
    """SRC of ``model`` on ``ds`` overall and per challenge, plus the predictions."""
    return _report(predict(model, ds, config)["final"], ds)


def pooled_features(ds: ViralityDataset) -> np.ndarray:
    """(N, F) video-level vectors for the SVR baseline: each modality's frames (skeletons as
    (T, 48) rows) pooled over the clip's valid frames, modalities concatenated in order."""
    from models.baselines import pool_sequence

    rows = []
    for i in range(len(ds)):
        item = ds[i]
        parts = []
        for m in ds.modalities:
            x = item[m]
            if x.ndim == 3:  # a skeleton stream: (3, T, 16) -> (T, 16 * 3)
                x = x.transpose(1, 2, 0).reshape(x.shape[1], -1)
            parts.append(pool_sequence(x, item[f"{m}_mask"]))
        rows.append(np.concatenate(parts))
    return np.stack(rows) if rows else np.zeros((0, 0))


def fit_svr(train_ds: ViralityDataset):
    """The SVR baseline fitted on the train side's pooled features (paper section 5.1)."""
    from models.baselines import SVRBaseline

    return SVRBaseline().fit(pooled_features(train_ds), train_ds.scores)


def run_protocol(
    source,
    out_dir: str | Path,
    base: TrainConfig | None = None,
    data_config: DataConfig | None = None,
    *,
    tracks: Sequence[str] | None = None,
    ablations: Sequence[str] = ("full",),
    sections: dict | None = None,
) -> dict:
    """Train and test one model per (ablation, track); write ``results.json`` and ``results.md``.

    ``sections``: the run's TOML mapping, for the models' own sections (``[psgcn]``, ...).
    ``base.model == "svr"`` fits the SVR baseline instead (ablations other than ``full`` do not
    apply to it)."""
    base = base or TrainConfig()
    data_config = data_config or DataConfig()
    out = Path(out_dir)
    splits = track_splits(source)
    tracks = _checked_tracks(tracks, splits)
    if base.model == "svr" and set(ablations) != {"full"}:
        raise ValueError(f"the SVR baseline has no ablations; got {list(ablations)}")
    configs = {name: ablation_config(base, name) for name in ablations}  # every name checked first
    results: dict = {
        "tracks": tracks,
        "ablations": {},
        "train_config": base.as_dict(),
        "data_config": dataclasses.asdict(data_config),
    }
    for name, config in configs.items():
        results["ablations"][name] = {
            track: _run_track(
                source, config, data_config, splits[track], run_dir=out / "runs" / name / track, sections=sections
            )
            for track in tracks
        }
    write_results(results, out)
    return results


def _checked_tracks(tracks: Sequence[str] | None, splits: dict[str, dict[str, str]]) -> list[str]:
    """The requested tracks (default: every track), refusing any the splits do not have."""
    tracks = list(tracks) if tracks else list(splits)
    unknown = sorted(set(tracks) - set(splits))
    if unknown:
        raise ValueError(f"unknown tracks {unknown}; tracks: {sorted(splits)}")
    return tracks


def _run_track(
    source, config: TrainConfig, data_config: DataConfig, split: dict[str, str], *, run_dir: Path, sections
) -> dict:
    """Train on one track's train side (in ``run_dir``) and score its test side."""
    label = f"{run_dir.parent.name} / {run_dir.name}"  # ablation / track
    train_ds, test_ds = train_test_datasets(
        source, config.modalities, side_ids(split, "train"), side_ids(split, "test"), data_config
    )
    if len(train_ds) < 2 or len(test_ds) < 2:
        log.warning("%s: %d train and %d test clips; SRC undefined", label, len(train_ds), len(test_ds))
        return {
            "src": None,
            "n_train": len(train_ds),
            "n_test": len(test_ds),
            "skipped": "fewer than two clips on a side",
        }
    if config.model == "svr":
        scored = _report(fit_svr(train_ds).predict(pooled_features(test_ds)), test_ds)
    else:
        trained = fit(train_ds, config, out_dir=run_dir, data_config=data_config, sections=sections)
        scored = score_track(trained.model, config, test_ds)
        scored["final_loss"] = trained.history[-1]["loss"] if trained.history else None
    scored["n_train"] = len(train_ds)
    log.info("%s: SRC %s on %d test clips", label, scored["src"], scored["n_test"])
    return scored


def evaluate_checkpoint(
    checkpoint: str | Path, source, out_dir: str | Path, *, track: str = split_rule.ALL_TRACK, device: str = "auto"
) -> dict:
    """SRC of a trained checkpoint on the test side of ``track``, overall and per challenge."""
    model, config, data_config, dims = load_checkpoint(checkpoint, device)
    test_ids = side_ids(track_split(source, track), "test")
    ds = ViralityDataset(source, config.modalities, clip_ids=test_ids, config=data_config, dims=dims)
    scored = score_track(model, config, ds)
    results = {
        "tracks": [track],
        "ablations": {"checkpoint": {track: scored}},
        "checkpoint": str(checkpoint),
        "train_config": config.as_dict(),
    }
    write_results(results, Path(out_dir))
    return results


def _fmt(value, constant: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} (constant)" if constant else f"{value:.3f}"


def markdown_table(results: dict) -> str:
    """One row per ablation, one column per track: SRC (test clips)."""
    tracks = results["tracks"]
    lines = ["| model | " + " | ".join(tracks) + " |", "|---|" + "---|" * len(tracks)]
    for name, per_track in results["ablations"].items():
        cells = []
        for t in tracks:
            r = per_track.get(t, {})
            cells.append(f"{_fmt(r.get('src'), bool(r.get('constant')))} (n={r.get('n_test', 0)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return (
        "\n".join(lines)
        + "\n\nSRC: Spearman rank correlation between predicted and true scores on the test side of each track; "
        "(constant): the model predicted one value for every clip (reported as 0).\n"
    )


def write_results(results: dict, out: Path) -> None:
    from pipeline.core.tables import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2, sort_keys=True)))
    atomic_write(out / "results.md", lambda tmp: tmp.write_text(markdown_table(results)))
