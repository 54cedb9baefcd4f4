"""``vdv ingest | screen | score | summary``: the rule stages, one thin subcommand each."""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

from pipeline.core import tables
from pipeline.sections import load_config

# -- ingest ---------------------------------------------------------------------------------------


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.stages import rejection_counts, run_ingest

    # [ingest] fields given as options, then the pairing file and the crawl time
    options = {"probe_budget_s": args.probe_budget, "challenge_rule": args.challenge_rule}
    if args.challenge_hashtag:
        options["challenge_hashtags"] = tuple(args.challenge_hashtag)
    options.update(pairing=args.pairing, crawl_time=args.crawl_time, override_file=args.overrides)
    result = run_ingest(args.raw_dir, args.work, load_config(args.config), **options)
    print(
        f"ingest: {len(result.clips)} clip(s) in the manifest, {len(result.rejections)} rejection(s): "
        f"{rejection_counts(result.rejections)}"
    )
    for line in result.metadata_problems():
        print(f"  bad metadata: {line}")
    for row in result.clips:
        if row.get("ingest_override"):
            print(f"  {Path(row['path']).name}: {row['ingest_override_note']}")
    print(f"  tables: {Path(args.work) / 'clips'}  {tables.shard_path(args.work, 'rejections', 'ingest')}")
    return 0


# -- screen ---------------------------------------------------------------------------------------


def cmd_screen(args: argparse.Namespace) -> int:
    from pipeline.stages import pixel_rules, rejection_counts, run_screen

    config = load_config(args.config)
    settings = {"max_followers": args.max_followers, "visual": False if args.no_visual else None}
    visual = pixel_rules(config, args.work, **settings)
    result = run_screen(args.work, config, overrides=args.overrides, pixels=visual, **settings)
    for note in result.notes:
        print(f"screen: NOTE: {note}")
    print(
        f"screen: {len(result.kept)} of {len(result.rows)} clip(s) kept; rejected: {rejection_counts(result.rejections)}"
    )
    if visual is not None:
        print(
            f"screen: pixel rules run on {visual.computed} clip(s), {visual.reused} reused (clip and rules unchanged)"
        )
    return 0


# -- score ----------------------------------------------------------------------------------------


def cmd_score(args: argparse.Namespace) -> int:
    from pipeline.stages import rejection_counts, run_score

    result = run_score(args.work, load_config(args.config), scale=args.scale)
    for warning in result.warnings:
        print(f"score: WARNING: {warning}")
    source = f"stored scale {args.scale}" if args.scale else "scale fitted on the kept clips"
    print(f"score: {len(result.rows)} clip(s) scored on the {source}; rejected: {rejection_counts(result.rejections)}")
    return 0


# -- summary --------------------------------------------------------------------------------------


