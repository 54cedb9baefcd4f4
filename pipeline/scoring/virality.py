"""Virality scores (SPEC section 3, paper eq. 1-2).

Raw score (paper eq. 1; choice of form and constants in SPEC section 3)::

    s_raw = ln((w_L * L + w_C * C + w_R * R + 1) / clip(T, t_min, t_max))

with likes L, comments C, reposts R and the existing time T in days (crawl time minus create
time). Popularity accumulates for about a week, so T is clipped to [1, 7] days: a clip younger
than a day is not rewarded for its youth, one older than a week is not penalised for its age.

Final score (paper eq. 2): per-challenge min-max normalisation ``(s_raw - min_c) / (max_c -
min_c)`` in [0, 1]. The min and max are taken over the clips that passed screening, so rejected
clips never set the scale. A challenge whose raw scores are all equal gets 0.5 for every clip
and a warning. The scale is stored (``score_scale`` table) so that later clips are scored on
the same one; a clip outside it is clipped to [0, 1] and flagged ``out_of_scale``.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.core import tables
from pipeline.core.config import ConfigError
from pipeline.core.errors import Reason, rejection_row

log = logging.getLogger(__name__)

STAGE = "score"
DEGENERATE_SCORE = 0.5  # SPEC section 3: a challenge whose raw scores are all equal


@dataclass(frozen=True)
class ScoreConfig:
    """``[score]`` section of the configuration file."""

    # existing time is clipped to [t_min_days, t_max_days] (SPEC section 3: 1 and 7 days)
    t_min_days: float = 1.0
    t_max_days: float = 7.0
    # indicator weights in the raw score (SPEC section 3: 1 each)
    like_weight: float = 1.0
    comment_weight: float = 1.0
    repost_weight: float = 1.0

    def __post_init__(self):
        if not 0 < self.t_min_days <= self.t_max_days:
            raise ValueError(f"[score] needs 0 < t_min_days <= t_max_days, got {self.t_min_days}, {self.t_max_days}")
        if min(self.like_weight, self.comment_weight, self.repost_weight) < 0:
            raise ValueError("[score] indicator weights must not be negative")

    def params(self) -> str:
        """The configuration as stored with a scale: a scale only serves raw scores made alike."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class ChallengeScale:
    challenge: str
    raw_min: float
    raw_max: float
    n_clips: int

    @property
    def degenerate(self) -> bool:
        return self.raw_max <= self.raw_min


@dataclass
class ScoreResult:
    rows: list[dict] = field(default_factory=list)  # rows of tables.SCORES
    scale: dict[str, ChallengeScale] = field(default_factory=dict)
    rejections: list[dict] = field(default_factory=list)  # stage "score"
    warnings: list[str] = field(default_factory=list)


def existing_days(create_time: datetime, crawl_time: datetime) -> float:
    """T in days: crawl time minus create time (not clipped)."""
    return (crawl_time - create_time).total_seconds() / 86400.0


def raw_score(likes: int, comments: int, reposts: int, days: float, config: ScoreConfig = ScoreConfig()) -> float:
    """Paper eq. 1 with the existing time clipped to [t_min, t_max] days."""
    clipped = min(max(days, config.t_min_days), config.t_max_days)
    engagement = config.like_weight * likes + config.comment_weight * comments + config.repost_weight * reposts
    return math.log((engagement + 1.0) / clipped)


def fit_scale(raws: Mapping[str, Iterable[float]]) -> dict[str, ChallengeScale]:
    """Per-challenge min and max of the raw scores (the clips that passed screening)."""
    scale = {}
    for challenge, values in raws.items():
        values = list(values)
        if values:
            scale[challenge] = ChallengeScale(challenge, min(values), max(values), len(values))
    return scale


def normalise(raw: float, scale: ChallengeScale) -> tuple[float, bool]:
    """Paper eq. 2 on ``scale``: (score in [0, 1], out_of_scale)."""
    if scale.degenerate:
        if raw == scale.raw_min:
            return DEGENERATE_SCORE, False
        return (1.0 if raw > scale.raw_max else 0.0), True
    score = (raw - scale.raw_min) / (scale.raw_max - scale.raw_min)
    if score < 0.0 or score > 1.0:
        return min(max(score, 0.0), 1.0), True
    return score, False


