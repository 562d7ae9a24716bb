"""Readers and the bad inputs a user can hand them."""

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from components.data.schema import COLUMNS
from components.data.sources import (
    FileSourceConfig,
    IncomingSourceConfig,
    IngestConfig,
    append_new,
    ingest,
    read_bbc,
    read_file,
    read_files,
)
from components.errors import KilnError
from tests.conftest import tiny_frame


def test_bbc_corpus():
    frame = read_bbc()
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 2225
    assert sorted(frame["label"].unique()) == ["business", "entertainment", "politics", "sports", "tech"]
    assert frame["id"].is_unique
    # The one Latin-1 article decodes to a real pound sign, not a replacement character.
    assert "\ufffd" not in "".join(frame["text"])
    assert "£15.8m" in frame.set_index("id").loc["bbc/sports/199", "text"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_each_format(tmp_path, suffix):
    data = tiny_frame(2)
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        data.to_csv(path, index=False)
    elif suffix == ".parquet":
        data.to_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in data.to_dict("records")))
    frame = read_file(path, FileSourceConfig(), "file")
    assert list(frame.columns) == list(COLUMNS)
    assert frame["text"].tolist() == data["text"].tolist()
    assert frame["id"].iloc[0] == f"data{suffix}:2"


def test_configured_columns(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"uid": ["a", "b"], "body": ["one text here", "two"], "topic": ["x", "y"]}).to_csv(path, index=False)
    cfg = FileSourceConfig(text_column="body", label_column="topic", id_column="uid")
    frame = read_file(path, cfg, "file")
    assert frame["id"].tolist() == ["a", "b"] and frame["label"].tolist() == ["x", "y"]


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD = {
    "broken quoting": ("q.csv", b'text,label\n"an unclosed quote,business\nok,tech\n', r"q\.csv: malformed CSV"),
    "extra field": ("f.csv", b"text,label\na,b\nc,d,e\n", r"f\.csv: malformed CSV: .*line 3"),
    "missing column": (
        "m.csv",
        b"body,label\nhello,tech\n",
        r"m\.csv: no text column 'text' \(columns found: body, label\)",
    ),
    "wrong encoding": (
        "e.csv",
        b"text,label\nok,tech\nbad \xa3 pound,tech\n",
        r"e\.csv: line 3: bytes a3 are not valid utf-8",
    ),
    "empty file": ("z.csv", b"", r"z\.csv: the file is empty"),
    "header only": ("h.csv", b"text,label\n", r"h\.csv: has a header but no rows"),
    "binary junk": ("b.csv", bytes(range(256)) * 8, r"b\.csv: holds NUL bytes"),
    "labels all null": (
        "n.csv",
        b"text,label\nfirst text,\nsecond text,\n",
        r"n\.csv: label column 'label' is empty in every row",
    ),
    "bad json line": ("j.jsonl", b'{"text": "a", "label": "b"}\n{"text": oops}\n', r"j\.jsonl: line 2: invalid JSON"),
    "json not object": ("k.jsonl", b'["a", "b"]\n', r"k\.jsonl: line 1: expected a JSON object"),
    "broken parquet": ("p.parquet", b"PAR1 this is not parquet", r"p\.parquet: not a readable Parquet file"),
    "unknown extension": ("d.txt", b"text,label\n", r"d\.txt: cannot tell the format"),
    "repeated column": (
        "r.csv",
        b"text,label,text\nfirst,tech,second\n",
        r"r\.csv: header row: column 'text' appears 2 times \(columns 1, 3\)",
    ),
    "repeated json key": (
        "r.jsonl",
        b'{"text": "a", "label": "b"}\n{"text": "c", "label": "d", "text": "e"}\n',
        r"r\.jsonl: line 2: key 'text' appears more than once in one object",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_names_file_and_problem(tmp_path, case):
    name, data, message = BAD[case]
    path = write(tmp_path, name, data)
    with pytest.raises(KilnError, match=message):
        read_file(path, FileSourceConfig(), "file")


def test_no_file_matches(tmp_path):
    cfg = IngestConfig(source="file", file=FileSourceConfig(path="data/external/*.csv"))
    with pytest.raises(KilnError, match=r"no file matches 'data/external/\*\.csv'"):
        ingest(cfg, tmp_path)


def test_incoming_appends_new_rows_once(tmp_path):
    base = tiny_frame(3)
    (tmp_path / "data/external").mkdir(parents=True)
    base.to_csv(tmp_path / "data/external/base.csv", index=False)
    incoming = tmp_path / "data/incoming"
    incoming.mkdir()
    batch = pd.DataFrame(
        {"text": [base["text"][0].upper(), "A brand new story about markets"], "label": ["business", "business"]}
    )
    batch.to_csv(incoming / "batch1.csv", index=False)
    cfg = IngestConfig(source="incoming", incoming={"base": "file"})
    frame = ingest(cfg, tmp_path)
    # The re-cased copy of a known text is a duplicate; only the new story is added.
    assert len(frame) == len(base) + 1
    assert frame["source"].iloc[-1] == "batch:batch1.csv"
    # A learned batch moved to processed/ gives the same dataset.
    (tmp_path / "data/processed").mkdir()
    (incoming / "batch1.csv").rename(tmp_path / "data/processed/batch1.csv")
    again = ingest(cfg, tmp_path)
    pd.testing.assert_frame_equal(frame, again)


def test_append_new_skips_known_ids():
    current = pd.DataFrame({"id": ["a"], "text": ["one"], "label": ["x"]})
    batch = pd.DataFrame({"id": ["a", "b"], "text": ["changed", "two"], "label": ["x", "y"]})
    assert append_new(current, batch)["id"].tolist() == ["a", "b"]


def test_repeated_parquet_column_is_refused(tmp_path):
    path = tmp_path / "r.parquet"
    table = pa.Table.from_arrays(
        [pa.array(["first"]), pa.array(["tech"]), pa.array(["second"])], names=["text", "label", "text"]
    )
    pq.write_table(table, path)
    with pytest.raises(KilnError, match=r"r\.parquet: Parquet schema: column 'text' appears 2 times \(fields 1, 3\)"):
        read_file(path, FileSourceConfig(), "file")


@pytest.mark.parametrize("pattern", ["/etc/passwd", "../outside.csv", "data/../../outside.csv"])
def test_paths_that_leave_the_repository_are_refused(tmp_path, pattern):
    with pytest.raises(ValidationError, match=r"ingest\.file\.path '.*' must be relative to the repository"):
        FileSourceConfig(path=pattern)
    # The readers refuse it too, whoever built the pattern.
    with pytest.raises(KilnError, match=r"ingest: ingest\.file\.path '.*' must be relative .* under .*data"):
        read_files(pattern, FileSourceConfig(), tmp_path, "file")


@pytest.mark.parametrize("key", ["dir", "processed_dir", "quarantine_dir"])
def test_incoming_folders_must_stay_in_the_repository(key):
    with pytest.raises(ValidationError, match=rf"ingest\.incoming\.{key} '/srv/batches' must be relative"):
        IncomingSourceConfig(**{key: "/srv/batches"})


def repo_with_outside_file(tmp_path):
    """(repo root, a CSV beside the repo, not in it)."""
    root = tmp_path / "repo"
    (root / "data/external").mkdir(parents=True)
    outside = tmp_path / "secret.csv"
    tiny_frame(2).to_csv(outside, index=False)
    return root, outside


def test_symlink_out_of_the_data_folder_is_refused(tmp_path):
    root, outside = repo_with_outside_file(tmp_path)
    (root / "data/external/mine.csv").symlink_to(outside)
    with pytest.raises(
        KilnError,
        match=r"ingest: ingest\.file\.path: .*mine\.csv is a link to .*secret\.csv, "
        r"outside the folders ingest may read \(.*data\)",
    ):
        ingest(IngestConfig(source="file", file={"path": "data/external/*.csv"}), root)


def test_batch_linking_out_of_the_allowed_folders_is_refused(tmp_path):
    root, outside = repo_with_outside_file(tmp_path)
    tiny_frame(2).to_csv(root / "data/external/base.csv", index=False)
    (root / "data/incoming").mkdir()
    (root / "data/incoming/batch.csv").symlink_to(outside)
    cfg = IngestConfig(source="incoming", incoming={"base": "file"})
    with pytest.raises(KilnError, match=r"ingest: ingest\.incoming\.dir: .*batch\.csv is a link to .*secret\.csv"):
        ingest(cfg, root)


def test_only_the_allowed_folders_are_read(tmp_path):
    (tmp_path / "data/external").mkdir(parents=True)
    tiny_frame(2).to_csv(tmp_path / "data/external/mine.csv", index=False)
    cfg = IngestConfig(source="file", file={"path": "data/external/mine.csv"})
    assert len(ingest(cfg, tmp_path, allowed=[Path("data/external")])) == 10
    with pytest.raises(KilnError, match=r"mine\.csv is outside the folders ingest may read \(.*data/incoming\)"):
        ingest(cfg, tmp_path, allowed=[tmp_path / "data/incoming"])
