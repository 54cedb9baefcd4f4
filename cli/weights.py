"""``vdv weights list | fetch [NAME] | import NAME PATH | verify [NAME]``: the local model zoo."""

from __future__ import annotations

import argparse


def register(subparsers, parent: argparse.ArgumentParser) -> None:
    from pipeline.blazepose.backends import NETWORKS
    from pipeline.modalities import registry as modalities

    own = [m.name for m in modalities.registered() if set(m.networks) - set(NETWORKS)]
    listed = " and ".join([", ".join(own[:-1]), own[-1]] if len(own) > 1 else own)
    parser = subparsers.add_parser(
        "weights",
        help="list, fetch, import and verify pre-trained weights",
        description=(
            f"Pre-trained weights of the {listed} extractors and of BlazePose's torch "
            "backend. The cache "
            "($VDV_WEIGHTS_DIR, else ~/.cache/vdv/weights) holds tensors only; each file's sha256 is "
            "recorded at fetch/import time and checked on every load."
        ),
    )
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument(
        "--dir", metavar="DIR", help="weights cache; without it $VDV_WEIGHTS_DIR, else ~/.cache/vdv/weights"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("list", parents=[parent, cache], help="the registry and the state of each cached file")
    p.set_defaults(func=_list)

    p = actions.add_parser(
        "fetch",
        parents=[parent, cache],
        help="download published weights (needs internet) and import them; BlazePose's from the mediapipe wheel",
        description=(
            "Download each published file into <cache>/downloads/ through a hidden temporary file, with a "
            "progress bar on a terminal; when the publisher states the file's digest (mmaction2's TSN), a "
            "download that does not match is deleted and nothing is kept. The file is then imported as with "
            "`vdv weights import`. Without network access the error names the URL to fetch elsewhere and the "
            "`vdv weights import` command to run on the copied file. BlazePose's two networks ship inside the installed "
            "mediapipe wheel: fetching them imports those files, offline."
        ),
    )
    p.add_argument("name", nargs="?", help="model name; without it, every model that has a download URL")
    p.set_defaults(func=_fetch)

    p = actions.add_parser("import", parents=[parent, cache], help="import a published checkpoint file from disk")
    p.add_argument("name", help="model name (see `vdv weights list`)")
    p.add_argument("path", help="the published file, e.g. resnet18_places365.pth.tar")
    p.add_argument(
        "--allow-other-source",
        action="store_true",
        help="import even when the file's sha256 differs from the published one (e.g. weights converted elsewhere)",
    )
    p.set_defaults(func=_import)

    p = actions.add_parser("verify", parents=[parent, cache], help="check cached files against their recorded sha256")
    p.add_argument("name", nargs="?", help="model name; without it, every cached model")
    p.set_defaults(func=_verify)


def _list(args) -> int:
    from pipeline.weights.cache import read_lock, status, weights_dir
    from pipeline.weights.registry import REGISTRY

    print(f"weights cache: {weights_dir(args.dir)}")
    for spec in REGISTRY.values():
        state = status(spec.name, cache_dir=args.dir)
        lock = read_lock(spec.name, cache_dir=args.dir) if state != "missing" else None
        print(f"\n{spec.name}  [{state}]")
        print(f"  architecture: {spec.architecture}")
        print(f"  features:     {spec.feature_dim}-d; input {spec.preprocess.as_dict()}")
        print(f"  source:       {spec.source_file}")
        if spec.bundled:
            print(f"  url:          none: the file is in {spec.page} (`vdv weights fetch {spec.name}` imports it)")
        else:
            print(f"  url:          {spec.url or f'no direct download; get it from {spec.page}'}")
        print(f"  source sha256 (published): {spec.source_sha256 or 'not published'}")
        print(f"  license:      {spec.license}")
        if lock:
            print(
                f"  cached sha256: {lock['sha256']} (imported {lock.get('imported_at')} from {lock.get('source_file')})"
            )
    return 0


def _fetch(args) -> int:
    from pipeline.weights.fetch import fetch_weights
    from pipeline.weights.registry import REGISTRY

    names = [args.name] if args.name else [s.name for s in REGISTRY.values() if s.url or s.bundled]
    _writable_cache(args)
    for name in names:
        lock = fetch_weights(name, cache_dir=args.dir)
        print(f"{name}: ok, sha256 {lock['sha256']}")
    return 0


def _import(args) -> int:
    from pipeline.weights.cache import cached_file
    from pipeline.weights.fetch import import_weights

    _writable_cache(args)
    lock = import_weights(args.name, args.path, cache_dir=args.dir, allow_other_source=args.allow_other_source)
    print(f"{args.name}: imported {lock['tensors']} tensors (dropped {', '.join(lock['dropped']) or 'nothing'})")
    print(
        f"  source sha256 {lock['source_sha256']} ({'matches the published file' if lock['source_verified'] else 'not the published digest'})"
    )
    print(f"  cached {cached_file(args.name, args.dir)} sha256 {lock['sha256']}")
    return 0


def _writable_cache(args) -> None:
    """The cache a fetch or import writes, made and proven writable first; the error names where
    its path came from (--dir, $VDV_WEIGHTS_DIR or the default)."""
    import os

    from pipeline.core.workdir import prepare
    from pipeline.weights.cache import ENV_DIR, weights_dir

    label = "--dir" if args.dir else f"${ENV_DIR}" if os.environ.get(ENV_DIR) else "the weights cache"
    prepare(weights_dir(args.dir), label=label)


def _verify(args) -> int:
    from pipeline.core.errors import WeightsError
    from pipeline.weights.cache import status, verify_weights, weights_dir
    from pipeline.weights.registry import REGISTRY

    if args.name:
        names = [args.name]
    else:
        names = [n for n in REGISTRY if status(n, cache_dir=args.dir) != "missing"]
        if not names:
            print(f"no weights cached in {weights_dir(args.dir)}; see `vdv weights list`")
            return 1
    failed = 0
    for name in names:
        try:
            digest = verify_weights(name, cache_dir=args.dir)
            print(f"{name}: ok, sha256 {digest}")
        except WeightsError as err:
            print(f"{name}: FAILED: {err}")
            failed += 1
    return 1 if failed else 0
