"""The Parquet files of one release config: each split cut, in order, into files of a bounded
uncompressed size named as Hugging Face names data files (``data/<config>/train-00000-of-00002.parquet``).

Inside a file (docs/SCALE.md): row groups of whole clips up to :data:`ROW_GROUP_BYTES`
uncompressed (at least one clip each), so that a training loader reading one clip decodes at
most about that much, and a sequential reader (``datasets``) gets batches of many small clips;
statistics only on the columns named in :data:`STATISTICS` (a feature config's ``clip_id``),
never on the provenance text, which made footers of megabytes when every row group carried the
minimum and maximum of a 1.4 KB ``params`` string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import tables
from pipeline.release.layout import shard_name

ROW_GROUP_BYTES = 1 << 20  # uncompressed bytes a row group collects before it is written
STATISTICS = ["clip_id"]  # the columns of a feature config whose row groups carry min/max statistics


@dataclass(frozen=True)
class SplitSource:
    """The items of one split (rows or clips): their uncompressed sizes, and how to read a run of them."""

    sizes: list[int]
    read: Callable[[list[int]], Iterable[pa.Table]]  # item indices -> the tables that hold them, in order


def write_config(
    root: Path,
    name: str,
    schema: pa.Schema,
    sources: Mapping[str, SplitSource],
    max_bytes: int,
    *,
    statistics: bool | list[str] = True,
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Write ``data/<name>/<split>-*.parquet`` under ``root``; returns split -> files (relative) and split -> rows.

    Every split gets at least one file, an empty one when it has no item. ``statistics``: which
    columns' row groups carry statistics (``write_statistics`` of ``pyarrow.parquet``).
    """
    files: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for split, source in sources.items():
        groups = partition(source.sizes, max_bytes)
        for gi, group in enumerate(groups):
            rel = Path("data", name, shard_name(split, gi, len(groups)))
            write_tables(root / rel, schema, source.read(group), statistics=statistics)
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


def write_tables(
    target: Path,
    schema: pa.Schema,
    parts: Iterable[pa.Table],
    *,
    statistics: bool | list[str] = True,
    row_group_bytes: int = ROW_GROUP_BYTES,
) -> int:
    """Stream ``parts`` into one Parquet file written atomically; returns the row count.

    Parts are collected into row groups of at least ``row_group_bytes`` uncompressed (or the
    last parts), a part never split across two.
    """
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        pending: list[pa.Table] = []
        size = 0
        # a feature config: dictionaries for its text columns only, byte-split float vectors
        options = tables.feature_write_options(schema) if "features" in schema.names else {}
        with pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=statistics, **options) as writer:

            def flush() -> None:
                group = pa.concat_tables(pending)
                writer.write_table(group, row_group_size=max(1, group.num_rows))
                pending.clear()

            for part in parts:
                if not part.num_rows:
                    continue  # no empty row group: readers size batches by the first one's rows
                pending.append(part)
                rows += part.num_rows
                size += part.nbytes
                if size >= row_group_bytes:
                    flush()
                    size = 0
            if pending:
                flush()

    tables.atomic_write(target, write)
    return rows
