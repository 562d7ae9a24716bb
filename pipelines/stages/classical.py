"""classical: the classical family, TF-IDF over word or character n-grams with a logistic
regression, its grid point chosen on val, exported to ONNX (raw text in) and checked
against scikit-learn on held-out texts."""

import json

from components.classical.model import Selection, count_parameters, export, parity_gate, select
from components.deploy.records import Parity
from components.explain.linear import LinearExplainer
from components.runtime.classical import ClassicalClassifier
from pipelines.core.io import atomic
from pipelines.core.records import write_record
from pipelines.stagekit.contract import StageContext, StageResult
from pipelines.stagekit.majority import checked


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.params.classical
    split = ctx.read_split()
    train, val, test = split["train"], split["val"], split["test"]
    chosen = select(
        train["text"].tolist(),
        train["label"].tolist(),
        val["text"].tolist(),
        val["label"].tolist(),
        cfg,
        ctx.params.hardware.seed,
    )
    # Held-out texts, as for the transformer's export: a check of arithmetic, not of quality.
    found = _write_model(ctx, chosen, (test["text"].tolist() + val["text"].tolist())[: cfg.parity_texts])
    best = chosen.best
    result = StageResult(
        metrics={
            "classical/val_macro_f1": best.val_macro_f1,
            "classical/val_accuracy": best.val_accuracy,
            "classical/features": best.features,
            "classical/params": count_parameters(chosen.pipeline),
            "classical/grid_points": len(chosen.table),
            "classical/grid_s": chosen.seconds,
            "onnx_classical/max_abs_diff": found.max_abs_diff,
            "onnx_classical/parity_agreement": found.agreement,
            "onnx_classical/size_mb": found.size_mb,
        },
        summary=_summary(chosen, len(train)),
    )
    predicted = [chosen.labels[i] for i in chosen.pipeline.predict(val["text"].tolist())]
    return checked(ctx, result, "classical model", train["label"], val["label"], predicted)


def _write_model(ctx: StageContext, chosen: Selection, texts: list[str]) -> Parity:
    """The classical folder: the ONNX file, gated on its parity with scikit-learn on
    `texts`, its explainer, the parity found and the grid."""
    cfg = ctx.params.classical
    commit, dirty = ctx.git
    with atomic(ctx.path(ctx.params.paths.classical)) as folder:
        folder.mkdir(parents=True)
        model = folder / "model.onnx"
        export(
            chosen,
            model,
            {
                "git_commit": commit,
                "git_dirty": dirty,
                "made_by": "classical",
                "data": {path: value for path, value in ctx.deps.items() if path.startswith("data/")},
            },
        )
        found = parity_gate(chosen.pipeline, ClassicalClassifier(model), texts, cfg.max_abs_diff)
        # The weights again in a form that explains a prediction without scikit-learn or pickles.
        explainer = LinearExplainer.from_pipeline(chosen.pipeline, chosen.labels).to_dict()
        (folder / "explainer.json").write_text(json.dumps(explainer), encoding="utf-8")
        parity = found.model_copy(update={"size_mb": model.stat().st_size / 1e6})
        write_record(parity, folder / "parity.json")
        (folder / "grid.json").write_text(json.dumps(_grid(chosen), indent=2, default=list) + "\n")
    return parity


def _grid(chosen: Selection) -> dict:
    return {
        "best": vars(chosen.best),
        "train_texts": chosen.train_texts,
        "skipped": chosen.skipped,
        "grid": [vars(point) for point in chosen.table],
    }


def _summary(chosen: Selection, train_texts: int) -> list[str]:
    best = chosen.best
    return (
        [
            f"chosen on val: {best.analyzer} n-grams {tuple(best.ngram_range)}, C={best.c}, "
            f"class_weight {best.class_weight}"
        ]
        + [f"skipped: {reason}" for reason in chosen.skipped]
        + (
            [f"fitted on a sample of {chosen.train_texts} of {train_texts} train texts (classical.max_train_texts)"]
            if chosen.train_texts < train_texts
            else []
        )
    )