def summary_lines(work: str | Path) -> list[str]:
    """What a run produced: clips kept, rejections by stage and reason, score range per challenge."""
    clips = tables.read_table(work, tables.CLIPS)
    rejections = tables.read_table(work, tables.REJECTIONS).to_pylist()
    screening = tables.read_table(work, tables.SCREENING).to_pylist()
    scores = tables.read_table(work, tables.SCORES).to_pylist()
    scale = {row["challenge"]: row for row in tables.read_table(work, tables.SCORE_SCALE).to_pylist()}
    lines = [f"work directory: {work}", f"clips in the manifest: {clips.num_rows}"]
    if screening:
        kept = sum(row["kept"] for row in screening)
        overridden = sum(row["override"] is not None for row in screening)
        lines.append(f"clips kept after screening: {kept} of {len(screening)} ({overridden} by reviewer override)")
        evaluated = {rule for row in screening for rule in row["rules_evaluated"]}
        lines.append(f"screening rules evaluated: {', '.join(sorted(evaluated)) or 'none'}")
        if "followers" not in evaluated:
            lines.append("  NOTE: the follower rule was disabled in this run (max_followers = 0)")
    by_stage: dict[str, Counter] = defaultdict(Counter)
    for row in rejections:
        by_stage[row["stage"]][row["reason"]] += 1
    lines.append(f"rejected: {len(rejections)}")
    for stage in sorted(by_stage):
        for reason, n in sorted(by_stage[stage].items()):
            lines.append(f"  {stage:<8} {reason:<24} {n:>5}")
    from pipeline.ingest.stage import metadata_problems

    lines += [f"  bad metadata: {line}" for line in metadata_problems(rejections)]
    if scores:
        lines.append("score range per challenge:")
        per: dict[str, list[dict]] = defaultdict(list)
        for row in scores:
            per[row["challenge"]].append(row)
        for challenge in sorted({c for c in clips.column("challenge").to_pylist() if c} | set(per)):
            rows = per.get(challenge)
            if not rows:
                lines.append(f"  {challenge:<24}    0 clip(s)  none kept by screening: no scale")
                continue
            values = [row["score"] for row in rows]
            raw = [row["raw_score"] for row in rows]
            flags = []
            if any(row["degenerate_challenge"] for row in rows):
                flags.append("degenerate: all raw scores equal")
            if any(row["out_of_scale"] for row in rows):
                flags.append(f"{sum(row['out_of_scale'] for row in rows)} out of scale")
            n_scale = scale.get(challenge, {}).get("n_clips")
            lines.append(
                f"  {challenge:<24} {len(rows):>4} clip(s)  score {min(values):.3f}-{max(values):.3f}  "
                f"raw {min(raw):.3f}-{max(raw):.3f}  (scale of {n_scale} clip(s))"
                + (f"  [{'; '.join(flags)}]" if flags else "")
            )
    return lines


def cmd_summary(args: argparse.Namespace) -> int:
    if not Path(args.work).is_dir():
        raise FileNotFoundError(f"work directory {args.work} does not exist; run `vdv ingest` first")
    print("\n".join(summary_lines(args.work)))
    return 0


# -- registration ---------------------------------------------------------------------------------

# the help line and the description of each subcommand
TEXTS = {
    "ingest": dict(
        help="build the clip manifest (clips table) from raw clips and metadata",
        description=(
            "Probe every clip under RAW_DIR/clips/, match it to its metadata record from\n"
            "RAW_DIR/metadata/ (tiktok-scraper .json, or .csv/.jsonl with the columns video_id,\n"
            "challenge, likes, comments, reposts, create_time, crawl_time, followers), and write\n"
            "the clips table and the ingest rejections (every bad file or record, with a reason)."
        ),
    ),
    "screen": dict(
        help="keep or reject each ingested clip: followers, duration, one dancer, upper body, camera motion",
        description=(
            "Cheap rules first, then the pixel rules on the clips that passed them; a clip is kept\n"
            "only if every rule passes, and every failing rule is recorded with what it measured.\n"
            "\n"
            "cheap rules ([screen]):\n"
            "  followers   the uploader has at most max_followers followers (1000; 0 disables the rule)\n"
            "  duration    the decodable duration is 5 to 60 s (min_duration_s, max_duration_s)\n"
            "pixel rules ([visual]; 3 sampled frames per second, at most 24 a clip):\n"
            "  one_dancer  a person on at least half the sampled frames (min_person_share 0.5) and a\n"
            "              second person, at least 0.4 as tall, on under a quarter of them\n"
            "              (multi_person_share 0.25)\n"
            "  upper_body_visible  head top, upper neck, shoulders, elbows and hips of the main\n"
            "              person at confidence >= 0.5 and inside the frame on at least half the\n"
            "              frames (joint_confidence, min_upper_body_share)\n"
            "  camera_motion  at most 30 % of frame pairs move faster than 0.05 frame diagonals per\n"
            "              second (pans, zoom, rotation; max_moving_share, max_camera_speed), the\n"
            "              view stays within 20 % zoom, 8 degrees of roll and a shift of 20 % of the\n"
            "              width or height from the first frame (max_composed_scale,\n"
            "              max_composed_rotation_deg, max_composed_shift), and no shot cut\n"
            "              (hue-saturation histogram distance above 0.5; max_cuts 0)\n"
            "\n"
            "A reviewer override file wins over the rules (both decisions are stored). Writes the\n"
            "screening table and the screen rejections; `vdv report` shows each decision."
        ),
    ),
    "score": dict(
        help="virality scores of the kept clips: engagement per day, min-max normalised per challenge",
        description=(
            "raw score = ln((likes + comments + reposts + 1) / T), T the days between upload and crawl\n"
            "clipped to 1..7 (popularity accumulates for about a week); the score is the raw score\n"
            "min-max normalised to [0, 1] per challenge over the kept clips (a challenge whose raw\n"
            "scores are all equal gets 0.5 and a warning). Writes the scores table and the scale\n"
            "used (score_scale table), so that later clips can be scored on it (--scale)."
        ),
    ),
    "summary": dict(
        help="print clips kept, rejections by stage and reason, and the score range per challenge",
        description="Print what the run in --work produced: clips kept, rejected by reason (per stage), score range per challenge.",
    ),
}


