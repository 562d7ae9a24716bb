"""Retraining on new batches: the batch checks, drift, and the retrain flow's refusals."""

import json
from pathlib import Path

import pandas as pd
import pytest
from tokenizers import Tokenizer

from components.data.batches import check
from components.data.drift import drift, profile, psi
from components.text.tokenizer import train_tokenizer
from tests.support.data import LABELS, drifted_batch, good_batch, tiny_frame
from tests.support.params import set_params, shipped
from tests.support.repo import copy_repo, kiln
from tests.support.tiny import incoming_repo


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer(tiny_frame()["text"], shipped("tokenize", vocab_size=300, min_frequency=1))


def dataset() -> pd.DataFrame:
    frame = tiny_frame()
    return frame.assign(
        id=[f"mine.csv:{i + 2}" for i in range(len(frame))],
        source="file",
        ingested_at=pd.Timestamp("2026-01-01", tz="UTC"),
    )[["id", "text", "label", "source", "ingested_at"]]


def test_psi_is_zero_for_equal_shares_and_grows_with_shift():
    shares = {label: 0.2 for label in LABELS}
    assert psi(shares, shares) == pytest.approx(0.0)
    assert psi(shares, {"tech": 1.0}) > 5


def test_drift_passes_a_batch_like_the_training_data_and_flags_a_shifted_one(tokenizer):
    reference = profile(tiny_frame(), tokenizer)
    assert not drift(reference, good_batch(), tokenizer, shipped("retrain.drift")).failed
    failed = {c.name for c in drift(reference, drifted_batch(), tokenizer, shipped("retrain.drift")).failed}
    assert failed == {"labels", "length", "vocabulary"}


def _check(tmp_path: Path, name: str, content: str | pd.DataFrame, tokenizer=None):
    path = tmp_path / name
    if isinstance(content, pd.DataFrame):
        content.to_csv(path, index=False)
    else:
        path.write_text(content)
    reference = profile(tiny_frame(), tokenizer) if tokenizer else None
    return check(
        path, dataset(), shipped("ingest.file"), shipped("validate"), reference, tokenizer, shipped("retrain.drift")
    )


def test_batch_with_an_unknown_label_is_refused_naming_it(tmp_path):
    batch = good_batch().assign(label=["science"] + ["tech"] * 19)
    outcome = _check(tmp_path, "b.csv", batch)
    assert not outcome.accepted
    assert "unknown label(s) 'science'" in outcome.reasons[0] and "b.csv:2" in outcome.reasons[0]


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("empty.csv", "", "the file is empty"),
        ("header.csv", "text,label\n", "has a header but no rows"),
        ("batch.xlsx", "PK\x03\x04", "cannot tell the format"),
        ("columns.csv", "body,topic\nsome text here and more,tech\n", "no text column 'text'"),
    ],
)
def test_unreadable_batches_are_refused_with_the_reason(tmp_path, name, content, expected):
    outcome = _check(tmp_path, name, content)
    assert not outcome.accepted and expected in outcome.reasons[0]


def test_rows_already_in_the_dataset_are_dropped(tmp_path, tokenizer):
    batch = pd.concat([tiny_frame().head(5), good_batch().head(5)])
    outcome = _check(tmp_path, "b.csv", batch[["text", "label"]], tokenizer)
    assert outcome.rows == 10 and outcome.new_rows == 5


def test_a_quarantined_batch_leaves_no_text_of_it_in_the_audit_trail(tmp_path, monkeypatch):
    """The reasons beside the quarantined file quote the batch; its audit entry and the
    entry's MLflow copy hold counts, row ids and the kinds of reason only."""
    from mlflow import MlflowClient

    from pipelines.registry import audit, audit_copy

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)  # this store, whatever tracking URI an earlier test set in this process
    # Control characters mark a wrong encoding; a validation line quotes such texts.
    garbage = good_batch().assign(text=[f"\x01\x02 SECRET-{i} scrambled" for i in range(20)])
    outcome = _check(tmp_path, "b.csv", garbage)
    assert not outcome.accepted and any("SECRET-" in reason for reason in outcome.reasons)
    audit.batch(tmp_path, client, "kiln-mine", outcome, outcome.path, learned=False)
    (entry,) = audit.read(tmp_path)
    (copy,) = audit_copy.copies(client)
    for held in (json.dumps(entry), json.dumps(copy.entry)):
        assert "SECRET" not in held and "\\u0001" not in held and "scrambled" not in held
    assert {"kind": "validation", "rows": 20, "ids": ["b.csv:2", "b.csv:3", "b.csv:4"]}.items() <= next(
        f for f in entry["detail"]["findings"] if "undecodable" in f["check"]
    ).items()
    # A label is a value of the batch too.
    unknown = _check(tmp_path, "c.csv", good_batch().assign(label="astrology"))
    assert [f.model_dump() for f in unknown.findings] == [
        {"kind": "unknown-label", "check": None, "rows": 20, "ids": ["c.csv:2", "c.csv:3", "c.csv:4"]}
    ]


