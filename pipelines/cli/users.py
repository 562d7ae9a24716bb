"""`kiln users add|list|remove`: the people who may sign in to `kiln up`'s MLflow server,
each with one of Kiln's roles (reader, promoter, admin). Needs an admin's sign-in."""

import sys
from enum import StrEnum
from typing import Annotated

import typer

from components.errors import KilnError
from pipelines.cli.app import app, repo_root
from pipelines.core.env import tracking_uri
from pipelines.servers.roles import ROLES

users = typer.Typer(no_args_is_help=True, help="Users of the MLflow server and their roles (reader, promoter, admin).")
app.add_typer(users, name="users")


# Kiln's roles as a choice on the command line (roles.ROLES defines them).
Role = StrEnum("Role", {name: name for name in ROLES})


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise KilnError("users add: --password-stdin read an empty line")
        return password
    return typer.prompt("password for the new user", hide_input=True, confirmation_prompt=True)


@users.command("add")
def add(
    name: Annotated[str, typer.Argument(help="user name to sign in with")],
    role: Annotated[Role, typer.Option(help="what they may do")] = Role.reader,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input (for scripts)")
    ] = False,
) -> None:
    """Add a user with a role: a reader reads runs and models, a promoter also promotes,
    forces and rolls back, an admin also manages users."""
    root = repo_root()
    from pipelines.registry import audit
    from pipelines.servers import roles
    from pipelines.tracking import runs

    roles.service(tracking_uri())  # a local store has no users: say so before asking anything
    password = _password(password_stdin)
    roles.add_user(tracking_uri(), name, role.value, password)
    audit.record(root, runs.client(), "user-add", None, user=name, role=role.value)
    typer.echo(
        f"user '{name}' added as {role.value}; they sign in with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )


@users.command("list")
def list_users() -> None:
    """Every user of the MLflow server and their Kiln role."""
    repo_root()
    from pipelines.servers import roles

    for name, role in roles.users(tracking_uri()):
        typer.echo(f"{name:<24} {role}")


@users.command("remove")
def remove(name: Annotated[str, typer.Argument(help="user to remove")]) -> None:
    """Remove a user: they can no longer sign in."""
    root = repo_root()
    from pipelines.registry import audit
    from pipelines.servers import roles
    from pipelines.tracking import runs

    roles.remove_user(tracking_uri(), name)
    audit.record(root, runs.client(), "user-remove", None, user=name)
    typer.echo(f"user '{name}' removed")
