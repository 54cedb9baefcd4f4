"""``vdv train``, ``vdv evaluate``, ``vdv feedback``, ``vdv sports``: thin wrappers over
models.train/evaluate/feedback/sports."""

from __future__ import annotations

import argparse
import functools
import json
import sys

# cheap (no torch): importing models also registers its configuration sections ([train], [data],
# [sports], [psgcn], ...) with pipeline.core.config, so every command's check of --config knows them
from models.ablations import ablations


def register(subparsers, parent: argparse.ArgumentParser) -> None:
    for add in (_add_train, _add_evaluate, _add_feedback, _add_sports):
        add(subparsers, parent)


def _add_train(subparsers, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "train",
        parents=[parent],
        help="train a virality model on a track's train split",
        description=(
            "Train a virality model on a track's train split. The first epoch decodes each feature file "
            "once, after checking it against its recorded sha256, into a decoded cache that later epochs "
            "and runs read back: $VDV_DECODED_CACHE (off turns it off), else $XDG_CACHE_HOME/vdv/decoded "
            "or ~/.cache/vdv/decoded. It takes about the features' size in float32 (9-14 GB for VDV's "
            "4,292 clips), at most $VDV_DECODED_CACHE_MAX_GB GiB (default 32; the least recently read "
            "copies go first); remove the folder to clear it (docs/SCALE.md)."
        ),
    )
    p.add_argument("--source", help="work directory or release directory with features and scores (default: --work)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory: checkpoint.pt, train_log.jsonl")
    p.add_argument(
        "--track",
        default="all",
        help="all (every challenge) or challenge-<name> (one challenge): the 80/20 split of that track",
    )
    p.add_argument("--model", help="multimodal (default), psgcn, stgcn, rtcn, tcn, lstm")
    p.add_argument("--modalities", help="comma-separated streams, e.g. pose,holistic")
    p.add_argument("--epochs", type=int, help="epochs to train (default: [train] epochs of --config)")
    p.add_argument(
        "--profile",
        help="training profile: paper (Adam 1e-4, batch 8, dropout 0.5; the default) or small-data (lr 1e-3, batch 32, no dropout)",
    )
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.set_defaults(
        func=_train,
        output_dirs=("out",),
        # a checkpoint is written atomically after each epoch: Ctrl-C never leaves half of one
        stop_note="--out keeps the checkpoint of the last finished epoch, if any; --resume continues from it",
    )


def _add_evaluate(subparsers, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("evaluate", parents=[parent], help="SRC per track, with the paper's ablations")
    p.add_argument("--source", help="work or release directory (default: --work)")
    p.add_argument("--out", required=True, metavar="DIR", help="where results.json and results.md go")
    p.add_argument("--checkpoint", help="score this trained model on the test side of --track instead of training")
    p.add_argument("--tracks", help="comma-separated tracks (default: every track)")
    p.add_argument("--track", default="all", help="track of --checkpoint")
    p.add_argument("--ablations", default="full", help="comma-separated: " + ",".join(ablations()))
    p.add_argument(
        "--model",
        help="multimodal (default), psgcn, stgcn, rtcn, tcn, lstm, or svr (the SVR baseline on pooled features)",
    )
    p.add_argument("--modalities", help="comma-separated streams, e.g. pose,holistic")
    p.add_argument(
        "--epochs", type=int, help="epochs per (ablation, track) model (default: [train] epochs of --config)"
    )
    p.add_argument("--profile", help="training profile: paper (the default) or small-data")
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda")
    p.set_defaults(func=_evaluate, output_dirs=("out",))


def _add_feedback(subparsers, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "feedback",
        parents=[parent],
        help="action guidance arrows and dance-tip heat maps from a PSGCN, ST-GCN or fused-model checkpoint",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint of vdv train with a skeleton model (psgcn, stgcn) or the fused model (its skeleton stream)",
    )
    p.add_argument("--source", help="work directory with pose shards (default: --work)")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="where guidance arrays, PNGs, the MP4 and dance-tip heat maps go"
    )
    p.add_argument("--clip", help="clip id for action guidance (needs --video)")
    p.add_argument("--video", help="the clip's video file, to draw the arrows on")
    p.add_argument("--frames", default="0", help="comma-separated frame indices saved as PNG")
    p.add_argument("--tips", action="store_true", help="also compute dance tips per challenge over every clip")
    p.set_defaults(func=_feedback, output_dirs=("out",))


