"""The dataset card of a release (``README.md``): a YAML header the Hugging Face Hub and the
``datasets`` library read (configs, features, splits, counts, license), then prose."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline.release.config import ReleaseConfig
from pipeline.release.layout import SCORES_CONFIG

LICENSE_NAME = "vdv-research-use"  # license_name of a `license: other` card (Hugging Face card metadata)
LICENSE_LINK = "README.md#license"  # the card's own License section holds the terms
BAR = "\u2588"  # a full block: one unit of a text histogram bar
# a config whose data takes more than this in memory is shown loaded with streaming=True too:
# load_dataset writes the whole config into an Arrow cache of that size and maps it (docs/SCALE.md)
STREAMING_BYTES = 4 << 30
# rows of at least this many bytes are row groups of one clip each (pipeline.release.shards), which
# load_dataset reads as batches of one row and buffers until it holds writer_batch_size of them
# (1,000 by default: 3 GB of holistic clips, 7.7 GiB at the peak at VDV's size); the card says to
# load such a config with WRITER_BATCH_ROWS (docs/SCALE.md)
ONE_CLIP_ROW_BYTES = 1 << 20
WRITER_BATCH_ROWS = 16


def dataset_card(
    manifest: Mapping, configs: Mapping[str, dict], config: ReleaseConfig, *, root: Path | None = None
) -> str:
    """README.md: YAML header for the Hub (configs, features, splits, counts, license), then prose.

    ``root`` is the directory being packaged: with it, each split's ``num_bytes`` (which the
    ``datasets`` library requires beside ``name`` and ``num_examples``, else it warns that the
    splits field is malformed) is its size in memory as ``load_dataset`` reports it
    (:func:`_split_bytes`), ``dataset_size`` their sum, and the card shows per-challenge score
    histograms read from the released scores.
    """
    header = _card_header(manifest, configs, config, root)
    lines = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", ""]
    lines += _opening(manifest, config)
    lines += _configs_and_tracks(manifest, configs)
    lines += _loading(header["dataset_info"])
    lines += _scores(root, configs)
    lines += _provenance_and_license(manifest, config)
    return "\n".join(lines)


def read_card_header(path: Path) -> dict:
    """The YAML header of a card written by :func:`dataset_card`."""
    text = path.read_text()
    if not text.startswith("---\n"):
        raise ValueError("README.md has no YAML header")
    return yaml.safe_load(text.split("---\n", 2)[1])


def hf_feature(dtype: pa.DataType):
    """The YAML form of a Hugging Face feature for an Arrow type (as ``datasets.Features`` writes it)."""
    if pa.types.is_list(dtype) or pa.types.is_fixed_size_list(dtype):
        inner = hf_feature(dtype.value_type)
        out = {"list": inner["dtype"] if set(inner) == {"dtype"} else inner}
        if pa.types.is_fixed_size_list(dtype):
            out["length"] = dtype.list_size
        return out
    # Arrow prints float64/float32 as "double"/"float"; Hugging Face names them by width
    names = {pa.float64(): "float64", pa.float32(): "float32", pa.float16(): "float16"}
    return {"dtype": names.get(dtype, str(dtype))}


def hf_features(schema: pa.Schema) -> list[dict]:
    return [{"name": f.name, **hf_feature(f.type)} for f in schema]


# -- YAML header ---------------------------------------------------------------------------------


def _card_header(manifest: Mapping, configs: Mapping[str, dict], config: ReleaseConfig, root: Path | None) -> dict:
    from pipeline.modalities.registry import with_stream

    return {
        "license": config.license,
        **({"license_name": LICENSE_NAME, "license_link": LICENSE_LINK} if config.license == "other" else {}),
        "pretty_name": "VDV: viral dance videos",
        "tags": ["video", "dance", "virality", *with_stream("skeleton")]
        + (["untrained-features"] if manifest["untrained"] else []),
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": split, "path": f"data/{name}/{split}-*.parquet"} for split in c["files"]],
                **({"default": True} if name == SCORES_CONFIG else {}),
            }
            for name, c in configs.items()
        ],
        "dataset_info": [_dataset_info(name, c, manifest, root) for name, c in configs.items()],
    }


def _dataset_info(name: str, entry: Mapping, manifest: Mapping, root: Path | None) -> dict:
    """One config's ``dataset_info``: features, and per split its examples and uncompressed bytes."""
    split_infos = [
        {
            "name": split,
            "num_bytes": _split_bytes(root, files),
            "num_examples": manifest["configs"][name]["num_rows"][split],
        }
        for split, files in entry["files"].items()
    ]
    return {
        "config_name": name,
        "features": hf_features(entry["schema"]),
        "splits": split_infos,
        "dataset_size": sum(s["num_bytes"] for s in split_infos),
    }


