"""The audit trail: every promotion, refusal, forced promotion, rollback, promotion the
registry denied a user, user added or removed, and batch a retrain learned or quarantined,
appended to `.kiln/audit.jsonl` as a hash chain (components/audit.py) and copied to
the tracking server, one run per entry in the `kiln-audit` experiment, so the trail
outlives the machine and a deleted tail is noticed.

Each run also records its origin (host and repository path): audit_copy.py finds a
repository's entries on the server by it, to check the log against them.

Entries say who, when, what, why, the model version and the data version; never a text
of the data."""

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from components.audit import chain
from components.data.batches import BatchOutcome
from components.errors import KilnError
from pipelines.core import statedir
from pipelines.core.records import Promotion
from pipelines.registry.models import version, who
from pipelines.registry.versions import lineage
from pipelines.servers.roles import Denied
from pipelines.tracking.experiments import experiment_id
from pipelines.tracking.runs import context_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient

EXPERIMENT = "kiln-audit"
# The promotion stage's and `kiln promote`'s actions, as the trail names them.
ACTIONS = {"gate": "promote", "manual": "promote", "force": "force", "rollback": "rollback"}
# The run tag naming the repository an entry comes from; not an `audit.*` tag, as those
# are the entry's own fields.
ORIGIN = "kiln.origin"

log = logging.getLogger("kiln")


def path(root: Path) -> Path:
    return statedir.audit_log(root)


def origin(root: Path) -> str:
    """The repository, as the runs of its entries name it: its host and absolute path."""
    return f"{socket.gethostname()}:{root.resolve()}"


def read(root: Path) -> list[dict]:
    """The entries, oldest first; a line that is not a JSON object is kept as an entry
    without chain fields, so verify reports it instead of hiding it."""
    file = path(root)
    if not file.exists():
        return []
    entries = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        entries.append(entry if isinstance(entry, dict) else {"unreadable_line": number})
    return entries


def record(
    root: Path,
    client: "MlflowClient",
    action: str,
    model: str | None,
    number: str | None = None,
    data: str | None = None,
    why: str | None = None,
    **detail: object,
) -> dict:
    """Append one entry (under a lock, so concurrent commands keep one chain) and copy it to
    the tracking server. A server that cannot take the copy costs a warning, not the entry:
    the decision it records has already happened."""
    from filelock import FileLock

    file = path(root)
    file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{file}.lock", timeout=60):
        entries = read(root)
        previous = entries[-1] if entries else None
        if previous and "hash" not in previous:
            raise KilnError(f"{file}: its last line is not an audit entry; run `kiln audit --verify`")
        fields = {
            "log": previous.get("log") if previous else uuid.uuid4().hex,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "who": who(),
            "action": action,
            "model": model,
            "version": number,
            "data": data,
            # No reason is None, as the server's copy (an empty tag) gives it back.
            "why": why or None,
            "detail": detail,
        }
        entry = chain(previous, fields)
        with open(file, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
    try:
        _copy(root, client, entry)
    except Exception as err:  # noqa: BLE001 - any server failure: the local entry stands
        note = f"audit entry {entry['seq']} kept in {file} but not copied to the tracking server"
        if getattr(err, "error_code", None) == "PERMISSION_DENIED":
            # A reader writes nothing to the server, their refused attempts included: the
            # server's own log has the 403, and `kiln audit --verify` counts the entry as local.
            log.info(f"{note}: user '{who()}' may not write to it")
        else:
            log.warning(f"{note}: {err}")
    return entry


def _copy(root: Path, client: "MlflowClient", entry: dict) -> None:
    from mlflow.entities import RunTag

    run = client.create_run(
        experiment_id(client, EXPERIMENT),
        run_name=f"{entry['seq']} {entry['action']}",
        tags=context_tags(f"kiln {entry['action']}"),
    )
    tags = {k: v for k, v in entry.items() if k != "detail"} | {"detail": json.dumps(entry["detail"], sort_keys=True)}
    client.log_batch(
        run.info.run_id,
        tags=[RunTag(f"audit.{k}", "" if v is None else str(v)[:5000]) for k, v in tags.items()]
        + [RunTag(ORIGIN, origin(root))],
    )
    client.set_terminated(run.info.run_id)


def promotion(root: Path, client: "MlflowClient", decision: Promotion, action: str, why: str | None) -> None:
    """The entry of one gate decision, forced promotion or rollback; nothing for a rerun
    that found its version champion already (no decision was taken)."""
    if decision.already:
        return
    name = ACTIONS.get(action, action)
    if name == "promote" and not decision.promoted:
        name = "refuse"
    tags = lineage(version(client, decision.model_name, decision.version))
    record(
        root,
        client,
        name,
        decision.model_name,
        decision.version,
        data=tags.get("data.split") or None,
        why=why,
        champion=decision.champion,
        reasons=decision.reasons,
    )


@contextmanager
def denials(
    root: Path, client: "MlflowClient", model: str, number: str | None, action: str, why: str | None
) -> Iterator[None]:
    """Record a promotion, force or rollback the registry refused this user, then let the
    refusal through."""
    try:
        yield
    except Denied as err:
        record(root, client, "denied", model, number, why=why, attempted=ACTIONS.get(action, action), error=str(err))
        raise


def batch(root: Path, client: "MlflowClient", model: str, outcome: BatchOutcome, where: Path, learned: bool) -> None:
    """The entry of one batch a retrain learned (moved to the processed folder) or
    quarantined; its data version is the file's SHA-256."""
    with open(where, "rb") as file:
        sha = hashlib.file_digest(file, "sha256").hexdigest()
    record(
        root,
        client,
        "batch-learned" if learned else "batch-quarantined",
        model,
        data=f"sha256:{sha}",
        file=str(where.relative_to(root)),
        rows=outcome.rows,
        new_rows=outcome.new_rows,
        # The findings, not the reasons: those quote the batch for whoever fixes it.
        findings=[f.model_dump(exclude_defaults=True) for f in outcome.findings],
    )
