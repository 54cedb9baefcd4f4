"""The dataset card of a release: ``datasets`` reads its ``dataset_info`` without warnings, a
``license: other`` card names its license, and the card shows the score histograms."""

from __future__ import annotations

import logging
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_release import colour_extractors, make_work

from pipeline import release


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    make_work(work)
    out = tmp_path_factory.mktemp("release")
    return release.package_release(work, out, salt="test-salt", extractors=colour_extractors())


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_load_dataset_by_config_without_split_warnings(released, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    handler = Records()
    logger = logging.getLogger("datasets")
    logger.addHandler(handler)
    try:
        pose = datasets.load_dataset(str(released.path), "pose", cache_dir=str(tmp_path / "cache"))
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in handler.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "splits" in w or "dataset_info" in w], warnings
    assert pose["train"].num_rows + pose["test"].num_rows == 5
    # the card's split sizes are what load_dataset reports in its own split info
    header = release.read_card_header(released.path / "README.md")
    info = {c["config_name"]: c for c in header["dataset_info"]}
    for split in ("train", "test"):
        (entry,) = [s for s in info["pose"]["splits"] if s["name"] == split]
        assert entry["num_examples"] == pose[split].num_rows
        assert entry["num_bytes"] == pose[split].info.splits[split].num_bytes > 0
    assert info["pose"]["dataset_size"] == sum(s["num_bytes"] for s in info["pose"]["splits"])


def test_license_other_names_its_license(released):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(released.path / "README.md")
    assert card.data.license == "other"
    assert card.data.license_name and card.data.license_link
    # the link points at the card's own License section, which holds the terms
    assert card.data.license_link == "README.md#license"
    assert "\n## License\n" in card.text


def test_card_shows_score_histograms(released):
    text = (released.path / "README.md").read_text()
    scores = pa.concat_tables(pq.read_table(f) for f in sorted((released.path / "data" / "scores").glob("*.parquet")))
    body = text.split("## Score distributions", 1)[1]
    for challenge in sorted(set(scores.column("challenge").to_pylist())):
        section = body.split(f"### {challenge} ", 1)[1].split("### ", 1)[0]
        mine = scores.filter(pa.compute.equal(scores.column("challenge"), challenge))
        norm = np.asarray(mine.column("score").to_pylist())
        expected, _ = np.histogram(norm, bins=10, range=(0.0, 1.0))
        normalised = section.split("Normalised score:", 1)[1]
        counts = [int(m) for m in re.findall(r"^\| \[[^|]+\| (\d+) \|", normalised, flags=re.M)]
        assert counts == expected.tolist()
        raw = np.asarray(mine.column("raw_score").to_pylist())
        raw_part = section.split("Normalised score:", 1)[0]
        raw_counts = [int(m) for m in re.findall(r"^\| \[?[^|]+\| (\d+) \|", raw_part, flags=re.M)]
        assert sum(raw_counts) == len(raw)
