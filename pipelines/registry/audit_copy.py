"""The tracking server's copy of the audit trail (audit.py writes it): this repository's
entries found on the server's side, the log checked against them and against the
registry's own promotion history, and the log rebuilt from them.

The entries are found by the origin each run records (host and repository path), since
several clones may share one server, each with its own log, and nothing written in a log
(its id included) survives the log being emptied, deleted or rewritten."""

import json
import os
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from components.audit import describe, verify
from components.errors import KilnError
from pipelines.registry.audit import ACTIONS, EXPERIMENT, ORIGIN, origin, path, read

if TYPE_CHECKING:
    from mlflow import MlflowClient

# What each action did to the champion, as a line about the promotion history says it.
_DID = {
    "promote": "promoted",
    "refuse": "refused",
    "force": "forced to champion",
    "rollback": "made champion by a rollback",
}


@dataclass(frozen=True)
class Copy:
    """One entry as the tracking server holds it."""

    entry: dict
    origin: str | None  # None: copied before runs recorded their origin
    run: str
    deleted: bool  # its run was deleted on the server (MLflow keeps it until `mlflow gc`)


def _entry(tags: dict[str, str]) -> dict:
    """The entry a run's `audit.*` tags hold as text: seq a number, detail JSON, an empty
    tag None. A detail cut at the tag's length limit stays text, so its hash fails."""
    entry = {k.removeprefix("audit."): v or None for k, v in tags.items() if k.startswith("audit.")}
    entry["seq"] = int(entry["seq"])
    with suppress(json.JSONDecodeError):
        entry["detail"] = json.loads(entry.get("detail") or "{}")
    return entry


def copies(client: "MlflowClient") -> list[Copy]:
    """Every entry on the tracking server, from every repository, deleted runs included."""
    from mlflow.entities import ViewType

    found = client.get_experiment_by_name(EXPERIMENT)
    if found is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs(
            [found.experiment_id], run_view_type=ViewType.ALL, max_results=50000, page_token=token
        )
        runs += page
        if not (token := page.token):
            break
    return [
        Copy(_entry(r.data.tags), r.data.tags.get(ORIGIN), r.info.run_id, r.info.lifecycle_stage == "deleted")
        for r in runs
        if r.data.tags.get("audit.seq", "").isdigit() and r.data.tags.get("audit.log")
    ]


def mine(found: list[Copy], here: str, entries: list[dict], model: str) -> list[Copy]:
    """This repository's entries among every repository's: those its origin copied, with
    the older entries of the same logs. A log no origin ever continued was copied before
    runs recorded their origin: it is this repository's when the log file names it, or,
    while this origin has copied nothing, when its entries are of this repository's
    registered model (clones sharing the server each claim theirs with their next entry)."""
    continued = {c.entry["log"] for c in found if c.origin}
    own = {c.entry["log"] for c in found if c.origin == here}
    older = {c.entry["log"] for c in found if c.entry["log"] not in continued and c.entry.get("model") == model}
    named = older & {e.get("log") for e in entries}
    logs = own | (named or (set() if own else older))
    return [c for c in found if c.entry["log"] in logs and c.origin in (here, None)]


def unaudited(model: str, decisions: list[dict], audited: list[dict]) -> tuple[list[str], int]:
    """Promotion decisions in the registry's history of `model` (newest first) that no
    entry on the server records, whichever clone made them (the registry is shared), and
    how many decisions were checked: those older than every entry came before Kiln kept an
    audit trail."""
    if not audited:
        return [], 0
    first = min(str(e.get("when")) for e in audited).replace("T", " ").rstrip("Z")
    left = Counter((e.get("action"), e.get("version")) for e in audited if e.get("model") == model)
    problems, checked = [], 0
    for decision in reversed(decisions):
        action = ACTIONS.get(decision.get("action"), decision.get("action"))
        if action == "promote" and decision.get("promoted") != "true":
            action = "refuse"
        key = (action, decision.get("version"))
        if left[key]:
            left[key] -= 1
            checked += 1
        elif decision["when"] >= first:
            problems.append(
                f"promotion history of '{model}': version {decision.get('version')} {_DID.get(action, action)} at "
                f"{decision['when']} UTC by {decision.get('who')} has no audit entry on the tracking server"
            )
            checked += 1
    return problems, checked


@dataclass
class Verdict:
    """What `kiln audit --verify` found."""

    problems: list[str]
    copied: int | None = None  # this repository's entries on the server; None: not read
    pending: int = 0  # entries only in the log: recorded while the server was unreachable
    decisions: int = 0  # promotion decisions of the registry's history checked against the entries


def check(root: Path, client: "MlflowClient | None", model: str) -> Verdict:
    """The log's chain, and when `client` is given, the log against the server's copy of
    this repository's entries and `model`'s promotion history against the server's entries."""
    from pipelines.registry.promotion import history

    entries = read(root)
    if client is None:
        return Verdict(verify(entries))
    found = copies(client)
    own = mine(found, origin(root), entries, model)
    problems = verify(entries, [c.entry for c in own])
    problems += [
        f"entry {c.entry['seq']}: its run {c.run} was deleted in the tracking server's {EXPERIMENT} experiment: "
        f"{describe(c.entry)}"
        for c in own
        if c.deleted
    ]
    missing, decisions = unaudited(model, history(client, model), [c.entry for c in found])
    held = {(c.entry["log"], c.entry["seq"]) for c in own}
    pending = sum((e.get("log"), e.get("seq")) not in held for e in entries)
    return Verdict(problems + missing, len(own), pending, decisions)


def restore(root: Path, client: "MlflowClient", model: str) -> str:
    """Rebuild the log from the server's copy of this repository's entries: the chain the
    log names, else the newest. Refused when the log holds an entry that copy lacks, which
    rebuilding would drop."""
    from filelock import FileLock

    file = path(root)
    file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{file}.lock", timeout=60):
        entries = read(root)
        own = [c.entry for c in mine(copies(client), origin(root), entries, model)]
        if not own:
            raise KilnError(f"the tracking server holds no audit entries of this repository ({origin(root)})")
        named = [e["log"] for e in entries if e.get("log") in {c["log"] for c in own}]
        log_id = named[-1] if named else max(own, key=lambda e: (str(e.get("when")), e["seq"]))["log"]
        rebuilt = sorted({e["hash"]: e for e in own if e["log"] == log_id}.values(), key=lambda e: e["seq"])
        if problems := verify(rebuilt):
            raise KilnError(f"the tracking server's copy of log {log_id[:8]} is not a whole chain: {problems[0]}")
        kept = {e["hash"] for e in rebuilt}
        if extra := [e for e in entries if e.get("hash") not in kept]:
            raise KilnError(
                f"{file} holds {len(extra)} entries the tracking server's copy lacks, such as "
                f"entry {extra[0].get('seq')} ({describe(extra[0])}); move the file aside to rebuild it without them"
            )
        partial = file.with_suffix(".restoring")
        lines = (json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in rebuilt)
        partial.write_text("".join(lines), encoding="utf-8")
        os.replace(partial, file)
    return f"restored {len(rebuilt)} entries of log {log_id[:8]} from the tracking server into {file}"
