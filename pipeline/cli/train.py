"""``vdv train``, ``vdv evaluate``, ``vdv feedback``: thin wrappers over models.train/evaluate/feedback."""

from __future__ import annotations

import argparse
import json


def register(subparsers, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("train", parents=[parent], help="train a virality model on a track's train split")
    p.add_argument("--source", help="work directory or release directory with features and scores (default: --work)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory: checkpoint.pt, train_log.jsonl")
    p.add_argument("--track", default="all", help="all or challenge-<name> (SPEC section 6)")
    p.add_argument("--model", help="multimodal (default), psgcn, stgcn, rtcn, tcn, lstm")
    p.add_argument("--modalities", help="comma-separated streams, e.g. skeletal,holistic")
    p.add_argument("--epochs", type=int)
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("evaluate", parents=[parent], help="SRC per track, with the paper's ablations")
    p.add_argument("--source", help="work or release directory (default: --work)")
    p.add_argument("--out", required=True, metavar="DIR", help="where results.json and results.md go")
    p.add_argument("--checkpoint", help="score this trained model on the test side of --track instead of training")
    p.add_argument("--tracks", help="comma-separated tracks (default: every track)")
    p.add_argument("--track", default="all", help="track of --checkpoint")
    p.add_argument("--ablations", default="full", help="comma-separated: full," + ",".join(_ablation_names()))
    p.add_argument("--epochs", type=int)
    p.add_argument("--device")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser(
        "feedback", parents=[parent], help="action guidance arrows and dance-tip heat maps from a PSGCN checkpoint"
    )
    p.add_argument("--checkpoint", required=True, help="a psgcn checkpoint from vdv train --model psgcn")
    p.add_argument("--source", help="work directory with pose shards (default: --work)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--clip", help="clip id for action guidance (needs --video)")
    p.add_argument("--video", help="the clip's video file, to draw the arrows on")
    p.add_argument("--frames", default="0", help="comma-separated frame indices saved as PNG")
    p.add_argument("--tips", action="store_true", help="also compute dance tips per challenge over every clip")
    p.set_defaults(func=_feedback)


def _ablation_names() -> list[str]:
    return [
        "no_downsampling",
        "no_relational_pooling",
        "average_fusion",
        "no_holistic",
        "no_facial",
        "no_scenic",
        "no_mse",
        "no_ranking",
    ]


def _configs(args):
    from models.data import DataConfig
    from models.train import TrainConfig
    from pipeline.config import load_config, stage_config

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
    )
    return train, stage_config(DataConfig, cfg, "data")


def _train(args) -> int:
    from models.data import open_source
    from models.train import train_track

    train, data = _configs(args)
    result = train_track(open_source(args.source or args.work), args.track, args.out, train, data, resume=args.resume)
    print(json.dumps({"checkpoint": str(result.checkpoint), "history": result.history}, indent=2))
    return 0


def _evaluate(args) -> int:
    from models.data import open_source
    from models.evaluate import evaluate_checkpoint, markdown_table, run_protocol

    source = open_source(args.source or args.work)
    if args.checkpoint:
        results = evaluate_checkpoint(args.checkpoint, source, args.out, track=args.track, device=args.device or "auto")
    else:
        train, data = _configs(args)
        tracks = args.tracks.split(",") if args.tracks else None
        results = run_protocol(source, args.out, train, data, tracks=tracks, ablations=args.ablations.split(","))
    print(markdown_table(results))
    return 0


def _feedback(args) -> int:
    from pathlib import Path

    from models import feedback
    from models.data import ViralityDataset, open_source
    from models.train import load_checkpoint

    model, config, data_config, _ = load_checkpoint(args.checkpoint, "cpu")
    if config.model not in ("psgcn", "stgcn"):
        print(f"vdv feedback: {args.checkpoint} holds a {config.model} model; action guidance needs PSGCN")
        return 2
    source = open_source(args.source or args.work)
    out = Path(args.out)
    if args.clip:
        loaded = source.load("skeletal", args.clip)
        if loaded is None:
            print(f"vdv feedback: no pose shard for clip {args.clip}")
            return 2
        grad, joints, _ = feedback.clip_guidance(model, *loaded)
        fps = 25.0  # the skeletal time grid (SPEC section 4)
        feedback.save_guidance(out, grad, joints, fps)
        if args.video:
            drawn = feedback.render(
                args.video, out, grad, joints, fps, frames=[int(f) for f in args.frames.split(",") if f]
            )
            print(json.dumps(drawn, indent=2))
    if args.tips:
        ds = ViralityDataset(source, ("skeletal",), config=data_config)
        print(
            json.dumps(feedback.save_tips(out, feedback.dance_tips(model, [ds[i] for i in range(len(ds))])), indent=2)
        )
    return 0
