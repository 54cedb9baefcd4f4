"""The Parquet files of one release config: each split cut, in order, into files of a bounded
uncompressed size named as Hugging Face names data files (``data/<config>/train-00000-of-00002.parquet``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import tables
from pipeline.release.layout import shard_name


@dataclass(frozen=True)
class SplitSource:
    """The items of one split (rows or clips): their uncompressed sizes, and how to read a run of them."""

    sizes: list[int]
    read: Callable[[list[int]], Iterable[pa.Table]]  # item indices -> the tables that hold them, in order


def write_config(
    root: Path, name: str, schema: pa.Schema, sources: Mapping[str, SplitSource], max_bytes: int
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Write ``data/<name>/<split>-*.parquet`` under ``root``; returns split -> files (relative) and split -> rows.

    Every split gets at least one file, an empty one when it has no item.
    """
    files: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for split, source in sources.items():
        groups = partition(source.sizes, max_bytes)
        for gi, group in enumerate(groups):
            rel = Path("data", name, shard_name(split, gi, len(groups)))
            write_tables(root / rel, schema, source.read(group))
            files.setdefault(split, []).append(rel.as_posix())
        counts[split] = len(source.sizes)
    return files, counts


def partition(sizes: list[int], max_bytes: int) -> list[list[int]]:
    """Greedy, order-preserving grouping of items into files of at most ``max_bytes`` (>= 1 file)."""
    groups: list[list[int]] = [[]]
    total = 0
    for i, size in enumerate(sizes):
        if groups[-1] and total + size > max_bytes:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups


def write_tables(target: Path, schema: pa.Schema, parts: Iterable[pa.Table]) -> int:
    """Stream ``parts`` into one Parquet file written atomically; returns the row count."""
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for part in parts:
                writer.write_table(part)
                rows += part.num_rows

    tables.atomic_write(target, write)
    return rows
