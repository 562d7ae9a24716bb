"""`kiln retrain` on the tiny config: bad batches quarantined, a held repository, an
unreachable tracking server, and a run that fails halfway then carries on."""

import json

import pytest

from tests.support.data import good_batch
from tests.support.params import set_params
from tests.support.repo import copy_repo, kiln, kiln_here
from tests.support.tiny import incoming_repo

pytestmark = pytest.mark.slow


@pytest.mark.slow
def test_bad_batches_are_quarantined_with_reports_and_a_notification(tmp_path, webhook):
    url, received = webhook
    repo = incoming_repo(copy_repo(tmp_path / "kiln"), retrain={"notify": {"apprise_url": url}})
    incoming = repo / "data/incoming"
    good_batch().assign(label="astrology").to_csv(incoming / "a-unknown-label.csv", index=False)
    (incoming / "b-wrong-format.xlsx").write_bytes(b"PK\x03\x04 not a table")
    (incoming / "c-empty.csv").write_text("")
    out = kiln_here("retrain", cwd=repo)
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
    out = kiln_here("retrain", cwd=repo, MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    assert out.returncode == 1
    assert "MLflow tracking server at http://127.0.0.1:9 is not answering" in out.stderr
    assert (repo / "data/incoming/batch.csv").is_file()


@pytest.mark.slow
def test_a_run_that_fails_halfway_keeps_the_champion_and_the_next_run_carries_on(tmp_path):
    """A stage failing after the batch was learned (here the export parity gate, made
    impossible): the stages before it stay done, and the next run starts from there."""
    repo = incoming_repo(copy_repo(tmp_path / "kiln"), export={"max_abs_diff": 1e-30})
    good_batch().to_csv(repo / "data/incoming/batch.csv", index=False)
    failed = kiln_here("retrain", cwd=repo)
    assert failed.returncode == 1 and "the pipeline failed" in failed.stderr, failed.stdout + failed.stderr
    assert "export" in failed.stderr and "Traceback" not in failed.stderr
    assert (repo / "data/processed/batch.csv").is_file() and (repo / "models/pruned").is_dir()
    assert not (repo / "reports/register.json").exists(), "nothing was registered"

    set_params(repo, export={"max_abs_diff": 1e-4})
    done = kiln_here("retrain", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    table = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in done.stdout.splitlines()
        if line.startswith("| ") and "|" in line[2:]
    }
    assert {table[s] for s in ("ingest", "validate", "split", "tokenize", "pretrain", "prune")} == {"up to date"}
    assert table["export"] == table["register"] == "ran"
    assert "no new batches; version 1 of 'kiln-mine' promoted to champion" in done.stdout
