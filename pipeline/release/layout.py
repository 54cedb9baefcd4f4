"""What a release directory holds: config names, the released tables' schemas, shard names, and
the comparable schema descriptions the manifest stores."""

from __future__ import annotations

import pyarrow as pa

from pipeline.core import tables
from pipeline.scoring import splits

SCORES_CONFIG = "scores"
RELEASE_FORMAT = 1  # version of this layout, recorded in the manifest
SPLITS = (splits.TRAIN, splits.TEST)  # every config has files for both, in this order

RELEASE_SCORES = tables.TableSpec(
    "release/scores",
    1,
    pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("video_id", pa.string()),
            pa.field("challenge", pa.string(), nullable=False),
            pa.field("uploader", pa.string()),  # salted hash of the uploader id (see manifest)
            pa.field("likes", pa.int64()),
            pa.field("comments", pa.int64()),
            pa.field("reposts", pa.int64()),
            # milliseconds: Parquet has no second-resolution timestamp, so "s" would not round-trip
            pa.field("create_time", pa.timestamp("ms", tz="UTC")),
            pa.field("crawl_time", pa.timestamp("ms", tz="UTC")),
            pa.field("existing_days", pa.float64(), nullable=False),
            pa.field("raw_score", pa.float64(), nullable=False),  # paper eq. 1
            pa.field("score", pa.float64(), nullable=False),  # paper eq. 2, in [0, 1]
            pa.field("out_of_scale", pa.bool_(), nullable=False),
            pa.field("degenerate_challenge", pa.bool_(), nullable=False),
            pa.field("duration_s", pa.float64()),
        ]
    ),
)

RELEASE_SPLIT = tables.TableSpec(
    "release/split",
    1,
    pa.schema([pa.field("clip_id", pa.string(), nullable=False), pa.field("split", pa.string(), nullable=False)]),
)


def shard_name(split: str, index: int, count: int) -> str:
    """Hugging Face's data file naming: ``train-00000-of-00002.parquet``."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def type_signature(dtype: pa.DataType) -> str:
    """A type's name without list item names (writers differ on ``item`` versus ``element``)."""
    if pa.types.is_fixed_size_list(dtype):
        return f"fixed_size_list<{type_signature(dtype.value_type)}>[{dtype.list_size}]"
    if pa.types.is_list(dtype):
        return f"list<{type_signature(dtype.value_type)}>"
    return str(dtype)


def schema_signature(schema: pa.Schema) -> list[list[str]]:
    """Comparable description of a schema (names and types) stored in the manifest."""
    return [[f.name, type_signature(f.type)] for f in schema]
