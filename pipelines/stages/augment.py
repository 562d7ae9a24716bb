"""augment: copies of the train split only, made on units that suit the script, to
data/augmented/train.parquet."""

from components.data.augment import augment
from pipelines.core.io import write_parquet
from pipelines.stagekit.contract import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    paths = ctx.params.paths
    result = augment(ctx.read(f"{paths.split}/train.parquet"), ctx.params.augment)
    write_parquet(result.frame, ctx.path(paths.augmented))
    metrics = {"augment/rows": len(result.frame), "augment/skipped": result.skipped}
    metrics.update({f"augment/{op}": int(n) for op, n in result.frame["op"].value_counts().items()})
    return StageResult(metrics=metrics, summary=[result.reason] if result.reason else [])