def register(sub, parent: argparse.ArgumentParser) -> None:
    """ingest, screen and score write the work directory (under its lock); summary reads it."""
    for name, add_options, func, access in (
        ("ingest", _ingest_options, cmd_ingest, "create"),
        ("screen", _screen_options, cmd_screen, "update"),
        ("score", _score_options, cmd_score, "update"),
    ):
        p = sub.add_parser(name, parents=[parent], formatter_class=argparse.RawDescriptionHelpFormatter, **TEXTS[name])
        add_options(p)
        p.set_defaults(func=func, writes_work=name, work_access=access)
    p = sub.add_parser("summary", parents=[parent], **TEXTS["summary"])
    p.set_defaults(func=cmd_summary)


def _ingest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("raw_dir", metavar="RAW_DIR", help="directory holding clips/ and metadata/")
    p.add_argument(
        "--pairing",
        metavar="CSV",
        help="CSV with columns file,video_id[,challenge] mapping clip file names to metadata records "
        "(default: a file's stem is its video id), e.g. data/demo/pairing.csv",
    )
    p.add_argument(
        "--crawl-time",
        metavar="ISO",
        help="crawl time (ISO 8601, e.g. 2021-01-06T15:51:49Z) for records without a crawl_time column; "
        "wins over [ingest] crawl_time and the crawler file-name stamp <name>_<ms>.json",
    )
    p.add_argument(
        "--probe-budget",
        type=float,
        metavar="SECONDS",
        help="wall-clock budget per clip probe (default 60; [ingest] probe_budget_s)",
    )
    p.add_argument(
        "--challenge-rule",
        choices=("none", "music_id", "hashtag"),
        help="how a record without an explicit challenge gets one (default none; [ingest] challenge_rule)",
    )
    p.add_argument(
        "--overrides",
        metavar="CSV",
        help="reviewer overrides, the file screening reads (id,decision,note): a keep admits a clip that "
        "ingest judged a re-encoding of an earlier upload, recorded in its clips row",
    )
    p.add_argument(
        "--challenge-hashtag",
        action="append",
        metavar="TAG",
        help="a hashtag that names a challenge for --challenge-rule hashtag (repeatable; generic tags such as #fyp never count)",
    )


def _screen_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overrides",
        metavar="CSV",
        help="reviewer overrides: columns id (clip id or video id), decision (keep|reject), note; see data/overrides.example.csv",
    )
    p.add_argument("--no-visual", action="store_true", help="skip the pixel rules (same as [screen] visual = false)")
    p.add_argument(
        "--max-followers",
        type=int,
        metavar="N",
        help="most uploader followers a kept clip may have (default 1000; 0 disables the rule)",
    )


def _score_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scale",
        metavar="PATH",
        help="score on a stored scale (a score_scale Parquet file or a work directory) instead of fitting one; "
        "clips outside it are clipped to [0, 1] and flagged out_of_scale",
    )
