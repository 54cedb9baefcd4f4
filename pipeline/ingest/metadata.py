"""Reading clip metadata: TikTok-scraper JSON and plain CSV/JSONL files (SPEC section 1).

Raw layout
----------
``RAW_DIR/metadata/`` holds one or more metadata files, each a list of records:

* ``*.json``: tiktok-scraper output, a JSON list of objects (or ``{"collector": [...]}``) with
  ``id``, ``createTime`` (Unix seconds), ``diggCount``, ``commentCount``, ``shareCount``,
  ``playCount``, ``authorMeta.{id,fans}``, ``musicMeta.musicId`` and ``hashtags`` (objects with
  a ``name``). The records carry no crawl time; the crawler names its file
  ``<user>_<13-digit ms stamp>.json``, which is the crawl time.
* ``*.csv`` / ``*.jsonl``: one record per row/line with the columns ``video_id, challenge, likes,
  comments, reposts, create_time, crawl_time, followers`` and optionally ``uploader_id,
  music_id, hashtags, plays``. Times are ISO 8601 (``2021-01-06T15:51:49Z``, naive = UTC) or
  Unix seconds; ``hashtags`` is a space/comma/semicolon separated list, ``#`` optional.

Crawl time (SPEC section 1, choice): the record's own column, else the ``crawl_time`` given to
the run (option or configuration), else the file name's stamp, else the record is rejected with
``Reason.NO_CRAWL_TIME``. It is never silently "now".

Challenge (SPEC section 3, choice): an explicit column (or the pairing file), else a configured
rule: ``music_id`` (the sound defines the challenge) or ``hashtag`` (the first of the record's
hashtags that is in a named list). Generic reach hashtags (:data:`GENERIC_HASHTAGS`) never
define a challenge, even when named.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.errors import ClipError, Reason
from pipeline.core.textfiles import TextFileError, csv_rows, read_text

METADATA_SUFFIXES = (".json", ".jsonl", ".csv")

GENERIC_HASHTAGS = frozenset(
    {
        # "for you page" reach tags: used on any video to court the recommender, not a challenge
        "fyp",
        "foryou",
        "foryoupage",
        "fy",
        "fypage",
        "fypシ",
        "parati",
        "xyzbca",
        "xyzcba",
        "viral",
        "trending",
        "tiktok",
        "duet",
        "stitch",
        "greenscreen",
        "ad",
        "explore",
        "explorepage",
        "4u",
        "foru",
    }
)
"""Hashtags that never define a challenge: reach and format tags that any video may carry."""

CHALLENGE_RULES = ("none", "music_id", "hashtag")

_STAMP = re.compile(r"_(\d{13})$")


@dataclass(frozen=True)
class MetadataRecord:
    """One platform record, normalised. Counts are None when the source lacks them."""

    video_id: str
    source: str  # metadata file the record came from
    likes: int | None = None
    comments: int | None = None
    reposts: int | None = None
    plays: int | None = None
    followers: int | None = None
    create_time: datetime | None = None
    crawl_time: datetime | None = None
    crawl_time_source: str | None = None  # column | option | file_name
    challenge: str | None = None
    challenge_source: str | None = None  # column | pairing | music_id | hashtag
    uploader_id: str | None = None
    music_id: str | None = None
    hashtags: tuple[str, ...] = field(default_factory=tuple)


# -- small parsers --------------------------------------------------------------------------------


def parse_crawl_stamp(name: str | Path) -> datetime | None:
    """Crawl time from a crawler file name ``<name>_<13-digit ms>.json``, else None.

    >>> parse_crawl_stamp("thebigbradwolf_1609948309033.json").isoformat()
    '2021-01-06T15:51:49.033000+00:00'
    """
    match = _STAMP.search(Path(name).stem)
    if not match:
        return None
    return datetime.fromtimestamp(int(match.group(1)) / 1000.0, tz=UTC)


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 text (naive = UTC) or Unix seconds (13 digits: milliseconds) -> aware UTC datetime.

    Raises ValueError for a value that is neither (an object, a list, a time out of range).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"not a time: {_shown(value)}")
    text = str(value).strip()
    try:
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
            if len(text.split(".")[0]) >= 13:  # a millisecond stamp, as crawlers write them
                seconds /= 1000.0
            return datetime.fromtimestamp(seconds, tz=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"not a time: {_shown(value)}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _count(value: Any) -> int | None:
    """A count as int; None when absent. Raises ValueError for anything that is not a whole number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"not a count: {_shown(value)}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"not a count: {_shown(value)}") from None
    if math.isnan(number):
        return None
    if math.isinf(number) or number != int(number):
        raise ValueError(f"not a whole count: {_shown(value)}")
    return int(number)


