"""``vdv models [NAME ...] [--json]``: the registered virality models and their parameter counts."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "models",
        parents=[parent],
        help="list the virality models with their parameter counts",
        description=(
            "Every model of the registry (models.MODELS) built with its configuration (defaults, "
            "or the [<model name>] table of --config): "
            "input layout, video-level feature size and parameter count. The multi-modal model "
            "also lists its streams. SVR is a scikit-learn baseline with no tensor parameters."
        ),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to show (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=_models)


INPUTS = {
    "skeleton": "(N, 3, T, 16) + mask (N, T)",
    "sequence": "(N, T, D) + mask (N, T)",
    "multimodal": "{stream: (x, mask)} + stream mask (N, M)",
}


def _models(args) -> int:
    import dataclasses

    import torch

    from models import MODELS, build_from_config, parameter_count
    from pipeline.sections import load_config

    names = args.names or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"vdv models: error: unknown models {unknown}; registered: {sorted(MODELS)}", file=sys.stderr)
        return 2
    config = load_config(args.config)
    torch.manual_seed(0)
    rows = []
    for name in names:
        model = build_from_config(name, config)
        row = {
            "name": name,
            "arch": model.arch,
            "input": INPUTS[model.input_kind],
            "feature_dim": model.feature_dim,
            "parameters": parameter_count(model),
            "config": dataclasses.asdict(model.config),
        }
        if name == "multimodal":
            row["streams"] = {s: parameter_count(m) for s, m in model.streams.items()}
            row["streams"]["fusion"] = parameter_count(model.fusion)
        rows.append(row)
    if args.json:
        print(json.dumps({r["name"]: r for r in rows}, indent=2, default=str))
        return 0
    print(f"{'model':<12} {'parameters':>12}  {'feature':>7}  input")
    for r in rows:
        print(f"{r['name']:<12} {r['parameters']:>12,}  {r['feature_dim']:>7}  {r['input']}")
        for stream, count in r.get("streams", {}).items():
            print(f"  {stream:<10} {count:>12,}")
    if not args.names:
        print(
            f"{'svr':<12} {'-':>12}  {'-':>7}  pooled (T, D) sequences; scikit-learn, fitted per track by vdv evaluate --model svr"
        )
    return 0
