"""The promotion gate on the registry: score the challenger and the champion on today's
test split, decide, record the decision on the version and in the promotion history, and
move the champion alias. One sequence, used by the promote stage and `kiln promote`.

The history of champion changes is an MLflow experiment of its own (one run per
decision), so it lives wherever the registry lives and shows in the UI.
"""

import json
from typing import TYPE_CHECKING

import pandas as pd

from components.deploy.gate import Check, Decision
from components.errors import KilnError
from pipelines.core.env import tracking_uri
from pipelines.core.records import Promotion
from pipelines.registry.gating import Bounds, gate
from pipelines.registry.models import CHALLENGER, CHAMPION, alias, version, who
from pipelines.servers import roles
from pipelines.tracking import experiments, runs

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def move_champion(client: "MlflowClient", name: str, to: str, expected: "ModelVersion | None") -> None:
    """Point `champion` at version `to`, unless it moved since the gate read it: the alias
    is read again right before it is set, so a concurrent promotion is never overwritten
    silently."""
    now = alias(client, name, CHAMPION)
    if (str(now.version) if now else None) != (str(expected.version) if expected else None):
        raise KilnError(
            f"champion of '{name}' moved to version {now.version if now else None} while the gate "
            f"compared against {expected.version if expected else 'no champion'}; "
            f"nothing changed, run the promotion again"
        )
    client.set_registered_model_alias(name, CHAMPION, to)


def _history_experiment(client: "MlflowClient", name: str, create: bool) -> str | None:
    found = client.get_experiment_by_name(f"{name}.promotions")
    if found is not None:
        return found.experiment_id
    return experiments.experiment_id(client, f"{name}.promotions") if create else None


def history(client: "MlflowClient", name: str) -> list[dict]:
    """Promotion events, newest first, each with its metrics."""
    experiment = _history_experiment(client, name, create=False)
    if experiment is None:
        return []
    runs = client.search_runs([experiment], order_by=["attributes.start_time DESC"], max_results=1000)
    return [
        {
            **{k.removeprefix("kiln."): v for k, v in run.data.tags.items() if k.startswith("kiln.")},
            "when": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M:%S"),
            "metrics": run.data.metrics,
        }
        for run in runs
    ]


def conclude(
    client: "MlflowClient",
    name: str,
    number: str,
    decision: Decision,
    champion: "ModelVersion | None",
    action: str,
    why: str | None,
    metrics: dict[str, float],
) -> Promotion:
    """Tag the decision and each reason on the version, move the alias if every check
    passed, and append the event to the history."""
    from mlflow.entities import Metric, RunTag

    client.set_model_version_tag(name, number, "promotion.decision", "promoted" if decision.promote else "refused")
    for check in decision.checks:
        client.set_model_version_tag(
            name, number, f"promotion.{check.name}", f"{'pass' if check.passed else 'fail'}: {check.detail}"
        )
    if decision.promote:
        move_champion(client, name, number, champion)
        # `challenger` names a version awaiting the gate, which this one no longer is.
        waiting = alias(client, name, CHALLENGER)
        if waiting is not None and str(waiting.version) == str(number):
            client.delete_registered_model_alias(name, CHALLENGER)
    before = str(champion.version) if champion else None
    after = str(number) if decision.promote else before
    event = {
        "action": action,
        "version": str(number),
        "previous_champion": before,
        "champion": after,
        "promoted": str(decision.promote).lower(),
        "reasons": json.dumps(decision.reasons),
        "who": who(),
        "why": why,
    }
    run = client.create_run(
        _history_experiment(client, name, create=True),
        run_name=f"{action} v{number}",
        tags=runs.context_tags(f"kiln {action}"),
    )
    client.log_batch(
        run.info.run_id,
        tags=[RunTag(f"kiln.{k}", "" if v is None else str(v)) for k, v in event.items()],
        metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
    )
    client.set_terminated(run.info.run_id)
    return Promotion(
        model_name=name,
        version=str(number),
        promoted=decision.promote,
        champion=after,
        reasons=decision.reasons,
        metrics=metrics,
    )


def promote(
    client: "MlflowClient",
    name: str,
    number: str,
    test: pd.DataFrame | None,
    bounds: Bounds,
    action: str = "gate",
    why: str | None = None,
) -> Promotion:
    """Promote version `number` through the gate, or past it with action "force"."""
    roles.require_manage(tracking_uri(), name, f"{'force' if action == 'force' else 'promote'} version {number}")
    challenger = version(client, name, number)
    champion = alias(client, name, CHAMPION)
    if champion is not None and str(champion.version) == str(challenger.version):
        # A rerun that registered nothing new: nothing to decide, nothing to record.
        return Promotion(
            model_name=name,
            version=str(number),
            promoted=True,
            champion=str(number),
            metrics={},
            reasons=[f"pass champion: version {number} is the champion already"],
            already=True,
        )
    if action == "force":
        return conclude(
            client,
            name,
            challenger.version,
            Decision([Check("forced", True, f"gate skipped: {why}")]),
            champion,
            action,
            why,
            {},
        )
    decision, metrics, champion, note = gate(client, name, challenger, test, bounds)
    found = conclude(client, name, challenger.version, decision, champion, action, why, metrics)
    return found.model_copy(update={"resolution": note})


def rollback(client: "MlflowClient", name: str, why: str | None) -> Promotion:
    """Move `champion` back to the version it replaced (rollbacks skipped, so rolling
    back twice goes two steps back)."""
    roles.require_manage(tracking_uri(), name, "rollback")
    champion = alias(client, name, CHAMPION)
    if champion is None:
        raise KilnError(f"'{name}' has no champion to roll back")
    current = str(champion.version)
    target = next(
        (
            item["previous_champion"]
            for item in history(client, name)
            if item.get("action") != "rollback"
            and item.get("promoted") == "true"
            and item.get("champion") == current
            and item.get("previous_champion")
        ),
        None,
    )
    if target is None:
        raise KilnError(f"'{name}' has no champion before version {current} to roll back to")
    version(client, name, target)
    decision = Decision([Check("rollback", True, f"from version {current} to {target}")])
    return conclude(client, name, target, decision, champion, "rollback", why, {})
