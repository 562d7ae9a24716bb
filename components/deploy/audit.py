"""A tamper-evident log of registry decisions: each entry carries the SHA-256 of the entry
before it (a hash chain), so editing, deleting or reordering an entry breaks every link
after it. Entries are plain dicts of JSON values; the chain fields are `seq` (1, 2, ...),
`prev` (the previous entry's hash, zeros for the first) and `hash` (of everything else)."""

import hashlib
import json
from collections.abc import Sequence

GENESIS = "0" * 64


def digest(entry: dict) -> str:
    """SHA-256 of the entry without its own hash, in one canonical JSON form."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


def verify(entries: Sequence[dict], recorded: dict[int, str] | None = None) -> list[str]:
    """What is wrong with the log, one line per problem; empty when it is intact.
    `recorded` maps seq to hash as kept elsewhere (a copy that survives the file): an entry
    it holds that the log lacks or holds differently was deleted or rewritten, which catches
    the last entries too, whose removal leaves a shorter chain that is still consistent."""
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
    held = {e.get("seq"): e.get("hash") for e in entries}
    for seq, value in sorted((recorded or {}).items()):
        if seq not in held:
            problems.append(f"entry {seq}: recorded in the tracking server but missing from the log (deleted)")
        elif held[seq] != value:
            problems.append(f"entry {seq}: differs from the copy in the tracking server (rewritten)")
    return problems
