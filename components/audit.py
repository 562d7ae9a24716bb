"""A tamper-evident log of registry decisions: each entry carries the SHA-256 of the entry
before it (a hash chain), so editing, deleting or reordering an entry breaks every link
after it. Entries are plain dicts of JSON values; the chain fields are `seq` (1, 2, ...),
`prev` (the previous entry's hash, zeros for the first) and `hash` (of everything else)."""

import hashlib
import json
from collections.abc import Sequence

GENESIS = "0" * 64
# What places an entry in one chain rather than another: the rest is what it records.
_PLACE = ("log", "seq", "prev", "hash")


def _canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def digest(entry: dict) -> str:
    """SHA-256 of the entry without its own hash, in one canonical JSON form."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(_canonical(body).encode("utf-8")).hexdigest()


def chain(previous: dict | None, fields: dict) -> dict:
    """`fields` as the entry after `previous` (None: the first entry)."""
    if {"seq", "prev", "hash"} & set(fields):
        raise ValueError("seq, prev and hash are the chain's own fields")
    entry = {
        **fields,
        "seq": previous["seq"] + 1 if previous else 1,
        "prev": previous["hash"] if previous else GENESIS,
    }
    return {**entry, "hash": digest(entry)}


def describe(entry: dict) -> str:
    """`force kiln-x v2 at 2026-11-23T10:02:11Z, log 1a2b3c4d`: enough to find the
    decision an entry records."""
    target = f" {entry['model']}" if entry.get("model") else ""
    target += f" v{entry['version']}" if entry.get("version") else ""
    return f"{entry.get('action')}{target} at {entry.get('when')}, log {str(entry.get('log'))[:8]}"


def verify(entries: Sequence[dict], recorded: Sequence[dict] = ()) -> list[str]:
    """What is wrong with the log, one line per problem; empty when it is intact.
    `recorded` are entries as kept elsewhere (a copy that survives the file, from every
    chain the log ever was): one the log lacks or holds differently was deleted or
    rewritten. That catches the last entries too, whose removal leaves a shorter chain that
    is still consistent, and a log rewritten as a fresh chain under a new log id."""
    problems = []
    previous: dict | None = None
    for position, entry in enumerate(entries, start=1):
        seq = entry.get("seq")
        if seq != position:
            problems.append(f"entry {position}: numbered {seq}, so an entry before it was deleted or moved")
        if entry.get("hash") != digest(entry):
            problems.append(f"entry {position}: its content does not match its hash (edited)")
        expected = previous["hash"] if previous else GENESIS
        if entry.get("prev") != expected:
            problems.append(f"entry {position}: does not link to the entry before it (deleted, inserted or edited)")
        previous = entry
    held = {(e.get("log"), e.get("seq")): e.get("hash") for e in entries}
    # Where each recorded content sits in the log now, if somewhere else: a re-chained copy.
    moved = {_canonical({k: v for k, v in e.items() if k not in _PLACE}): e for e in entries}
    for copy in sorted(recorded, key=lambda e: (str(e.get("log")), e.get("seq") or 0)):
        place = (copy.get("log"), copy.get("seq"))
        name = f"entry {copy.get('seq')}"
        if place in held:
            if held[place] != copy.get("hash"):
                problems.append(f"{name}: differs from the copy in the tracking server (rewritten): {describe(copy)}")
        elif again := moved.get(_canonical({k: v for k, v in copy.items() if k not in _PLACE})):
            problems.append(
                f"{name}: in the tracking server, but the log holds it as entry {again.get('seq')} of log "
                f"{str(again.get('log'))[:8]} (rewritten as a new chain): {describe(copy)}"
            )
        else:
            problems.append(
                f"{name}: recorded in the tracking server but missing from the log (deleted): {describe(copy)}"
            )
    return problems