def test_drifted_batch_is_refused_with_each_failed_check(tmp_path, tokenizer):
    outcome = _check(tmp_path, "b.csv", drifted_batch(), tokenizer)
    assert not outcome.accepted
    assert sum(r.startswith("drift: ") for r in outcome.reasons) == 3


@pytest.mark.slow
def test_bad_batches_are_quarantined_with_reports_and_a_notification(tmp_path, webhook):
    url, received = webhook
    repo = incoming_repo(copy_repo(tmp_path / "kiln"), retrain={"notify": {"apprise_url": url}})
    incoming = repo / "data/incoming"
    good_batch().assign(label="astrology").to_csv(incoming / "a-unknown-label.csv", index=False)
    (incoming / "b-wrong-format.xlsx").write_bytes(b"PK\x03\x04 not a table")
    (incoming / "c-empty.csv").write_text("")
    out = kiln("retrain", cwd=repo)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "3 batch(es) quarantined" in out.stderr and "kiln: error:" in out.stderr
    assert "Traceback" not in out.stderr
    homes = sorted((repo / "data/quarantine").glob("*-*"))
    assert [h.name.split("-", 1)[1] for h in homes] == ["a-unknown-label.csv", "b-wrong-format.xlsx", "c-empty.csv"]
    reasons = [json.loads((h / "report.json").read_text())["reasons"][0] for h in homes]
    assert "unknown label(s) 'astrology'" in reasons[0]
    assert "cannot tell the format" in reasons[1] and "the file is empty" in reasons[2]
    assert all((h / h.name.split("-", 1)[1]).is_file() for h in homes)
    trail = (repo / ".kiln/audit.jsonl").read_text()
    assert trail.count("batch-quarantined") == 3 and "astrology" not in trail
    assert [p.name for p in incoming.iterdir()] == [".gitkeep"]
    # Nothing reached training: the DAG never ran.
    assert not (repo / "data/raw/dataset.parquet").exists() and not (repo / "dvc.lock").exists()
    assert len(received) == 1 and "quarantined" in received[0]["title"]
    assert "a-unknown-label.csv" in received[0]["message"]


@pytest.mark.slow
def test_a_second_retrain_while_one_holds_the_repository_changes_nothing(tmp_path):
    from filelock import FileLock

    repo = incoming_repo(copy_repo(tmp_path / "kiln"))
    good_batch().to_csv(repo / "data/incoming/batch.csv", index=False)
    (repo / ".kiln").mkdir()
    with FileLock(repo / ".kiln/run.lock"):
        out = kiln("retrain", cwd=repo)
    assert out.returncode == 1
    assert "holds this repo" in out.stderr and "changed nothing" in out.stderr
    assert (repo / "data/incoming/batch.csv").is_file() and not (repo / "dvc.lock").exists()


@pytest.mark.slow
def test_retrain_fails_fast_naming_an_unreachable_tracking_server(tmp_path):
    repo = incoming_repo(copy_repo(tmp_path / "kiln"))
    good_batch().to_csv(repo / "data/incoming/batch.csv", index=False)
    out = kiln("retrain", cwd=repo, MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    assert out.returncode == 1
    assert "MLflow tracking server at http://127.0.0.1:9 is not answering" in out.stderr
    assert (repo / "data/incoming/batch.csv").is_file()


@pytest.mark.slow
def test_a_run_that_fails_halfway_keeps_the_champion_and_the_next_run_carries_on(tmp_path):
    """A stage failing after the batch was learned (here the export parity gate, made
    impossible): the stages before it stay done, and the next run starts from there."""
    repo = incoming_repo(copy_repo(tmp_path / "kiln"), export={"max_abs_diff": 1e-30})
    good_batch().to_csv(repo / "data/incoming/batch.csv", index=False)
    failed = kiln("retrain", cwd=repo)
    assert failed.returncode == 1 and "the pipeline failed" in failed.stderr, failed.stdout + failed.stderr
    assert "export" in failed.stderr and "Traceback" not in failed.stderr
    assert (repo / "data/processed/batch.csv").is_file() and (repo / "models/pruned").is_dir()
    assert not (repo / "reports/register.json").exists(), "nothing was registered"

    set_params(repo, export={"max_abs_diff": 1e-4})
    done = kiln("retrain", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    table = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in done.stdout.splitlines()
        if line.startswith("| ") and "|" in line[2:]
    }
    assert {table[s] for s in ("ingest", "validate", "split", "tokenize", "pretrain", "prune")} == {"up to date"}
    assert table["export"] == table["register"] == "ran"
    assert "no new batches; version 1 of 'kiln-mine' promoted to champion" in done.stdout
