"""promote: the gate between the challenger and the champion, both re-scored on the
current test split. Every reason, pass or fail, goes on the version's tags and into the
promotion history; the champion moves only if every check passes. A refusal is a normal
outcome, not a failed stage: the run says so at its end."""

from pipelines import tracking
from pipelines.contract import StageContext, StageResult
from pipelines.promotion import Bounds, promote
from pipelines.records import Registration
from pipelines.registry import registry_errors


def run(ctx: StageContext) -> StageResult:
    params, paths = ctx.params, ctx.params.paths
    registered = Registration.read(ctx.input(f"{paths.reports}/register.json", "registration"), ctx.name, "register")
    test = ctx.read_split("test")["test"]
    bounds = Bounds(params.promote, params.evaluate, params.export, params.quantize)
    with registry_errors(f"promote: version {registered.version} of '{registered.model_name}'"):
        decision = promote(tracking.client(), registered.model_name, registered.version, test, bounds)
    decision.write(ctx.path(paths.reports) / "promotion.json")
    return StageResult(
        metrics={**decision.metrics, "promote/promoted": float(decision.promoted)}, summary=[decision.headline()]
    )
