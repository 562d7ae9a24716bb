"""split: deduplicate, then write data/split/{train,val,test}.parquet."""

from components.data.split import split, split_report
from pipelines.core.io import write_json, write_parquet
from pipelines.stagekit.contract import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    paths = ctx.params.paths
    result = split(ctx.read(paths.validated), ctx.params.split)
    for name, part in result.frames().items():
        write_parquet(part, ctx.path(paths.split) / f"{name}.parquet")
    report = split_report(result)
    report_path = ctx.path(paths.reports) / "split_classes.json"
    write_json(report, report_path)
    metrics = {f"split/{name}_rows": report[name]["rows"] for name in ("train", "val", "test")}
    metrics["data/duplicates_dropped"] = result.duplicates_dropped
    metrics["data/conflicts_dropped"] = result.conflicts_dropped
    return StageResult(metrics=metrics, artifacts={"split": report_path})
