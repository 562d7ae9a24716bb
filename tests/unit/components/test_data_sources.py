"""Readers and the bad inputs a user can hand them."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from components.data import sources
from components.data.bbc import read_bbc
from components.data.folders import batch_files
from components.data.schema import COLUMNS
from components.data.sources import (
    append_new,
    ingest,
    read_file,
    read_files,
)
from components.errors import KilnError
from tests.support.data import good_batch, tiny_frame
from tests.support.params import shipped


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
    frame = read_file(path, shipped("ingest.file"), "file")
    assert list(frame.columns) == list(COLUMNS)
    assert frame["text"].tolist() == data["text"].tolist()
    assert frame["id"].iloc[0] == f"data{suffix}:2"


def test_configured_columns(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"uid": ["a", "b"], "body": ["one text here", "two"], "topic": ["x", "y"]}).to_csv(path, index=False)
    cfg = shipped("ingest.file", text_column="body", label_column="topic", id_column="uid")
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
        read_file(path, shipped("ingest.file"), "file")


def test_no_file_matches(tmp_path):
    cfg = shipped("ingest", source="file", file={"path": "data/external/*.csv"})
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
    cfg = shipped("ingest", source="incoming", incoming={"base": "file"})
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
        read_file(path, shipped("ingest.file"), "file")


def test_numbers_in_the_text_column_of_jsonl_name_the_line_and_column(tmp_path):
    # JSON keeps its types: a number is not a text. The blank line counts, as in an editor.
    data = b'{"text": "a story", "label": "tech"}\n\n{"text": 42, "label": "tech"}\n{"text": [1], "label": "tech"}\n'
    path = write(tmp_path, "n.jsonl", data)
    with pytest.raises(KilnError, match=r"n\.jsonl: line 3: column 'text' holds int 42, not text \(1 more such row\)$"):
        read_file(path, shipped("ingest.file"), "file")
    data = b'{"id": "r1", "body": "fine", "topic": "x"}\n{"id": "r2", "body": 3.5, "topic": "x"}\n'
    path = write(tmp_path, "i.jsonl", data)
    cfg = shipped("ingest.file", text_column="body", label_column="topic", id_column="id")
    with pytest.raises(KilnError, match=r"i\.jsonl: line 2 \(id r2\): column 'body' holds float 3\.5, not text$"):
        read_file(path, cfg, "file")


def test_a_text_column_of_another_type_in_parquet_names_the_row(tmp_path):
    path = tmp_path / "n.parquet"
    pd.DataFrame({"text": [7, 8, 9], "label": ["a", "b", "c"]}).to_parquet(path)
    message = r"n\.parquet: row 1: column 'text' holds int64 7, not text \(2 more such rows\)"
    with pytest.raises(KilnError, match=message):
        read_file(path, shipped("ingest.file"), "file")


def test_digits_in_csv_and_missing_texts_are_not_refused(tmp_path):
    # CSV has no types: "42" is a text. A missing text is validation's to quarantine.
    path = write(tmp_path, "d.csv", b"text,label\n42,tech\n,tech\n")
    assert read_file(path, shipped("ingest.file"), "file")["text"].iloc[0] == "42"
    path = write(tmp_path, "m.jsonl", b'{"text": null, "label": "tech"}\n{"text": "ok", "label": "tech"}\n')
    assert read_file(path, shipped("ingest.file"), "file")["text"].tolist()[1:] == ["ok"]


@pytest.mark.parametrize("pattern", ["/etc/passwd", "../outside.csv", "data/../../outside.csv"])
def test_paths_that_leave_the_repository_are_refused(tmp_path, pattern):
    with pytest.raises(ValidationError, match=r"ingest\.file\.path '.*' must be relative to the repository"):
        shipped("ingest.file", path=pattern)
    # The readers refuse it too, whoever built the pattern.
    with pytest.raises(KilnError, match=r"ingest: ingest\.file\.path '.*' must be relative .* under .*data"):
        read_files(pattern, shipped("ingest.file"), tmp_path, "file")


@pytest.mark.parametrize("key", ["dir", "processed_dir", "quarantine_dir"])
def test_incoming_folders_must_stay_in_the_repository(key):
    with pytest.raises(ValidationError, match=rf"ingest\.incoming\.{key} '/srv/batches' must be relative"):
        shipped("ingest.incoming", **{key: "/srv/batches"})


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
        ingest(shipped("ingest", source="file", file={"path": "data/external/*.csv"}), root)


def test_batch_linking_out_of_the_allowed_folders_is_refused(tmp_path):
    root, outside = repo_with_outside_file(tmp_path)
    tiny_frame(2).to_csv(root / "data/external/base.csv", index=False)
    (root / "data/incoming").mkdir()
    (root / "data/incoming/batch.csv").symlink_to(outside)
    cfg = shipped("ingest", source="incoming", incoming={"base": "file"})
    with pytest.raises(KilnError, match=r"ingest: ingest\.incoming\.dir: .*batch\.csv is a link to .*secret\.csv"):
        ingest(cfg, root)


def test_only_the_allowed_folders_are_read(tmp_path):
    (tmp_path / "data/external").mkdir(parents=True)
    tiny_frame(2).to_csv(tmp_path / "data/external/mine.csv", index=False)
    cfg = shipped("ingest", source="file", file={"path": "data/external/mine.csv"})
    assert len(ingest(cfg, tmp_path, allowed=[Path("data/external")])) == 10
    with pytest.raises(KilnError, match=r"mine\.csv is outside the folders ingest may read \(.*data/incoming\)"):
        ingest(cfg, tmp_path, allowed=[tmp_path / "data/incoming"])


# --- The allowed folders themselves stay in the repository ---------------------------------
# A data folder that is itself a link elsewhere would let in every file there: links to
# files were refused, but data/external -> /elsewhere was followed (60 rows of a secret.csv).

# As the ingest stage gives them: the folders dvc.yaml lists as its inputs.
STAGE_FOLDERS = [Path("data/external"), Path("data/incoming"), Path("data/processed")]


def repo_with_linked_folder(tmp_path, folder: str):
    """(repo root, its real path, the real path of the outside folder that `folder` is a
    link to); the outside folder holds a CSV, data/external a plain one unless linked."""
    root = tmp_path / "repo"
    (root / "data/external").mkdir(parents=True)
    tiny_frame(2).to_csv(root / "data/external/base.csv", index=False)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    tiny_frame(12).to_csv(outside / "secret.csv", index=False)
    if (root / folder).exists():
        shutil.rmtree(root / folder)
    (root / folder).symlink_to(outside, target_is_directory=True)
    return root, root.resolve(), outside.resolve()


@pytest.mark.parametrize(
    "folder, allowed",
    [("data/external", STAGE_FOLDERS), ("data/incoming", STAGE_FOLDERS), ("data", None)],  # None: root/data
    ids=["external", "incoming", "data"],
)
@pytest.mark.parametrize("source", ["file", "incoming"])
def test_a_data_folder_linked_out_of_the_repository_is_refused(tmp_path, monkeypatch, folder, allowed, source):
    root, real_root, outside = repo_with_linked_folder(tmp_path, folder)
    monkeypatch.setattr(sources, "read_file", lambda path, *_: pytest.fail(f"{path} was read"))
    cfg = shipped("ingest", source=source, incoming={"base": "file"}, file={"path": "data/external/*.csv"})
    with pytest.raises(KilnError) as refused:
        ingest(cfg, root, allowed=allowed)
    assert str(refused.value) == (
        f"ingest: {root / folder} is a link to {outside}, outside the repository {real_root}, so DVC cannot "
        "track what ingest would read there; replace the link with a copy of the data"
    )


def test_the_batch_check_of_retrain_refuses_a_linked_out_folder_too(tmp_path):
    root, _, outside = repo_with_linked_folder(tmp_path, "data/incoming")
    with pytest.raises(KilnError, match=rf"ingest: .*data/incoming is a link to {outside}, outside the repository"):
        batch_files(root / "data/incoming", root, [root / p for p in STAGE_FOLDERS])
    with pytest.raises(KilnError, match=r"data/incoming is a link to .*; replace the link with a copy of the data"):
        batch_files(root / "data/incoming", root)  # allowed: the folder itself


def test_plain_data_folders_and_links_within_the_repository_are_read(tmp_path):
    root = tmp_path / "repo"
    (root / "data/external").mkdir(parents=True)
    tiny_frame(2).to_csv(root / "data/external/base.csv", index=False)
    (root / "shared").mkdir()
    good_batch(rows_per_label=2).to_csv(root / "shared/batch.csv", index=False)
    (root / "data/incoming").symlink_to(root / "shared", target_is_directory=True)
    cfg = shipped("ingest", source="incoming", incoming={"base": "file"}, file={"path": "data/external/*.csv"})
    assert len(ingest(cfg, root, allowed=STAGE_FOLDERS)) == 20
    # A repository reached through a link is the same repository.
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    assert len(ingest(cfg, tmp_path / "link", allowed=STAGE_FOLDERS)) == 20


def test_unlabeled_texts_are_read_from_every_format_and_refused_in_one_line(tmp_path):
    from components.data.sources import read_unlabeled

    folder = tmp_path / "data/unlabeled"
    folder.mkdir(parents=True)
    allowed = [folder]
    (folder / ".gitkeep").touch()
    assert read_unlabeled(shipped("unlabeled"), tmp_path, allowed).empty  # none yet: no rows, no error
    pd.DataFrame({"body": ["one text", "two texts"]}).to_csv(folder / "a.csv", index=False)
    (folder / "b.jsonl").write_text(json.dumps({"body": "three"}) + "\n")
    pd.DataFrame({"body": ["four"]}).to_parquet(folder / "c.parquet")
    read = read_unlabeled(shipped("unlabeled", text_column="body"), tmp_path, allowed)
    assert read.to_dict("list") == {
        "id": ["a.csv:2", "a.csv:3", "b.jsonl:2", "c.parquet:2"],
        "text": ["one text", "two texts", "three", "four"],
    }
    with pytest.raises(KilnError, match=r"^unlabeled: .*a\.csv: no text column 'text' .*set unlabeled\.text_column$"):
        read_unlabeled(shipped("unlabeled"), tmp_path, allowed)
    (folder / "b.jsonl").write_text(json.dumps({"body": "three"}) + "\n" + json.dumps({"body": 42}) + "\n")
    with pytest.raises(KilnError, match=r"^unlabeled: .*b\.jsonl: line 2: column 'body' holds int 42, not text$"):
        read_unlabeled(shipped("unlabeled", text_column="body"), tmp_path, allowed)
