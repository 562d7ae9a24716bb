"""prune: remove attention heads and FFN neurons from the student, then recover with a
short distillation from the teacher."""

import copy

import lightning as L
import torch

from components.text.classifier import MeanPoolClassifier
from components.text.data import ClassificationData
from components.text.config import DistillConfig
from components.text.distill import Distiller
from components.text.model import count_parameters
from components.text.prune import ffn_importance, head_importance, prune
from components.text.training import finish
from pipelines.io import write_json
from pipelines.stages import StageContext, StageResult
from pipelines.training import (checkpoints, fit_and_score, load_model, mlflow_logger, read_split, save_model,
                                with_augmented)


def _val_f1(model, data: ClassificationData, labels: dict) -> float:
    from torchmetrics.functional.classification import multiclass_f1_score

    model.eval()
    preds, truth = [], []
    with torch.no_grad():
        for batch in data.val_dataloader():
            preds.append(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1))
            truth.append(batch["labels"])
    return float(multiclass_f1_score(torch.cat(preds), torch.cat(truth), len(labels), average="macro"))


def run(ctx: StageContext) -> StageResult:
    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.prune
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    student, tokenizer, made = load_model(ctx.path(paths.student), MeanPoolClassifier, "prune", "distill")
    teacher, _, _ = load_model(ctx.path(paths.teacher), MeanPoolClassifier, "prune", "finetune")
    labels = made["labels"]
    split = read_split(ctx)
    split["train"] = with_augmented(ctx, split["train"])
    data = ClassificationData(split, labels, tokenizer, student.config.max_position_embeddings,
                              cfg.loop.batch_size, params.hardware.seed)

    loader = data.train_dataloader()
    heads = head_importance(student, (b for _, b in zip(range(cfg.importance_batches), loader)))
    neurons = ffn_importance(student)
    before = count_parameters(student, embeddings=False)

    # Quality at each sparsity before recovery: what pruning alone costs.
    curve = []
    for ratio in cfg.curve:
        trial = copy.deepcopy(student)
        prune(trial, heads, neurons, ratio, ratio)
        curve.append({"ratio": ratio, "params_non_embedding": count_parameters(trial, embeddings=False),
                      "val_macro_f1": _val_f1(trial, data, labels)})
        ctx.run.log_metrics({"prune/curve_val_macro_f1": curve[-1]["val_macro_f1"]}, step=int(ratio * 100))
    curve_path = ctx.path(paths.reports) / "prune_curve.json"
    write_json(curve, curve_path)

    prune(student, heads, neurons, cfg.head_ratio, cfg.ffn_ratio)
    after = count_parameters(student, embeddings=False)
    pruned_f1 = _val_f1(student, data, labels)
    describe = {
        "stage": "prune",
        "labels": labels,
        "prune": cfg.model_dump(),
        "layer_shapes": student.config.kiln_layer_shapes,
        "student": made.get("metrics"),
        "tokenizer": made.get("tokenizer"),
        "data": ctx.deps,
    }
    recovery = DistillConfig(alpha=cfg.alpha, temperature=cfg.temperature, loop=cfg.loop, optim=cfg.optim,
                             student=made["distill"]["student"])
    module = Distiller(student, teacher, recovery, describe, num_labels=len(labels))
    folder, _ = checkpoints(ctx, "hardware", "prune")
    trainer, scores = fit_and_score(ctx, module, data, folder / "recovery", cfg.loop, mlflow_logger(ctx))
    student_f1 = made["metrics"]["test/macro_f1"]
    metrics = {
        **{k: scores[k] for k in ("val/macro_f1", "val/accuracy", "test/macro_f1", "test/accuracy")},
        "prune/val_macro_f1_before_recovery": pruned_f1,
        "model/params": count_parameters(student),
        "model/params_non_embedding_before": before,
        "model/params_non_embedding": after,
        "prune/non_embedding_reduction": 1 - after / before,
        "student/test_macro_f1": student_f1,
        "test/macro_f1_retention": scores["test/macro_f1"] / student_f1 if student_f1 else 0.0,
    }
    if trainer.is_global_zero:
        save_model(student, tokenizer, {**describe, "metrics": metrics}, ctx.path(paths.pruned))
        finish(folder)
    return StageResult(metrics=metrics, artifacts={"prune": curve_path})
