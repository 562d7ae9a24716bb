"""promote: the gate between the challenger and the champion, both re-scored on the
current test split. Every reason, pass or fail, goes on the version's tags and into the
promotion history; the champion moves only if every check passes. A refusal is a normal
outcome, not a failed stage."""

import json

from components.errors import KilnError
from pipelines import tracking
from pipelines.io import write_json
from pipelines.registry import conclude, gate, gate_metrics, registry_errors, version
from pipelines.stages import StageContext, StageResult
from pipelines.training import read_split


def run(ctx: StageContext) -> StageResult:
    paths, name = ctx.params.paths, ctx.params.register_.model_name
    registered = ctx.path(paths.reports) / "register.json"
    if not registered.is_file():
        raise KilnError(f"promote: {registered} is missing; the register stage writes it (kiln stage register)")
    number = json.loads(registered.read_text())["version"]
    test = read_split(ctx, "test")["test"]
    client = tracking.client()
    with registry_errors(f"promote: version {number} of '{name}'"):
        challenger = version(client, name, number)
        decision, mine, theirs, champion = gate(client, name, challenger, test, ctx.params.promote,
                                                ctx.params.evaluate)
        metrics = gate_metrics(mine, theirs)
        outcome = conclude(client, name, challenger.version, decision, champion, "gate", None, metrics)
    metrics["promote/promoted"] = float(decision.promote)
    write_json({"model_name": name, "version": challenger.version, "promoted": decision.promote,
                "champion": outcome, "reasons": decision.reasons, "metrics": metrics},
               ctx.path(paths.reports) / "promotion.json")
    print(f"promote: version {challenger.version} {'is now champion' if decision.promote else 'was not promoted'}; "
          f"champion is version {outcome}", flush=True)
    for reason in decision.reasons:
        print(f"  {reason}", flush=True)
    return StageResult(metrics=metrics)