def _split_bytes(root: Path | None, files: Sequence[str]) -> int:
    """A split's size in memory as ``datasets.load_dataset`` reports it in its split info.

    ``datasets`` reads a Parquet file in batches of its first row group's rows and adds up the
    Arrow size of each batch (``ArrowWriter``, ``pa.Table.nbytes``); the same reading gives the
    same figure. Read one batch at a time, so memory stays at one row group.
    """
    import pyarrow.dataset as ds

    if root is None:
        return 0
    total = 0
    for name in files:
        with open(root / name, "rb") as fh:
            fragment = ds.ParquetFileFormat().make_fragment(fh)
            if not fragment.row_groups:
                continue
            rows = fragment.row_groups[0].num_rows
            batches = fragment.to_batches(batch_size=rows, batch_readahead=0, fragment_readahead=0)
            total += sum(pa.Table.from_batches([batch]).nbytes for batch in batches)
    return total


# -- prose ---------------------------------------------------------------------------------------


def _opening(manifest: Mapping, config: ReleaseConfig) -> list[str]:
    """Title, the untrained warning and the notes, then what the dataset is."""
    lines = [f"# {config.name} {config.version}", ""]
    if manifest["untrained"]:
        lines += [f"> **{manifest['warning']}**", ""]
    for note in manifest["notes"]:
        lines += [f"> Note: {note}.", ""]
    return lines + [
        "Features and virality scores of single-dancer clips, rebuilt with the vdv pipeline after "
        '"Will You Ever Become Popular? Learning to Predict Virality of Dance Clips" (Wang et al., ACM TOMM 2022).',
        "",
    ]


def _configs_and_tracks(manifest: Mapping, configs: Mapping[str, dict]) -> list[str]:
    """The configs' and the tracks' train/test counts."""
    lines = ["## Configs", "", "| config | train | test | per-sample vector |", "|---|---|---|---|"]
    for name in configs:
        n = manifest["configs"][name]["num_rows"]
        dim = manifest["features"].get(name, {}).get("dim")
        lines.append(f"| {name} | {n.get('train', 0)} | {n.get('test', 0)} | {dim if dim else '-'} |")
    lines += [
        "",
        "Splits follow the all-challenge track; each clip's features are stored once. The "
        "single-challenge tracks are `(clip_id, split)` tables under `splits/`:",
        "",
        "| track | train | test |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {i['train']} | {i['test']} |" for t, i in manifest["tracks"].items()]
    return lines + [""]


def load_options(info: Mapping) -> dict:
    """Keyword arguments of ``datasets.load_dataset`` for a config of the card's ``dataset_info``:
    ``writer_batch_size`` where its rows are of one clip a row group (see
    :data:`ONE_CLIP_ROW_BYTES`), so that the load holds at most that many rows in memory."""
    rows = sum(split["num_examples"] for split in info.get("splits", []))
    if rows and info["dataset_size"] / rows >= ONE_CLIP_ROW_BYTES:
        return {"writer_batch_size": WRITER_BATCH_ROWS}
    return {}