def _text(value: Any) -> str | None:
    """Text or a number as stripped text; None when absent. Raises ValueError for an object or a list."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"not text or a number: {_shown(value)}")
    text = str(value).strip()
    return text or None


def _shown(value: Any) -> str:
    """What a wrong value is, shortly: its JSON kind and the start of its text."""
    kinds = {dict: "an object", list: "a list", str: "text", bool: "a boolean", int: "a number", float: "a number"}
    kind = kinds.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"


def _object(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``record[key]`` when it is an object ({} when absent); a ValueError naming the field otherwise."""
    value = record.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"field {key!r} is {_shown(value)}, expected an object")
    return value


def _field(source: Mapping[str, Any], key: str, parse, label: str | None = None) -> Any:
    """``parse(source[key])``, whose ValueError or TypeError is re-raised naming the field."""
    try:
        return parse(source.get(key))
    except (ValueError, TypeError, OverflowError) as err:
        raise ValueError(f"field {label or key!r}: {err}") from None


def split_hashtags(value: Any) -> tuple[str, ...]:
    """Normalise hashtags (lower case, no ``#``) from a list, list of ``{name}`` or a string.

    Raises ValueError for anything else (an object, a number, a list of lists).
    """
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[Any] = re.split(r"[\s,;]+", value)
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise ValueError(f"not a list of hashtags: {_shown(value)}")
    tags = []
    for item in items:
        name = item.get("name") if isinstance(item, Mapping) else item
        if name is not None and (isinstance(name, bool) or not isinstance(name, str | int)):
            raise ValueError(f"not a hashtag: {_shown(item)}")
        name = str(name or "").strip().lstrip("#").lower()
        if name:
            tags.append(name)
    return tuple(tags)


# -- record readers -------------------------------------------------------------------------------


def _from_scraper(obj: Mapping[str, Any], source: str) -> MetadataRecord:
    """A tiktok-scraper record; a field of the wrong kind is a ValueError that names it."""
    author = _object(obj, "authorMeta")
    music = _object(obj, "musicMeta")
    video_id = _field(obj, "id", _text)
    if video_id is None:
        raise ValueError("record has no 'id'")
    crawl = _field(obj, "crawlTime", parse_time)
    return MetadataRecord(
        video_id=video_id,
        source=source,
        likes=_field(obj, "diggCount", _count),
        comments=_field(obj, "commentCount", _count),
        reposts=_field(obj, "shareCount", _count),
        plays=_field(obj, "playCount", _count),
        followers=_field(author, "fans", _count, "authorMeta.fans"),
        create_time=_field(obj, "createTime", parse_time),
        uploader_id=_field(author, "id", _text, "authorMeta.id"),
        music_id=_field(music, "musicId", _text, "musicMeta.musicId"),
        hashtags=_field(obj, "hashtags", split_hashtags),
        # a scraper record may carry these when a crawler adds them; usually absent
        crawl_time=crawl,
        crawl_time_source="column" if crawl is not None else None,
    )


def _from_columns(row: Mapping[str, Any], source: str) -> MetadataRecord:
    """A CSV row or JSON object with the plain columns; a wrong value is a ValueError naming its column."""
    video_id = _field(row, "video_id", _text)
    if video_id is None:
        raise ValueError("row has no 'video_id'")
    crawl = _field(row, "crawl_time", parse_time)
    challenge = _field(row, "challenge", _text)
    return MetadataRecord(
        video_id=video_id,
        source=source,
        likes=_field(row, "likes", _count),
        comments=_field(row, "comments", _count),
        reposts=_field(row, "reposts", _count),
        plays=_field(row, "plays", _count),
        followers=_field(row, "followers", _count),
        create_time=_field(row, "create_time", parse_time),
        crawl_time=crawl,
        crawl_time_source="column" if crawl is not None else None,
        challenge=challenge,
        challenge_source="column" if challenge else None,
        uploader_id=_field(row, "uploader_id", _text),
        music_id=_field(row, "music_id", _text),
        hashtags=_field(row, "hashtags", split_hashtags),
    )


@dataclass
class MetadataProblem:
    """A record (or whole file) that could not be read; becomes a BAD_METADATA rejection."""

    source: str
    video_id: str | None
    message: str


def _raw_items(path: Path) -> tuple[list[dict], str]:
    """The file's raw records and their flavour (``scraper`` or ``columns``).

    The text is UTF-8 with or without a byte-order mark (:mod:`pipeline.core.textfiles`); a CSV must
    be comma-separated.
    """
    suffix = path.suffix.lower()
    text = read_text(path, "metadata file")
    if suffix == ".csv":
        return list(csv_rows(text, str(path))), "columns"
    if suffix == ".jsonl":
        items = []
        for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit in a caption
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"line {number}: {err.msg} (column {err.colno})") from None
        return items, "columns"
    data = json.loads(text)
    if isinstance(data, dict):
        # tiktok-scraper's programmatic output wraps the list as {"collector": [...]}
        data = data.get("collector", data.get("items"))
    if not isinstance(data, list):
        raise ValueError("expected a JSON list of records (or {'collector': [...]})")
    flavour = "columns" if data and isinstance(data[0], dict) and "video_id" in data[0] else "scraper"
    return data, flavour


