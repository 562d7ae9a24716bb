"""prune: remove attention heads and FFN neurons from the student, then recover with a
short distillation from the teacher."""

import copy
from pathlib import Path

import lightning as L
import torch

from components.text.classifier import MeanPoolClassifier, predict_labels
from components.text.data import ClassificationData
from components.text.distill import Distiller, KdLoss
from components.text.model import count_parameters
from components.text.modules import class_weights
from components.text.prune import importance, prune
from components.text.training import loading
from pipelines.core.io import write_json
from pipelines.stagekit.contract import StageContext, StageResult
from pipelines.stagekit.majority import checked
from pipelines.stagekit.trained import trained_metrics
from pipelines.stagekit.training import card, fit, load_model, save_model, score, teacher_tokens, with_augmented


def _val_f1(model, data: ClassificationData, labels: dict) -> float:
    """Macro-F1 on the texts a val check scores (loop.val_texts): a point of the curve."""
    from torchmetrics.functional.classification import multiclass_f1_score

    truth, predicted = predict_labels(model, data.val_dataloader())
    return float(multiclass_f1_score(torch.tensor(predicted), torch.tensor(truth), len(labels), average="macro"))


def _curve(ctx: StageContext, student, heads, neurons, data: ClassificationData, labels: dict) -> Path:
    """Quality at each sparsity of prune.curve before recovery, what pruning alone costs:
    logged as a curve and written to the reports; returns the file."""
    curve = []
    for ratio in ctx.params.prune.curve:
        trial = copy.deepcopy(student)
        prune(trial, heads, neurons, ratio, ratio)
        curve.append(
            {
                "ratio": ratio,
                "params_non_embedding": count_parameters(trial, embeddings=False),
                "val_macro_f1": _val_f1(trial, data, labels),
            }
        )
        ctx.run.log_metrics({"prune/curve_val_macro_f1": curve[-1]["val_macro_f1"]}, step=int(ratio * 100))
    path = ctx.path(ctx.params.paths.reports) / "prune_curve.json"
    write_json(curve, path)
    return path


def run(ctx: StageContext) -> StageResult:
    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.prune
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    student, tokenizer, made = load_model(ctx, paths.student, MeanPoolClassifier)
    teacher, teacher_tokenizer, taught = load_model(ctx, paths.teacher, MeanPoolClassifier)
    labels = made.labels
    split = ctx.read_split()
    if cfg.augmented:
        split["train"] = with_augmented(ctx, split["train"])
    data = ClassificationData(
        split,
        labels,
        tokenizer,
        made.max_length,
        cfg.loop.batch_size,
        params.hardware.seed,
        teacher_tokenizer=teacher_tokens(made, taught, teacher_tokenizer),
        val_texts=cfg.loop.val_texts,
        loading=loading(params.hardware),
    )

    heads, neurons = importance(student, data.train_dataloader(), cfg.importance_batches)
    before = count_parameters(student, embeddings=False)

    curve_path = _curve(ctx, student, heads, neurons, data, labels)
    prune(student, heads, neurons, cfg.head_ratio, cfg.ffn_ratio)
    after = count_parameters(student, embeddings=False)
    pruned_f1 = _val_f1(student, data, labels)
    described = card(ctx, made.tokenizer, {}, labels, {"student": made.metrics})
    # Recovery is distillation from the teacher with prune's own knobs, on logits alone.
    recovery = KdLoss(cfg.alpha, cfg.temperature, hidden_weight=0.0)
    weight = class_weights(cfg.class_weight, split["train"]["label"].map(labels), len(labels))
    module = Distiller(student, teacher, recovery, cfg.optim, described.model_dump(), len(labels), weight)
    trainer = fit(ctx, module, data, "recovery", cfg.loop, monitor="val/macro_f1")
    scored = score(trainer, module, data)
    metrics = trained_metrics(scored, trainer, student, len(split["train"]), ("student", made.metrics["test/macro_f1"]))
    metrics |= {
        "prune/val_macro_f1_before_recovery": pruned_f1,
        "model/params_non_embedding_before": before,
        "prune/non_embedding_reduction": 1 - after / before,
    }
    save_model(ctx, student, tokenizer, described.model_copy(update={"metrics": metrics}), paths.pruned)
    names = made.label_list
    truth, predicted = ([names[i] for i in ids] for ids in (scored.truth, scored.predicted))
    result = StageResult(metrics=metrics, artifacts={"prune": curve_path})
    return checked(ctx, result, "pruned student", split["train"]["label"], truth, predicted)
