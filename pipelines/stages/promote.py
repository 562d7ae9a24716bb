"""promote: the gate between the challenger and the champion, both re-scored on the
current test split. Every reason, pass or fail, goes on the version's tags and into the
promotion history; the champion moves only if every check passes. A refusal is a normal
outcome, not a failed stage: the run says so at its end. The decision also goes into the
audit trail."""

from pipelines.core.records import Registration
from pipelines.registry import audit
from pipelines.registry.gating import Bounds, floor
from pipelines.registry.models import registry_errors
from pipelines.registry.promotion import promote
from pipelines.stagekit.contract import StageContext, StageResult
from pipelines.tracking import runs


def run(ctx: StageContext) -> StageResult:
    params, paths = ctx.params, ctx.params.paths
    registered = Registration.read(ctx.input(f"{paths.reports}/register.json", "registration"), ctx.name, "register")
    test = ctx.read_split("test")["test"]
    evaluation = ctx.input(f"{paths.reports}/evaluation.json", "evaluation report")
    bounds = Bounds(params.promote, params.evaluate, params.export, params.quantize, *floor(params.promote, evaluation))
    client = runs.client()
    with (
        audit.denials(ctx.root, client, registered.model_name, registered.version, "gate", None),
        registry_errors(f"promote: version {registered.version} of '{registered.model_name}'"),
    ):
        decision = promote(client, registered.model_name, registered.version, test, bounds)
        audit.promotion(ctx.root, client, decision, "gate", None)
    decision.write(ctx.path(paths.reports) / "promotion.json")
    summary = [decision.headline()] + ([decision.resolution] if decision.resolution else [])
    return StageResult(metrics={**decision.metrics, "promote/promoted": float(decision.promoted)}, summary=summary)
