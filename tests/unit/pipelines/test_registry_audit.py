"""The audit trail: the log Kiln writes next to an MLflow (SQLite) store, its copy there,
and `kiln audit --verify` catching edits, deletions and a lost log, with `kiln audit
--restore` rebuilding it; a quarantined batch's entry holds none of its text. (The hash
chain on its own: tests/unit/components/test_audit.py.)"""

import json
import shutil

import pytest

from components.audit import chain, describe
from components.errors import KilnError
from pipelines.registry import audit, audit_copy
from pipelines.tracking import runs
from tests.support.data import check_batch, good_batch
from tests.support.repo import ROOT, kiln_here
from tests.support.shared import rechain
from tests.support.stores import empty_store

# The registered model of a repository whose params.yaml is empty (the defaults).
MODEL = "kiln-bbc-news"


@pytest.fixture
def store(tmp_path, monkeypatch):
    # Where the CLI looks by default in a repository (dvc.yaml and params.yaml make one).
    uri = empty_store(tmp_path / "mlflow/mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_entries_are_appended_copied_to_mlflow_and_checked_by_the_cli(store):
    client = runs.client()
    first = audit.record(store, client, "batch-learned", "kiln-x", data="sha256:ab", file="data/processed/a.csv")
    second = audit.record(store, client, "force", "kiln-x", "2", why="hotfix", reasons=[])
    assert second["prev"] == first["hash"] and second["log"] == first["log"] and second["who"]
    # Each run holds every field of its entry, and where it came from.
    found = sorted(audit_copy.copies(client), key=lambda c: c.entry["seq"])
    assert [c.entry for c in found] == [first, second]
    assert {c.origin for c in found} == {audit.origin(store)}
    assert audit_copy.check(store, client, MODEL).problems == []

    intact = kiln_here("audit", "--verify", cwd=store)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit log intact: 2 entries; the hash chain and the tracking server's copy agree" in intact.stdout
    listed = kiln_here("audit", "--action", "force", cwd=store)
    assert "force" in listed.stdout and "kiln-x v2" in listed.stdout and "why: hotfix" in listed.stdout
    assert "batch-learned" not in listed.stdout

    log = audit.path(store)
    lines = log.read_text().splitlines()
    forged = json.loads(lines[1]) | {"why": "routine"}
    log.write_text(lines[0] + "\n" + json.dumps(forged) + "\n")
    broken = kiln_here("audit", "--verify", cwd=store)
    assert broken.returncode == 1 and "entry 2: its content does not match its hash (edited)" in broken.stderr
    assert "kiln: error: the audit log" in broken.stderr and "Traceback" not in broken.stderr


def test_a_garbled_last_line_stops_new_entries_instead_of_chaining_past_it(store):
    client = runs.client()
    audit.record(store, client, "promote", "kiln-x", "1")
    with audit.path(store).open("a") as log:
        log.write("not json\n")
    with pytest.raises(KilnError, match="last line is not an audit entry"):
        audit.record(store, client, "promote", "kiln-x", "2")
    assert audit_copy.check(store, None, MODEL).problems


def test_a_lost_log_fails_verify_naming_each_missing_entry_and_restore_rebuilds_it(store):
    client = runs.client()
    for number, action in (("1", "promote"), ("2", "force"), ("3", "refuse")):
        audit.record(store, client, action, "kiln-x", number, why="review")
    log = audit.path(store)
    whole = log.read_text()
    entries = audit.read(store)
    rechained = "".join(json.dumps(e) + "\n" for e in rechain([entries[0], entries[2]], "f" * 32))
    cases = {
        "emptied": ("", [1, 2, 3]),
        "deleted": (None, [1, 2, 3]),
        "truncated": (whole.splitlines()[0] + "\n", [2, 3]),
        "re-chained under a new log id, one entry dropped": (rechained, [2]),
    }
    # Each case through the check itself; the CLI for a missing log and a cut one.
    for case, (text, missing) in cases.items():
        if text is None:
            log.unlink()
        else:
            log.write_text(text)
        gone = "recorded in the tracking server but missing from the log (deleted)"
        expected = [f"entry {seq}: {gone}: {describe(entries[seq - 1])}" for seq in missing]
        problems = audit_copy.check(store, client, MODEL).problems
        assert all(line in problems for line in expected), case
        if case in ("deleted", "truncated"):
            out = kiln_here("audit", "--verify", cwd=store)
            assert out.returncode == 1, f"{case}: {out.stdout}{out.stderr}"
            assert all(f"kiln: audit: {line}" in out.stderr for line in expected), case
            state = " (missing)" if text is None else ""
            said = f"kiln: error: the audit log {log}{state} and the tracking server's records disagree"
            assert said in out.stderr and "kiln audit --restore" in out.stderr and "Traceback" not in out.stderr
        log.write_text(whole)

    # A log holding an entry the server lacks is not rebuilt without it, unless moved aside.
    log.write_text(rechained)
    with pytest.raises(KilnError, match="holds 2 entries the tracking server's copy lacks"):
        audit_copy.restore(store, client, MODEL)
    log.unlink()
    restored = kiln_here("audit", "--restore", cwd=store)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"restored 3 entries of log {entries[0]['log'][:8]}" in restored.stdout
    assert log.read_text() == whole and audit_copy.check(store, client, MODEL).problems == []


def test_repositories_sharing_one_store_check_only_their_own_entries(store):
    other = store / "clone"
    other.mkdir()
    client = runs.client()
    audit.record(store, client, "promote", MODEL, "1")
    theirs = [audit.record(other, client, action, MODEL, "2") for action in ("refuse", "force")]
    # An entry recorded while the server was unreachable is only counted.
    last = audit.read(store)[-1]
    unsent = chain(last, {k: v for k, v in last.items() if k not in ("seq", "prev", "hash")} | {"version": "4"})
    with audit.path(store).open("a") as log:
        log.write(json.dumps(unsent) + "\n")
    mine = audit_copy.check(store, client, MODEL)
    assert mine.problems == [] and mine.copied == 1 and mine.pending == 1
    assert audit_copy.check(other, client, MODEL).problems == []

    audit.path(other).write_text("")
    assert audit_copy.check(store, client, MODEL).problems == []
    assert audit_copy.check(other, client, MODEL).problems == [
        f"entry {e['seq']}: recorded in the tracking server but missing from the log (deleted): {describe(e)}"
        for e in theirs
    ]


def test_entries_copied_before_runs_named_their_origin_are_matched_by_the_registered_model(store):
    client = runs.client()
    other = store / "clone"
    other.mkdir()
    ours = [audit.record(store, client, "promote", MODEL, str(n)) for n in (1, 2)]
    audit.record(other, client, "promote", MODEL, "3")
    for found in audit_copy.copies(client):
        client.delete_tag(found.run, audit.ORIGIN)
    # The log names its log id: the other clone's older log is not this one's.
    assert audit_copy.check(store, client, MODEL).problems == []
    audit.path(store).unlink()
    problems = audit_copy.check(store, client, MODEL).problems
    for e in ours:
        line = f"entry {e['seq']}: recorded in the tracking server but missing from the log (deleted): {describe(e)}"
        assert line in problems


def test_each_promotion_decision_in_the_registry_needs_its_entry_on_the_server(store):
    from components.deploy.gate import Check, Decision
    from pipelines.registry import promotion

    client = runs.client()
    client.create_registered_model(MODEL)
    client.create_model_version(MODEL, source=str(store))
    audit.record(store, client, "user-add", None, user="ann", role="reader")
    decision = promotion.conclude(
        client, MODEL, "1", Decision([Check("forced", True, "gate skipped: hotfix")]), None, "force", "hotfix", {}
    )
    (problem,) = audit_copy.check(store, client, MODEL).problems
    assert problem.startswith(f"promotion history of '{MODEL}': version 1 forced to champion at ")
    assert problem.endswith("has no audit entry on the tracking server")

    audit.promotion(store, client, decision, "force", "hotfix")
    verdict = audit_copy.check(store, client, MODEL)
    assert verdict.problems == [] and verdict.decisions == 1
    # A run deleted in the UI is still the server's record, and said to be deleted.
    run = next(c.run for c in audit_copy.copies(client) if c.entry["action"] == "force")
    client.delete_run(run)
    assert audit_copy.check(store, client, MODEL).problems == [
        f"entry 2: its run {run} was deleted in the tracking server's kiln-audit experiment: "
        f"{describe(audit.read(store)[1])}"
    ]


def test_a_quarantined_batch_leaves_no_text_of_it_in_the_audit_trail(tmp_path, monkeypatch):
    """The reasons beside the quarantined file quote the batch; its audit entry and the
    entry's MLflow copy hold counts, row ids and the kinds of reason only."""
    from mlflow import MlflowClient

    from pipelines.registry import audit, audit_copy

    uri = empty_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)  # this store, whatever tracking URI an earlier test set in this process
    # Control characters mark a wrong encoding; a validation line quotes such texts.
    garbage = good_batch().assign(text=[f"\x01\x02 SECRET-{i} scrambled" for i in range(20)])
    outcome = check_batch(tmp_path, "b.csv", garbage)
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
    unknown = check_batch(tmp_path, "c.csv", good_batch().assign(label="astrology"))
    assert [f.model_dump() for f in unknown.findings] == [
        {"kind": "unknown-label", "check": None, "rows": 20, "ids": ["c.csv:2", "c.csv:3", "c.csv:4"]}
    ]
