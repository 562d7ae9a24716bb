"""The audit trail's hash chain on its own: what verifying it finds, and what a copy kept
elsewhere adds."""

import pytest

from components.audit import GENESIS, chain, describe, digest, verify
from tests.support.shared import rechain


def _log(n: int, log: str = "1" * 32) -> list[dict]:
    entries: list[dict] = []
    for i in range(n):
        fields = {"log": log, "when": f"2026-11-0{i + 1}T10:00:00Z", "action": "promote", "version": str(i + 1)}
        entries.append(chain(entries[-1] if entries else None, fields))
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
    assert verify(entries[:2]) == []
    assert verify(entries[:2], entries) == [
        "entry 3: recorded in the tracking server but missing from the log (deleted): "
        "promote v3 at 2026-11-03T10:00:00Z, log 11111111"
    ]
    rewritten = _log(2) + [chain(entries[1], {"log": "1" * 32, "action": "force", "version": "9"})]
    assert f"entry 3: differs from the copy in the tracking server (rewritten): {describe(entries[2])}" in verify(
        rewritten, entries
    )


def test_a_log_rewritten_as_a_new_chain_without_an_entry_is_found_against_the_copy():
    entries = _log(3)
    fresh = rechain([entries[0], entries[2]], "2" * 32)
    assert verify(fresh) == []
    assert verify(fresh, entries) == [
        "entry 1: in the tracking server, but the log holds it as entry 1 of log 22222222 (rewritten as a new chain): "
        "promote v1 at 2026-11-01T10:00:00Z, log 11111111",
        "entry 2: recorded in the tracking server but missing from the log (deleted): "
        "promote v2 at 2026-11-02T10:00:00Z, log 11111111",
        "entry 3: in the tracking server, but the log holds it as entry 2 of log 22222222 (rewritten as a new chain): "
        "promote v3 at 2026-11-03T10:00:00Z, log 11111111",
    ]


def test_the_chains_own_fields_cannot_be_given():
    with pytest.raises(ValueError, match="chain's own fields"):
        chain(None, {"hash": "x"})
