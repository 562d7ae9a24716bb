"""export: the pruned student (the model Kiln ships) and the teacher (for comparison) as
ONNX files, each through a parity gate against PyTorch on real held-out texts."""

from pathlib import Path

from components.deploy.gated import export_with_parity, metadata_of
from components.deploy.records import Parity
from components.text.classifier import MeanPoolClassifier
from pipelines.core.io import atomic
from pipelines.core.records import ExportReport
from pipelines.stagekit.contract import StageContext, StageResult
from pipelines.stagekit.training import load_model

# The exported files, by the params path of the model each is made from.
MODELS = {"pruned": "pruned", "teacher": "teacher"}


def _export_one(ctx: StageContext, name: str, folder: Path, texts: list[str]) -> Parity:
    source = getattr(ctx.params.paths, MODELS[name])
    model, tokenizer, card = load_model(ctx, source, MeanPoolClassifier)
    tokens = folder / Path(ctx.params.paths.onnx_tokenizer(name)).name
    tokens.write_bytes(ctx.input(f"{source}/tokenizer.json", "tokenizer").read_bytes())
    commit, dirty = ctx.git
    data = {path: value for path, value in ctx.deps.items() if path.startswith("data/")}
    metadata = metadata_of(model, name, card.labels, card.stage, git_commit=commit, git_dirty=dirty, data=data)
    return export_with_parity(
        name, model, tokenizer, tokens, folder / f"{name}.onnx", metadata, texts, ctx.params.export
    )


def run(ctx: StageContext) -> StageResult:
    paths, cfg = ctx.params.paths, ctx.params.export
    # Real held-out texts: the test split, topped up from val when it holds fewer than the
    # gate asks for (BBC's test split has about 200).
    split = ctx.read_split("test", "val")
    texts = (split["test"]["text"].tolist() + split["val"]["text"].tolist())[: cfg.parity_texts]
    with atomic(ctx.path(paths.onnx)) as folder:
        folder.mkdir(parents=True)
        report = ExportReport(
            models={name: _export_one(ctx, name, folder, texts) for name in MODELS}, max_abs_diff=cfg.max_abs_diff
        )
        report.write(folder / "export.json")
    metrics = {"export/parity_texts": len(texts)}
    for name, found in report.models.items():
        variant = "onnx_fp32" if name == "pruned" else "onnx_teacher"
        metrics.update(
            {
                f"{variant}/max_abs_diff": found.max_abs_diff,
                f"{variant}/parity_agreement": found.agreement,
                f"{variant}/size_mb": found.size_mb,
            }
        )
    return StageResult(metrics=metrics)
