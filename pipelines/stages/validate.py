"""validate: the expectation suite over the raw dataset; valid rows go on, quarantined
rows are set aside with their reasons, and a failure stops the pipeline here."""

from components.data.validation import validate
from components.data.validation_page import render
from components.errors import KilnError
from pipelines.core.io import atomic, write_parquet
from pipelines.core.reports import Validation
from pipelines.stagekit.contract import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    paths = ctx.params.paths
    raw = ctx.read(paths.raw)
    reports = ctx.path(paths.reports)
    docs = reports / "validation_docs"
    # `min_chars: auto` is BBC's own bound for the BBC corpus and any non-empty text for
    # a user's files.
    outcome = validate(raw, ctx.params.validate_.resolved(ctx.params.ingest.base), docs)
    report, report_path = Validation.model_validate(outcome.report), reports / "validation.json"
    report.write(report_path)
    page = reports / "validation.html"
    with atomic(page) as tmp:
        tmp.write_text(render(report.model_dump(mode="json"), paths.raw), encoding="utf-8")
    metrics = {
        "data/rows": report.rows,
        "data/valid_rows": report.rows_valid,
        "data/quarantined_rows": report.rows_quarantined,
        "data/duplicate_rows": report.duplicates.rows,
        "data/failed_expectations": len(report.failures),
    }
    if not outcome.success:
        # The report and its pages are what a person opens to see why: log them first.
        ctx.run.log_metrics(metrics)
        ctx.run.log_artifact(report_path, "validation")
        ctx.run.log_artifact(page, "validation/page")
        ctx.run.log_artifact(docs, "validation/data_docs")
        ctx.run.set_tags({"kiln.validation": "failed"})
        lines = "\n".join(f"  - {line}" for line in outcome.failures)
        raise KilnError(
            f"validate: {len(outcome.failures)} expectation(s) failed on {paths.raw}:\n{lines}\n"
            f"  report: {page.relative_to(ctx.root)} (offline), {report_path.relative_to(ctx.root)}, "
            f"Data Docs: {(docs / 'index.html').relative_to(ctx.root)}"
        )
    write_parquet(outcome.quarantined, ctx.path(paths.quarantine))
    write_parquet(outcome.valid, ctx.path(paths.validated))
    ctx.run.set_tags({"kiln.validation": "passed"})
    artifacts = {"validation": report_path, "validation/page": page, "validation/data_docs": docs}
    return StageResult(metrics=metrics, artifacts=artifacts)
