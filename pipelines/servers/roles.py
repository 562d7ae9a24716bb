"""Who may do what on the registry: Kiln's roles as roles of MLflow's auth app, the users
who hold them, and the check before the champion alias moves.

Roles (MLflow roles in its `default` workspace, created on first use and brought back to
these grants whenever a user is added):
- reader: reads every experiment, run and registered model, and writes nothing: no
  experiment, run, artifact, registered model, version or alias;
- promoter: also creates experiments and registered models (a workspace grant), logs runs
  and moves aliases (MANAGE on every registered model);
- admin: MLflow's administrator flag (users, permissions, everything).
MLflow's auth app lets any signed-in user create experiments and registered models (and
then manage them) unless the server runs with workspaces, where creating takes a
workspace grant: `kiln up` starts it so (servers.py).
"""

import os
from typing import TYPE_CHECKING

from components.errors import KilnError
from pipelines.servers.auth import ADMIN, refused

if TYPE_CHECKING:
    from mlflow.server.auth.client import AuthServiceClient

WORKSPACE = "default"
# (resource type, pattern, permission) each Kiln role grants; admin is MLflow's admin flag.
ROLES: dict[str, list[tuple[str, str, str]]] = {
    "reader": [("experiment", "*", "READ"), ("registered_model", "*", "READ")],
    "promoter": [("workspace", "*", "USE"), ("experiment", "*", "EDIT"), ("registered_model", "*", "MANAGE")],
    "admin": [],
}
ROLE_PREFIX = "kiln-"


class Denied(KilnError):
    """The registry refused this user an action on a model."""


def service(uri: str) -> "AuthServiceClient":
    import warnings

    # The client's module imports MLflow's server app, whose Starlette import warns: noise
    # for someone who only sends it requests.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server.auth.client import AuthServiceClient

    if not uri.startswith(("http://", "https://")):
        raise KilnError(
            f"users and roles live in an MLflow server with its auth app (`kiln up`); the tracking store here is {uri}"
        )
    return AuthServiceClient(uri)


def current_user(uri: str) -> dict | None:
    """{username, is_admin} of whoever these requests sign in as; None when the server
    runs without its auth app (then nobody is checked)."""
    from mlflow.exceptions import MlflowException

    client = service(uri)
    from mlflow.server.auth.routes import GET_CURRENT_USER

    try:
        return client._request(GET_CURRENT_USER, "GET")["user"]
    except MlflowException as err:
        if err.error_code in ("ENDPOINT_NOT_FOUND", "NOT_FOUND") or "404" in err.message:
            return None
        if err.error_code == "UNAUTHENTICATED":
            raise KilnError(refused(err, uri)) from None
        raise


def require_manage(uri: str, model: str, action: str) -> None:
    """Raise Denied unless the signed-in user may move `model`'s aliases: an admin, or a
    user with MANAGE on it. MLflow itself lets EDIT move an alias; Kiln asks for more,
    because the champion is what production serves."""
    if not uri.startswith(("http://", "https://")):
        return  # a local store: no server, no users
    user = current_user(uri)
    if user is None or user["is_admin"]:
        return
    found = service(uri).get_user_permission(user["username"], "registered_model", model)
    if found.permission != "MANAGE":
        raise Denied(
            f"{action}: user '{user['username']}' may not move the champion of '{model}' "
            f"(has {found.permission}, needs MANAGE: the promoter or admin role); nothing changed"
        )


def _role_id(client: "AuthServiceClient", role: str) -> int:
    """The MLflow role for a Kiln role, holding exactly the grants ROLES gives it: made the
    first time, and mended when an older Kiln made it with other grants."""
    name = ROLE_PREFIX + role
    found = next((r for r in client.list_roles(WORKSPACE) if r.name == name), None)
    if found is None:
        found = client.create_role(WORKSPACE, name, f"Kiln {role}")
    wanted = set(ROLES[role])
    for grant in client.list_role_permissions(found.id):
        held = (grant.resource_type, grant.resource_pattern, grant.permission)
        if held in wanted:
            wanted.discard(held)
        else:
            client.remove_role_permission(grant.id)
    for resource, pattern, permission in sorted(wanted):
        client.add_role_permission(found.id, resource, pattern, permission)
    return found.id


def add_user(uri: str, name: str, role: str, password: str) -> None:
    from mlflow.exceptions import MlflowException

    client = service(uri)
    try:
        client.create_user(name, password)
        if role == "admin":
            client.update_user_admin(name, True)
        else:
            client.assign_role(name, _role_id(client, role))
    except MlflowException as err:
        raise KilnError(f"users add {name}: {_reason(err, uri)}") from None


def remove_user(uri: str, name: str) -> None:
    from mlflow.exceptions import MlflowException

    if name == ADMIN:
        raise KilnError(f"users remove: '{ADMIN}' is the account kiln up made; it stays")
    try:
        service(uri).delete_user(name)
    except MlflowException as err:
        raise KilnError(f"users remove {name}: {_reason(err, uri)}") from None


def users(uri: str) -> list[tuple[str, str]]:
    """(name, Kiln role) of every user; a user MLflow knows with no Kiln role shows '-'."""
    from mlflow.exceptions import MlflowException

    client = service(uri)
    from mlflow.server.auth.routes import LIST_USERS

    try:
        found = client._request(LIST_USERS, "GET")["users"]
    except MlflowException as err:
        raise KilnError(f"users list: {_reason(err, uri)}") from None
    out = []
    for user in found:
        kiln_roles = [r["name"].removeprefix(ROLE_PREFIX) for r in user["roles"] if r["name"].startswith(ROLE_PREFIX)]
        out.append((user["username"], "admin" if user["is_admin"] else ", ".join(kiln_roles) or "-"))
    return sorted(out)


def _reason(err, uri: str) -> str:
    """MLflow's refusal in words: its message names the endpoint and status first."""
    if err.error_code == "UNAUTHENTICATED":
        return refused(err, uri)
    if err.error_code == "PERMISSION_DENIED":
        return f"permission denied for '{os.environ.get('MLFLOW_TRACKING_USERNAME')}' (admins only)"
    if err.error_code == "RESOURCE_ALREADY_EXISTS":
        return "that user exists already"
    if err.error_code == "RESOURCE_DOES_NOT_EXIST":
        return "no such user"
    return err.message.split("Response body: ")[-1].strip("'")