def _add_sports(subparsers, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "sports",
        parents=[parent],
        help="AQA-7 sports rating (pose and holistic streams): extract, train on Split_4 train, SRC per class on Split_4 test",
    )
    p.add_argument("root", metavar="AQA7_ROOT", help="the unpacked AQA-7 tree (Seven/, Split_4/)")
    p.add_argument("--out", required=True, metavar="DIR", help="results.json, results.md and runs/<model>/")
    p.add_argument("--model", help="multimodal (default: pose + holistic fusion), psgcn, rtcn, tcn, lstm")
    p.add_argument("--modalities", help="comma-separated streams among pose,holistic (default: both)")
    p.add_argument("--epochs", type=int, help="epochs to train (default: [train] epochs of --config)")
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--per-class", action="store_true", help="one model per class instead of one over all classes")
    p.add_argument("--skip-extract", action="store_true", help="train on the shards already in --work")
    p.add_argument(
        "--untrained", action="store_true", help="holistic features from seeded random weights (explicit only)"
    )
    p.set_defaults(func=_sports, work_access="create", output_dirs=("out",))


def _usage_errors(func):
    """A bad argument value (unknown track, model or modality) is one line and exit code 2."""

    @functools.wraps(func)
    def run(args) -> int:
        try:
            return func(args)
        except ValueError as err:
            print(f"vdv {args.command}: error: {err}", file=sys.stderr)
            return 2

    return run


def _configs(args):
    """(TrainConfig, DataConfig, the whole TOML mapping for the model sections)."""
    from models.data import DataConfig
    from models.train import TrainConfig
    from pipeline.core.config import stage_config
    from pipeline.sections import load_config

    cfg = load_config(args.config)
    mods = tuple(args.modalities.split(",")) if getattr(args, "modalities", None) else None
    train = stage_config(
        TrainConfig,
        cfg,
        "train",
        model=getattr(args, "model", None),
        modalities=mods,
        epochs=args.epochs,
        device=args.device,
        profile=getattr(args, "profile", None),
    )
    train.resolved()  # an unknown profile is a usage error before any work
    return train, stage_config(DataConfig, cfg, "data"), cfg


@_usage_errors
def _train(args) -> int:
    from models.data import open_source
    from models.train import train_track

    train, data, cfg = _configs(args)
    result = train_track(
        open_source(args.source or args.work), args.track, args.out, train, data, resume=args.resume, sections=cfg
    )
    print(json.dumps({"checkpoint": str(result.checkpoint), "history": result.history}, indent=2))
    return 0


@_usage_errors
def _evaluate(args) -> int:
    from models.data import open_source
    from models.evaluate import evaluate_checkpoint, markdown_table, run_protocol

    source = open_source(args.source or args.work)
    if args.checkpoint:
        results = evaluate_checkpoint(args.checkpoint, source, args.out, track=args.track, device=args.device or "auto")
    else:
        train, data, cfg = _configs(args)
        tracks = args.tracks.split(",") if args.tracks else None
        results = run_protocol(
            source, args.out, train, data, tracks=tracks, ablations=args.ablations.split(","), sections=cfg
        )
    print(markdown_table(results))
    return 0


@_usage_errors
def _feedback(args) -> int:
    from pathlib import Path

    from models import feedback
    from models.data import ViralityDataset, open_source
    from models.train import load_checkpoint

    model, config, data_config, _ = load_checkpoint(args.checkpoint, "cpu")
    model = feedback.skeleton_model(model)  # a fused model gives its skeleton stream
    source = open_source(args.source or args.work)
    out = Path(args.out)
    stream = feedback.skeleton_stream()
    if args.clip:
        loaded = source.load(stream, args.clip)
        if loaded is None:
            print(f"vdv feedback: no {stream} shard for clip {args.clip}")
            return 2
        grad, joints, _ = feedback.clip_guidance(model, *loaded)
        fps = source.rate(stream) or 25.0  # the skeleton stream's time grid (SPEC section 4: 25 fps)
        feedback.save_guidance(out, grad, joints, fps)
        if args.video:
            drawn = feedback.render(
                args.video, out, grad, joints, fps, frames=[int(f) for f in args.frames.split(",") if f]
            )
            print(json.dumps(drawn, indent=2))
    if args.tips:
        ds = ViralityDataset(source, (stream,), config=data_config)
        print(
            json.dumps(feedback.save_tips(out, feedback.dance_tips(model, [ds[i] for i in range(len(ds))])), indent=2)
        )
    return 0


@_usage_errors
def _sports(args) -> int:
    from models import sports
    from pipeline.core.config import stage_config

    train, data, cfg = _configs(args)
    sports_config = stage_config(sports.SportsConfig, cfg, "sports")
    if args.modalities is None and train.model == "multimodal":
        import dataclasses

        train = dataclasses.replace(train, modalities=sports.STREAMS)
    if not args.skip_extract:
        from pipeline.extraction.stage import plan_extraction

        device = None if args.device in (None, "auto") else args.device
        plan = plan_extraction(train.modalities, cfg, untrained=args.untrained, device=device)
        from flows.sports import prepare_aqa7

        prep = prepare_aqa7(args.root, args.work, plan, sports_config)
        print(f"sports: {len(prep['train'])} train and {len(prep['test'])} test samples; {prep['rejected']} rejected")
    results = sports.train_sports(
        args.root, args.work, args.out, train, data, config=sports_config, per_class=args.per_class
    )
    print(sports.markdown(results))
    return 0