def score_clips(
    clips: Iterable[Mapping[str, Any]],
    config: ScoreConfig = ScoreConfig(),
    *,
    kept: Iterable[str] | None = None,
    scale: Mapping[str, ChallengeScale] | None = None,
    output_dir: str | Path | None = None,
) -> ScoreResult:
    """Score the clips whose id is in ``kept`` (all when None), on a fitted or a stored scale.

    Without ``scale`` the per-challenge scale is fitted on the scored clips (the dataset); with
    it, clips are scored on it and those outside it are clipped and flagged, and a clip whose
    challenge the scale lacks is rejected as ``NO_SCALE``.
    """
    keep = None if kept is None else set(kept)
    rows = [clip for clip in clips if keep is None or clip["clip_id"] in keep]
    result = ScoreResult()
    raws: dict[str, list[float]] = defaultdict(list)
    scored = []
    for clip in rows:
        if not clip.get("challenge"):
            result.rejections.append(_rejection(clip, Reason.NO_CHALLENGE, "clip has no challenge"))
            continue
        days = existing_days(clip["create_time"], clip["crawl_time"])
        raw = raw_score(clip["likes"], clip["comments"], clip["reposts"], days, config)
        scored.append((clip, days, raw))
        raws[clip["challenge"]].append(raw)

    if scale is None:
        result.scale = fit_scale(raws)
        for s in result.scale.values():
            if s.degenerate:
                message = f"challenge {s.challenge}: all {s.n_clips} raw score(s) equal ({s.raw_min:.4f}); every clip scores {DEGENERATE_SCORE}"
                result.warnings.append(message)
                log.warning(message)
    else:
        result.scale = dict(scale)

    for clip, days, raw in scored:
        challenge_scale = result.scale.get(clip["challenge"])
        if challenge_scale is None:
            result.rejections.append(
                _rejection(clip, Reason.NO_SCALE, f"the stored scale has no challenge {clip['challenge']!r}")
            )
            continue
        score, out_of_scale = normalise(raw, challenge_scale)
        result.rows.append(
            {
                "clip_id": clip["clip_id"],
                "video_id": clip.get("video_id"),
                "challenge": clip["challenge"],
                "existing_days": days,
                "raw_score": raw,
                "score": score,
                "out_of_scale": out_of_scale,
                "degenerate_challenge": challenge_scale.degenerate,
            }
        )
    n_out = sum(row["out_of_scale"] for row in result.rows)
    if n_out:
        result.warnings.append(
            f"{n_out} clip(s) outside the stored scale were clipped to [0, 1] (flagged out_of_scale)"
        )
    if output_dir is not None:
        write_scores(result, config, output_dir)
    return result


def _rejection(clip: Mapping[str, Any], reason: Reason, message: str) -> dict:
    return rejection_row(
        STAGE, reason, message, clip_id=clip["clip_id"], video_id=clip.get("video_id"), path=clip.get("path")
    )


# -- the stored scale -----------------------------------------------------------------------------


def scale_rows(scale: Mapping[str, ChallengeScale], config: ScoreConfig | str) -> list[dict]:
    params = config if isinstance(config, str) else config.params()
    return [
        {"challenge": s.challenge, "raw_min": s.raw_min, "raw_max": s.raw_max, "n_clips": s.n_clips, "params": params}
        for s in sorted(scale.values(), key=lambda s: s.challenge)
    ]


def read_scale(path: str | Path, config: ScoreConfig) -> dict[str, ChallengeScale]:
    """A stored scale: a ``score_scale`` Parquet file, its table directory or a work directory.

    Raises :class:`ConfigError` when the scale was fitted with another score configuration:
    its raw scores would not be comparable.
    """
    path = Path(path)
    if path.is_dir():
        # the table directory itself, or a work directory holding it
        root = path.parent if path.name == tables.SCORE_SCALE.name else path
        table = tables.read_table(root, tables.SCORE_SCALE)
    elif not path.exists():
        raise FileNotFoundError(f"score scale {path} does not exist")
    else:
        table = tables.read_file(path, tables.SCORE_SCALE)
    if table.num_rows == 0:
        raise FileNotFoundError(f"no stored score scale in {path}")
    scale = {}
    for row in table.to_pylist():
        if json.loads(row["params"]) != json.loads(config.params()):
            raise ConfigError(
                f"{path}: scale of {row['challenge']!r} was fitted with {row['params']}, this run uses {config.params()}"
            )
        scale[row["challenge"]] = ChallengeScale(row["challenge"], row["raw_min"], row["raw_max"], row["n_clips"])
    return scale


def write_scores(
    result: ScoreResult, config: ScoreConfig | str, work: str | Path, *, stage: str = STAGE
) -> tuple[Path, Path, Path]:
    """Write ``scores``, the scale used (``score_scale``) and the rejections of ``stage``
    (``rejections.<stage>``). ``config``: the score configuration, or the JSON that says how
    another scale was made (the sports benchmark's expert scores)."""
    scores = tables.replace_table(result.rows, tables.SCORES, work)
    scale = tables.replace_table(scale_rows(result.scale, config), tables.SCORE_SCALE, work)
    rejected = tables.write_table(result.rejections, tables.REJECTIONS, tables.shard_path(work, "rejections", stage))
    return scores, scale, rejected
