"""ingest: the configured source to data/raw/dataset.parquet."""

from components.data.sources import ingest
from pipelines.contract import StageContext, StageResult
from pipelines.io import write_parquet


def run(ctx: StageContext) -> StageResult:
    # User files are read only from the folders dvc.yaml lists as this stage's inputs, so
    # DVC notices when they change and a rerun rebuilds from exactly them.
    allowed = [ctx.path(dep) for dep in ctx.deps if ctx.path(dep).is_dir()]
    frame = ingest(ctx.params.ingest, ctx.root, allowed=allowed)
    write_parquet(frame, ctx.path(ctx.params.paths.raw))
    return StageResult(
        metrics={
            "data/rows": len(frame),
            "data/classes": int(frame["label"].nunique()),
            "data/sources": int(frame["source"].nunique()),
        }
    )
