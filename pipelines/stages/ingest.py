"""ingest: the configured source, its personal data masked (ingest.pii), to
data/raw/dataset.parquet; counts of what was found, never the values, to reports/pii.json."""

from components.data.pii import scan
from components.data.sources import ingest
from pipelines.core.io import atomic, write_parquet
from pipelines.stagekit.contract import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    cfg, paths = ctx.params.ingest, ctx.params.paths
    # User files are read only from the folders dvc.yaml lists as this stage's inputs, so
    # DVC notices when they change and a rerun rebuilds from exactly them.
    allowed = [ctx.path(dep) for dep in ctx.deps if ctx.path(dep).is_dir()]
    found = scan(ingest(cfg, ctx.root, allowed=allowed), cfg.pii)
    report = ctx.path(paths.reports) / "pii.json"
    with atomic(report) as tmp:
        tmp.write_text(found.report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    frame = found.frame
    write_parquet(frame, ctx.path(paths.raw))
    metrics = {
        "data/rows": len(frame),
        "data/classes": int(frame["label"].nunique()),
        "data/sources": int(frame["source"].nunique()),
        **found.report.metrics(),
    }
    summary = (
        []
        if not found.report.rows_with_pii
        else [
            f"personal data in {found.report.rows_with_pii} row(s), {cfg.pii.policy}ed: "
            + ", ".join(f"{entity} {n}" for entity, n in found.report.findings.items() if n)
        ]
    )
    return StageResult(metrics=metrics, artifacts={"pii": report}, summary=summary)
