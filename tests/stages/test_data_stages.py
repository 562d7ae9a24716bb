"""The data stages and the tokenizer run as a user runs them, through `kiln stage`, `kiln run`
and `dvc repro`, in a copy of the repo: bad input fails with one line and costs nothing."""

import json
import re

import pandas as pd
import pytest

from tests.support.data import tiny_frame
from tests.support.params import set_params
from tests.support.repo import BIN, kiln_here, run

pytestmark = pytest.mark.slow


def use_file(repo, data: bytes | pd.DataFrame, name: str = "mine.csv") -> None:
    path = repo / "data" / "external" / name
    if isinstance(data, pd.DataFrame):
        data.to_csv(path, index=False)
    else:
        path.write_bytes(data)
    set_params(repo, ingest={"source": "file", "file": {"path": f"data/external/{name}"}})


def test_bad_file_fails_ingest_and_keeps_the_last_good_dataset(repo):
    use_file(repo, tiny_frame())
    assert kiln_here("stage", "ingest", cwd=repo).returncode == 0
    good = (repo / "data/raw/dataset.parquet").read_bytes()
    report = (repo / "reports/pii.json").read_bytes()
    use_file(repo, b'text,label\n"never closed,tech\nx,y\n')
    out = kiln_here("stage", "ingest", cwd=repo)
    assert out.returncode == 1
    assert "kiln: error: ingest: " in out.stderr and "mine.csv: malformed CSV" in out.stderr
    assert "Traceback" not in out.stderr
    # The earlier good run's outputs are as they were (DVC knows them for the old input):
    # a failed run costs the user nothing.
    assert (repo / "data/raw/dataset.parquet").read_bytes() == good
    assert (repo / "reports/pii.json").read_bytes() == report
    assert not (repo / ".kiln/previous").exists()
    # A JSONL text column of numbers: one line naming the file, the line and the value.
    use_file(repo, b'{"text": "A story", "label": "tech"}\n{"text": 42, "label": "tech"}\n', "mine.jsonl")
    out = kiln_here("stage", "ingest", cwd=repo)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"kiln: error: ingest: {repo}/data/external/mine.jsonl: line 2: column 'text' holds int 42, not text"
    )
    assert (repo / "data/raw/dataset.parquet").read_bytes() == good


def test_params_typo_fails_before_any_work(repo):
    set_params(repo, split={"tset": 0.2})
    store = (repo / "mlflow/mlflow.db").read_bytes()
    out = kiln_here("stage", "ingest", cwd=repo)
    assert out.returncode == 1
    assert "split.tset: unknown key" in out.stderr
    assert not (repo / "data/raw/dataset.parquet").exists()
    assert (repo / "mlflow/mlflow.db").read_bytes() == store  # no run, not even a failed one


def test_failed_validation_stops_dvc_repro(repo):
    frame = tiny_frame()
    frame.loc[0, "label"] = "sprot"
    frame.loc[1, "text"] = ""
    use_file(repo, frame)
    out = run([str(BIN / "dvc"), "repro"], repo)
    assert out.returncode != 0
    combined = out.stdout + out.stderr
    # The unknown label and the empty text; one row in 60 (1.7 %) is above the rarest share.
    assert "validate: 2 expectation(s) failed on data/raw/dataset.parquet" in combined
    assert "expect_column_values_to_be_in_set(label): 1 rows, e.g. 'sprot'" in combined
    assert not (repo / "data/validated/dataset.parquet").exists()
    assert not (repo / "data/split/train.parquet").exists()
    report = json.loads((repo / "reports/validation.json").read_text())
    assert report["success"] is False


def test_quarantine_policy_lets_the_run_go_on(repo):
    frame = tiny_frame(40)
    frame.loc[0, "label"] = "sprot"
    use_file(repo, frame)
    set_params(repo, validate={"policy": "quarantine", "max_quarantine_share": 0.05})
    out = kiln_here("run", "split", cwd=repo)
    assert out.returncode == 0, out.stdout + out.stderr
    quarantined = pd.read_parquet(repo / "data/quarantine/rows.parquet")
    assert quarantined["id"].tolist() == ["mine.csv:2"]
    assert quarantined["reason"].tolist() == ["expect_column_values_to_be_in_set(label)"]
    assert (repo / "data/split/train.parquet").exists()


def test_kiln_run_stops_on_a_user_error_with_its_message(repo):
    use_file(repo, b"body,label\nhello there,tech\n")
    out = kiln_here("run", cwd=repo)
    assert out.returncode == 1
    assert "kiln: error: ingest: " in out.stderr and "no text column 'text'" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    # The failed stage's row says so, with the time it took before failing.
    assert re.search(r"^ingest\s+failed\s+\d+\.\d s", out.stdout, re.MULTILINE), out.stdout


@pytest.mark.slow
def test_stage_learns_from_train_only(repo):
    frame = tiny_frame(30)
    # A marker word per row, three times so it clears min_frequency; where each marker
    # lands tells whether the tokenizer saw that row's split.
    frame["text"] = [f"{t} marker{i}x marker{i}x marker{i}x" for i, t in enumerate(frame["text"])]
    frame.to_csv(repo / "data/external/mine.csv", index=False)
    set_params(repo, ingest={"source": "file", "file": {"path": "data/external/mine.csv"}})
    out = kiln_here("run", "tokenize", cwd=repo)
    assert out.returncode == 0, out.stdout + out.stderr
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(repo / "models/tokenizer.json")).get_vocab()
    splits = {name: pd.read_parquet(repo / f"data/split/{name}.parquet") for name in ("train", "val", "test")}

    def markers(split: str) -> set[str]:
        return {w for t in splits[split]["text"] for w in t.split() if w.startswith("marker")}

    assert markers("train") and markers("train") <= set(vocab)
    assert markers("val") | markers("test")
    assert not (markers("val") | markers("test")) & set(vocab)
