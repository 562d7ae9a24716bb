"""unlabeled: the texts of data/unlabeled/, without labels, made fit to teach a student:
personal data masked as ingest masks it (ingest.pii), texts within validate's length
bounds, each once, and none that is also in train, val or test. Written to
data/transfer/unlabeled.parquet, distill's transfer set beside the labelled train texts."""

from components.data.pii import scan
from components.data.sources import read_unlabeled
from components.data.split import transfer_set
from pipelines.core.io import write_parquet
from pipelines.stagekit.contract import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    params, paths = ctx.params, ctx.params.paths
    # Files are read only from the folder dvc.yaml lists as this stage's input.
    allowed = [ctx.path(dep) for dep in ctx.deps if ctx.path(dep).is_dir()]
    read = read_unlabeled(params.unlabeled, ctx.root, allowed)
    found = scan(read, params.ingest.pii.model_copy(update={"columns": ["text"]}))
    # User files: the bounds validate sets for them (min_chars auto is any text).
    limits = params.validate_.resolved("file")
    kept = transfer_set(found.frame, ctx.read_split().values(), limits.min_chars, limits.max_chars)
    write_parquet(kept.frame, ctx.path(paths.unlabeled))
    metrics = {
        "unlabeled/rows_read": len(read),
        "unlabeled/rows": len(kept.frame),
        "unlabeled/invalid_dropped": kept.invalid_dropped,
        "unlabeled/duplicates_dropped": kept.duplicates_dropped,
        "unlabeled/in_splits_dropped": kept.in_splits_dropped,
        "unlabeled/rows_with_pii": found.report.rows_with_pii,
    }
    summary = []
    if kept.in_splits_dropped:
        summary.append(
            f"{kept.in_splits_dropped} unlabelled text(s) left out: the same text is in a labelled split "
            "(in val or test, the student would learn its teacher's answer on the texts it is scored on)"
        )
    if found.report.rows_with_pii:
        summary.append(f"personal data in {found.report.rows_with_pii} unlabelled text(s), {found.report.policy}ed")
    return StageResult(metrics=metrics, summary=summary)
