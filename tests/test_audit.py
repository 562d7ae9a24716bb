"""The audit trail: the hash chain on its own, then the log Kiln writes next to an MLflow
(SQLite) store, its copy there, and `kiln audit --verify` catching edits and deletions."""

import json

import pytest

from components.deploy.audit import GENESIS, chain, digest, verify
from pipelines import audit, tracking
from tests.conftest import kiln


def _log(n: int) -> list[dict]:
    entries: list[dict] = []
    for i in range(n):
        entries.append(chain(entries[-1] if entries else None, {"action": "promote", "version": str(i + 1)}))
    return entries


def test_an_untouched_chain_verifies_and_links_each_entry_to_the_one_before():
    entries = _log(3)
    assert verify(entries) == []
    assert entries[0]["prev"] == GENESIS and [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[2]["prev"] == entries[1]["hash"] == digest(entries[1])


def test_an_edited_entry_is_found_even_with_its_hash_recomputed():
    entries = _log(3)
    edited = [dict(e) for e in entries]
    edited[1]["version"] = "7"
    assert any("entry 2: its content does not match its hash" in p for p in verify(edited))
    # A forger who recomputes the edited entry's hash breaks the next link instead.
    edited[1]["hash"] = digest(edited[1])
    assert verify(edited) == ["entry 3: does not link to the entry before it (deleted, inserted or edited)"]


def test_a_deleted_or_moved_entry_is_found():
    entries = _log(4)
    assert "entry 2: numbered 3, so an entry before it was deleted or moved" in verify([entries[0], *entries[2:]])
    assert verify([entries[1], entries[0], *entries[2:]])


def test_a_deleted_tail_is_found_only_against_the_copy_kept_elsewhere():
    entries = _log(3)
    copy = {e["seq"]: e["hash"] for e in entries}
    assert verify(entries[:2]) == []
    assert verify(entries[:2], copy) == ["entry 3: recorded in the tracking server but missing from the log (deleted)"]
    rewritten = _log(2) + [chain(entries[1], {"action": "force", "version": "9"})]
    assert "entry 3: differs from the copy in the tracking server (rewritten)" in verify(rewritten, copy)


def test_the_chains_own_fields_cannot_be_given():
    with pytest.raises(ValueError, match="chain's own fields"):
        chain(None, {"hash": "x"})


@pytest.fixture
def store(tmp_path, monkeypatch):
    # Where the CLI looks by default in a repository (dvc.yaml and params.yaml make one).
    (tmp_path / "mlflow").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow/mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("")
    return tmp_path


def test_entries_are_appended_copied_to_mlflow_and_checked_by_the_cli(store):
    client = tracking.client()
    first = audit.record(store, client, "batch-learned", "kiln-x", data="sha256:ab", file="data/processed/a.csv")
    second = audit.record(store, client, "force", "kiln-x", "2", why="hotfix", reasons=[])
    assert second["prev"] == first["hash"] and second["log"] == first["log"] and second["who"]
    assert audit.recorded(client, first["log"]) == {1: first["hash"], 2: second["hash"]}
    assert audit.check(store, client) == []

    intact = kiln("audit", "--verify", cwd=store)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit log intact: 2 entries; the hash chain and the tracking server's copy agree" in intact.stdout
    listed = kiln("audit", "--action", "force", cwd=store)
    assert "force" in listed.stdout and "kiln-x v2" in listed.stdout and "why: hotfix" in listed.stdout
    assert "batch-learned" not in listed.stdout

    log = audit.path(store)
    lines = log.read_text().splitlines()
    forged = json.loads(lines[1]) | {"why": "routine"}
    log.write_text(lines[0] + "\n" + json.dumps(forged) + "\n")
    broken = kiln("audit", "--verify", cwd=store)
    assert broken.returncode == 1 and "entry 2: its content does not match its hash (edited)" in broken.stderr
    assert "kiln: error: the audit log" in broken.stderr and "Traceback" not in broken.stderr


def test_a_garbled_last_line_stops_new_entries_instead_of_chaining_past_it(store):
    client = tracking.client()
    audit.record(store, client, "promote", "kiln-x", "1")
    with audit.path(store).open("a") as log:
        log.write("not json\n")
    from components.errors import KilnError

    with pytest.raises(KilnError, match="last line is not an audit entry"):
        audit.record(store, client, "promote", "kiln-x", "2")
    assert audit.check(store, None)
