"""`kiln audit`: the trail of registry decisions and learned batches, filtered, and its check."""

import sys
from typing import Annotated

import typer

from components.errors import KilnError
from pipelines.cli.app import app, repo_root


@app.command()
def audit(
    action: Annotated[
        str | None, typer.Option(help="only this action: promote, refuse, force, rollback, batch-learned, ...")
    ] = None,
    who: Annotated[str | None, typer.Option(help="only entries by this user")] = None,
    version: Annotated[str | None, typer.Option("--version", "-v", help="only this model version")] = None,
    since: Annotated[str | None, typer.Option(help="only entries on or after this date (YYYY-MM-DD)")] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="check the hash chain and the tracking server's copy; exit 1 if broken")
    ] = False,
) -> None:
    """Who promoted, refused, forced or rolled back which version, and which batches a
    retrain learned: when, why, and on which data."""
    root = repo_root()
    from pipelines import audit as trail

    if verify:
        _verify(root, trail)
        return
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
        detail = e.get("detail") or {}
        if e.get("model") is None and "user" in detail:
            target = f"user {detail['user']}" + (f" ({detail['role']})" if detail.get("role") else "")
        elif e.get("version"):
            target = f"{e.get('model')} v{e.get('version')}"
        else:
            target = str(e.get("model"))
        typer.echo(f"{e.get('seq', '?'):>4}  {e.get('when')}  {e.get('who')!s:<12} {e.get('action')!s:<18} {target}")
        if e.get("why"):
            typer.echo(f"      why: {e['why']}")
        if e.get("data"):
            typer.echo(f"      data: {e['data']}")
        if detail.get("error"):
            typer.echo(f"      {detail['error']}")
        for line in detail.get("reasons", []):
            typer.echo(f"      {line}")


def _verify(root, trail) -> None:
    from pipelines import tracking
    from pipelines.registry import registry_errors

    entries = trail.read(root)
    try:
        with registry_errors("audit: reading the tracking server's copy"):
            client = tracking.client()
            problems = trail.check(root, client)
        against = "and the tracking server's copy agree"
    except KilnError as err:  # the chain alone can still be checked
        problems = trail.check(root, None)
        against = f"checked alone (tracking server not read: {err})"
    if problems:
        for line in problems:
            typer.echo(f"kiln: audit: {line}", err=True)
        typer.echo(f"kiln: error: the audit log {trail.path(root)} was changed: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    typer.echo(f"audit log intact: {len(entries)} entries; the hash chain {against}")
