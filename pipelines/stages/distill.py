"""distill: a smaller student trained from the teacher's soft targets on train plus
augmented texts."""

import lightning as L

from components.text.classifier import MeanPoolClassifier
from components.text.data import ClassificationData
from components.text.distill import Distiller
from components.text.model import count_parameters
from components.text.training import finish
from pipelines.stages import StageContext, StageResult
from pipelines.training import (checkpoints, fit_and_score, load_model, mlflow_logger, read_split, save_model,
                                with_augmented)


def run(ctx: StageContext) -> StageResult:
    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.distill
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    teacher, tokenizer, taught = load_model(ctx.path(paths.teacher), MeanPoolClassifier, "distill", "finetune")
    labels = taught["labels"]
    split = read_split(ctx)
    if cfg.augmented:
        split["train"] = with_augmented(ctx, split["train"])
    size = cfg.student
    config = teacher.config.__class__.from_dict({
        **teacher.config.to_dict(),
        "num_hidden_layers": size.layers, "hidden_size": size.hidden,
        "num_attention_heads": size.heads, "intermediate_size": size.intermediate,
    })
    student = MeanPoolClassifier(config)
    length = teacher.config.max_position_embeddings
    data = ClassificationData(split, labels, tokenizer, length, cfg.loop.batch_size, params.hardware.seed)
    describe = {
        "stage": "distill",
        "labels": labels,
        "distill": cfg.model_dump(),
        "teacher": {k: taught.get(k) for k in ("encoder", "metrics")},
        "tokenizer": taught.get("tokenizer"),
        "data": ctx.deps,
    }
    module = Distiller(student, teacher, cfg, describe, num_labels=len(labels))
    folder, _ = checkpoints(ctx, "hardware", "distill")
    trainer, scores = fit_and_score(ctx, module, data, folder / "student", cfg.loop, mlflow_logger(ctx))
    teacher_f1 = taught["metrics"]["test/macro_f1"]
    metrics = {
        **{k: scores[k] for k in ("val/macro_f1", "val/accuracy", "test/macro_f1", "test/accuracy")},
        "train/rows": len(split["train"]),
        "model/params": count_parameters(student),
        "model/params_non_embedding": count_parameters(student, embeddings=False),
        "teacher/test_macro_f1": teacher_f1,
        "test/macro_f1_retention": scores["test/macro_f1"] / teacher_f1 if teacher_f1 else 0.0,
    }
    if trainer.is_global_zero:
        save_model(student, tokenizer, {**describe, "metrics": metrics}, ctx.path(paths.student))
        finish(folder)
    return StageResult(metrics=metrics)