def _loading(infos: Sequence[Mapping]) -> list[str]:
    """How to load each config with ``datasets``: its size once loaded, the options that keep the
    load's memory small (:func:`load_options`), and streaming above :data:`STREAMING_BYTES`."""
    lines = [
        "## Loading",
        "",
        "`load_dataset` converts a config into an Arrow cache of its in-memory size before use (on disk, "
        "memory-mapped); a config of large rows is loaded with a small `writer_batch_size` so that the "
        f"conversion holds only a few rows in memory, and one over {STREAMING_BYTES / 2**30:.0f} GiB can "
        "also be streamed (one row group at a time, no cache):",
        "",
        "| config | in memory | load with |",
        "|---|---|---|",
    ]
    for info in infos:
        name, size = info["config_name"], info["dataset_size"]
        options = "".join(f", {k}={v}" for k, v in load_options(info).items())
        call = f'`load_dataset("<this directory>", "{name}"{options})`'
        if size > STREAMING_BYTES:
            call += f' or `load_dataset("<this directory>", "{name}", streaming=True)`'
        lines.append(f"| {name} | {_size(size)} | {call} |")
    return lines + [""]


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _scores(root: Path | None, configs: Mapping[str, dict]) -> list[str]:
    """How scores are computed (paper eq. 1 and 2), then their distributions."""
    return [
        "Scores are `ln((likes + comments + reposts + 1) / clip(days, 1, 7))` normalised per challenge "
        "to [0, 1]; the per-challenge scale is `score_scale.parquet`.",
        "",
        *_score_histograms(root, configs),
    ]


def _provenance_and_license(manifest: Mapping, config: ReleaseConfig) -> list[str]:
    return [
        "## Provenance and privacy",
        "",
        "`manifest.json` records, for every modality, the extractor, its code-derived version, the "
        "weights sha256, parameters, precision and device, and each clip's feature identity, plus the "
        "run lineage (code commit, library versions). Uploaders appear only as salted hashes "
        f"({manifest['uploader_hash']['scheme']}; the salt is not released). Captions and usernames "
        "are not released. `SHA256SUMS` lists every file's checksum; `vdv release verify DIR` re-checks it all.",
        "",
        "## License",
        "",
        config.license_note,
        "",
    ]


def _score_histograms(root: Path | None, configs: Mapping[str, dict]) -> list[str]:
    """Per-challenge histograms of the raw and normalised scores of the released clips."""
    if root is None or SCORES_CONFIG not in configs:
        return []
    files = [root / f for fs in configs[SCORES_CONFIG]["files"].values() for f in fs]
    table = pa.concat_tables([pq.read_table(f, columns=["challenge", "raw_score", "score"]) for f in files])
    by_challenge: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        by_challenge.setdefault(row["challenge"], []).append(row)
    lines = ["## Score distributions", ""]
    for challenge, rows in sorted(by_challenge.items()):
        raw = [r["raw_score"] for r in rows]
        norm = [r["score"] for r in rows]
        lines += [f"### {challenge} ({len(rows)} clips)", "", "Raw score `ln((L + C + R + 1) / clip(T, 1, 7))`:", ""]
        lines += ["| raw score | clips | |", "|---|---|---|", *_text_histogram(raw, min(raw), max(raw)), ""]
        lines += ["Normalised score:", "", "| score | clips | |", "|---|---|---|", *_text_histogram(norm, 0.0, 1.0), ""]
    return lines


def _text_histogram(values: Sequence[float], lo: float, hi: float, bins: int = 10, width: int = 30) -> list[str]:
    """A histogram as Markdown table rows ``| range | count | bar |`` (renders on the Hub and offline)."""
    if not values:
        return []
    if hi <= lo:
        return [f"| {lo:.3g} | {len(values)} | {BAR * width} |"]
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))] += 1
    top = max(counts)
    step = (hi - lo) / bins
    rows = []
    for i, n in enumerate(counts):
        bar = BAR * (max(1, round(n / top * width)) if n else 0)
        closing = "]" if i == bins - 1 else ")"
        rows.append(f"| [{lo + i * step:.3g}, {lo + (i + 1) * step:.3g}{closing} | {n} | {bar} |")
    return rows
