"""augment: EDA copies of the train split only, to data/augmented/train.parquet."""

from components.data.augment import augment
from pipelines.io import read_parquet, write_parquet
from pipelines.stages import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    paths = ctx.params.paths
    train = read_parquet(ctx.path(paths.split) / "train.parquet", "augment", "split")
    augmented = augment(train, ctx.params.augment)
    write_parquet(augmented, ctx.path(paths.augmented))
    metrics = {"augment/rows": len(augmented)}
    metrics.update({f"augment/{op}": int(n) for op, n in augmented["op"].value_counts().items()})
    return StageResult(metrics=metrics)
