"""`kiln audit`: the trail of registry decisions and learned batches, filtered, its check
against the tracking server's copy, and its rebuilding from that copy."""

import sys
from typing import Annotated

import typer

from components.errors import KilnError
from pipelines.cli.app import app, repo_root
from pipelines.cli.registry import registry_of

# Problem lines `--verify` prints before counting the rest.
_SHOWN = 20


@app.command()
def audit(
    action: Annotated[
        str | None,
        typer.Option(help="only this action: promote, refuse, force, rollback, batch-learned, labels-imported, ..."),
    ] = None,
    who: Annotated[str | None, typer.Option(help="only entries by this user")] = None,
    version: Annotated[str | None, typer.Option("--version", "-v", help="only this model version")] = None,
    since: Annotated[str | None, typer.Option(help="only entries on or after this date (YYYY-MM-DD)")] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="check the hash chain and the tracking server's copy; exit 1 if broken")
    ] = False,
    restore: Annotated[
        bool, typer.Option("--restore", help="rebuild a lost, emptied or cut log from the tracking server's copy")
    ] = False,
) -> None:
    """Who promoted, refused, forced or rolled back which version, and which batches a
    retrain learned: when, why, and on which data."""
    root = repo_root()
    from pipelines.registry import audit as trail

    if verify and restore:
        raise KilnError("give either --verify or --restore")
    if verify:
        _verify(root, trail)
    elif restore:
        _restore(root)
    else:
        _show(root, trail, action, who, version, since)


def _restore(root) -> None:
    from pipelines.registry import audit_copy
    from pipelines.registry.models import registry_errors

    client, name, _ = registry_of(root)
    with registry_errors("audit: reading the tracking server's copy"):
        typer.echo(audit_copy.restore(root, client, name))


def _show(root, trail, action: str | None, who: str | None, version: str | None, since: str | None) -> None:
    """The entries that pass every filter given, each with its reasons and findings."""
    entries = [
        e
        for e in trail.read(root)
        if (action is None or e.get("action") == action)
        and (who is None or e.get("who") == who)
        and (version is None or str(e.get("version")) == version)
        and (since is None or str(e.get("when", "")) >= since)
    ]
    if not entries:
        typer.echo(f"no audit entries{' match' if any((action, who, version, since)) else ' yet'} ({trail.path(root)})")
        return
    for e in entries:
        target = _target(e)
        typer.echo(f"{e.get('seq', '?'):>4}  {e.get('when')}  {e.get('who')!s:<12} {e.get('action')!s:<18} {target}")
        detail = e.get("detail") or {}
        if e.get("why"):
            typer.echo(f"      why: {e['why']}")
        if e.get("data"):
            typer.echo(f"      data: {e['data']}")
        if detail.get("error"):
            typer.echo(f"      {detail['error']}")
        for line in detail.get("reasons", []):
            typer.echo(f"      {line}")
        for found in detail.get("findings", []):
            rows = f": {found['rows']} row(s)" if found.get("rows") is not None else ""
            ids = f", e.g. {', '.join(found['ids'])}" if found.get("ids") else ""
            typer.echo(f"      {found['kind']}{' ' + found['check'] if found.get('check') else ''}{rows}{ids}")


def _target(entry: dict) -> str:
    """What an entry acted on: a user, a model version, or a model."""
    detail = entry.get("detail") or {}
    if entry.get("model") is None and "user" in detail:
        return f"user {detail['user']}" + (f" ({detail['role']})" if detail.get("role") else "")
    if entry.get("version"):
        return f"{entry.get('model')} v{entry.get('version')}"
    return str(entry.get("model"))


def _verify(root, trail) -> None:
    from pipelines.registry import audit_copy
    from pipelines.registry.models import registry_errors
    from pipelines.tracking import runs

    entries = trail.read(root)
    _, name, _ = registry_of(root)
    try:
        with registry_errors("audit: reading the tracking server's copy"):
            verdict = audit_copy.check(root, runs.client(), name)
        against = "and the tracking server's copy agree"
    except KilnError as err:  # the chain alone can still be checked
        verdict = audit_copy.check(root, None, name)
        against = f"checked alone (tracking server not read: {err})"
    if verdict.problems:
        # A lost log names every entry of it: the first ones say enough.
        for line in verdict.problems[:_SHOWN]:
            typer.echo(f"kiln: audit: {line}", err=True)
        if len(verdict.problems) > _SHOWN:
            typer.echo(f"kiln: audit: ... and {len(verdict.problems) - _SHOWN} more", err=True)
        file = trail.path(root)
        what = f"the audit log {file}" + ("" if file.exists() else " (missing)")
        what += " was changed" if verdict.copied is None else " and the tracking server's records disagree"
        what += f": {len(verdict.problems)} problem(s)"
        if verdict.copied:
            what += f"; `kiln audit --restore` rebuilds the log from the server's {verdict.copied} entries of it"
        typer.echo(f"kiln: error: {what}", err=True)
        sys.exit(1)
    line = f"audit log intact: {len(entries)} entries; the hash chain {against}"
    if verdict.pending:
        line += f"; {verdict.pending} of them recorded while the server was unreachable are not on it"
    if verdict.decisions:
        line += f"; each of the {verdict.decisions} promotion decisions of '{name}' has its entry"
    typer.echo(line)