def _record_id(item: Mapping[str, Any]) -> str | None:
    """The video id of a record that did not parse, when it has a usable one."""
    for key in ("id", "video_id"):
        try:
            found = _text(item.get(key))
        except ValueError:
            continue
        if found:
            return found
    return None


def read_metadata_file(
    path: str | Path, crawl_time: datetime | None = None
) -> tuple[list[MetadataRecord], list[MetadataProblem]]:
    """Read one metadata file; fill the crawl time by the SPEC section 1 order.

    Returns the records and the problems (unparsable file or rows); never raises for bad content:
    a record with a field of the wrong kind (an ``authorMeta`` that is text, a count ``"12k"``)
    is one problem naming the record and the field, and the file's other records are read.
    """
    path = Path(path)
    source = str(path)
    try:
        items, flavour = _raw_items(path)
    except TextFileError as err:
        return [], [MetadataProblem(source, None, str(err))]
    except (OSError, ValueError, csv.Error, RecursionError) as err:
        # JSONDecodeError is a ValueError and carries the line and column
        return [], [MetadataProblem(source, None, f"{source}: cannot parse metadata file: {err}")]
    stamp = parse_crawl_stamp(path.name)
    records, problems = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(MetadataProblem(source, None, f"record {i} is {_shown(item)}, not an object"))
            continue
        video_id = _record_id(item)
        try:
            record = _from_scraper(item, source) if flavour == "scraper" else _from_columns(item, source)
        except (ValueError, TypeError, OverflowError) as err:
            named = f"record {i} (video {video_id})" if video_id else f"record {i}"
            problems.append(MetadataProblem(source, video_id, f"{named}: {err}"))
            continue
        if record.crawl_time is None:
            if crawl_time is not None:
                record = replace(record, crawl_time=crawl_time, crawl_time_source="option")
            elif stamp is not None:
                record = replace(record, crawl_time=stamp, crawl_time_source="file_name")
        records.append(record)
    return records, problems


def metadata_files(raw_dir: str | Path) -> list[Path]:
    directory = Path(raw_dir) / "metadata"
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix.lower() in METADATA_SUFFIXES and not p.name.startswith(".")
    )


# -- challenge and validity -----------------------------------------------------------------------


def derive_challenge(
    record: MetadataRecord, rule: str = "none", hashtags: Iterable[str] = ()
) -> tuple[str | None, str | None]:
    """(challenge, source) for a record without an explicit one, by the configured ``rule``.

    ``music_id``: the record's music id (``music:<id>``). ``hashtag``: the first of the record's
    hashtags that appears in ``hashtags`` (``#<tag>``); generic hashtags never count.
    """
    if record.challenge:
        return record.challenge, record.challenge_source or "column"
    if rule == "music_id" and record.music_id:
        return f"music:{record.music_id}", "music_id"
    if rule == "hashtag":
        named = [h.lstrip("#").lower() for h in hashtags]
        allowed = {h for h in named if h not in GENERIC_HASHTAGS}
        for tag in record.hashtags:
            if tag in allowed:
                return f"#{tag}", "hashtag"
    return None, None


def check_record(record: MetadataRecord) -> None:
    """Raise :class:`ClipError` (clip id None) when the record cannot enter the dataset."""
    counts = {"likes": record.likes, "comments": record.comments, "reposts": record.reposts}
    missing = [k for k, v in counts.items() if v is None]
    if missing:
        raise ClipError(None, Reason.MISSING_COUNTS, f"video {record.video_id}: missing {', '.join(missing)}")
    negative = [
        f"{k}={v}"
        for k, v in {**counts, "followers": record.followers, "plays": record.plays}.items()
        if v is not None and v < 0
    ]
    if negative:
        raise ClipError(None, Reason.NEGATIVE_COUNTS, f"video {record.video_id}: negative {', '.join(negative)}")
    if record.create_time is None:
        raise ClipError(None, Reason.BAD_METADATA, f"video {record.video_id}: no create time")
    if record.crawl_time is None:
        raise ClipError(
            None,
            Reason.NO_CRAWL_TIME,
            f"video {record.video_id}: no crawl time (no column, no --crawl-time, no <name>_<ms>.json stamp in {Path(record.source).name})",
        )
    if record.create_time > record.crawl_time:
        raise ClipError(
            None,
            Reason.CREATE_AFTER_CRAWL,
            f"video {record.video_id}: created {record.create_time.isoformat()} after crawl {record.crawl_time.isoformat()}",
        )
    if not record.challenge:
        raise ClipError(
            None, Reason.NO_CHALLENGE, f"video {record.video_id}: no challenge (no column, pairing or rule match)"
        )
