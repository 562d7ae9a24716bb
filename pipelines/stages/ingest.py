"""ingest: the configured source to data/raw/dataset.parquet."""

from components.data.sources import ingest
from pipelines.io import write_parquet
from pipelines.stages import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    frame = ingest(ctx.params.ingest, ctx.root)
    write_parquet(frame, ctx.path(ctx.params.paths.raw))
    return StageResult(
        metrics={
            "data/rows": len(frame),
            "data/classes": int(frame["label"].nunique()),
            "data/sources": int(frame["source"].nunique()),
        }
    )
