"""finetune: the teacher, a sequence classifier initialised from the pretrained encoder;
with `ablation`, the same classifier from scratch beside it."""

from pathlib import Path

import lightning as L
from transformers import BertForMaskedLM

from components.text.classifier import MeanPoolClassifier
from components.text.data import ClassificationData, label_map, stratified_fraction
from components.text.model import count_parameters
from components.text.modules import Classifier
from components.text.training import finish
from pipelines.stages import StageContext, StageResult
from pipelines.training import (checkpoints, fit_and_score, load_model, mlflow_logger, read_split, save_model,
                                with_augmented)


def _train(ctx: StageContext, model, data: ClassificationData, labels: dict, describe: dict,
           folder: Path, loggers: list):
    cfg = ctx.params.finetune
    module = Classifier(model, cfg.optim, describe, num_labels=len(labels))
    trainer, scores = fit_and_score(ctx, module, data, folder, cfg.loop, loggers, patience=cfg.patience)
    return module, trainer, scores


def run(ctx: StageContext) -> StageResult:
    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.finetune
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    split = read_split(ctx)
    encoder, tokenizer, pretrained = load_model(ctx.path(paths.encoder), BertForMaskedLM, "finetune", "pretrain")
    labels = label_map(split["train"]["label"])
    split["train"] = stratified_fraction(split["train"], cfg.label_fraction, params.hardware.seed)
    if cfg.augmented:
        split["train"] = with_augmented(ctx, split["train"])
    length = min(params.encoder.max_length, encoder.config.max_position_embeddings)
    data = ClassificationData(split, labels, tokenizer, length, cfg.loop.batch_size, params.hardware.seed)

    def classifier() -> MeanPoolClassifier:
        config = encoder.config.__class__.from_dict({**encoder.config.to_dict(), "num_labels": len(labels),
                                                     "id2label": {i: l for l, i in labels.items()},
                                                     "label2id": labels})
        return MeanPoolClassifier(config)

    describe = {
        "stage": "finetune",
        "labels": labels,
        "finetune": cfg.model_dump(),
        "encoder": pretrained.get("encoder"),
        "tokenizer": pretrained.get("tokenizer"),
        "data": ctx.deps,
    }
    teacher = classifier()
    # The encoder's weights; its MLM head stays behind, the classifier layer starts fresh.
    teacher.bert.load_state_dict(encoder.bert.state_dict())
    # Teacher and ablation keep resumable checkpoints in folders of their own.
    folder, _ = checkpoints(ctx, "hardware", "encoder", "finetune")
    module, trainer, scores = _train(ctx, teacher, data, labels, describe, folder / "teacher", mlflow_logger(ctx))
    metrics = {
        **{k: scores[k] for k in ("val/macro_f1", "val/accuracy", "test/macro_f1", "test/accuracy")},
        "train/rows": len(split["train"]),
        "model/params": count_parameters(teacher),
        "model/params_non_embedding": count_parameters(teacher, embeddings=False),
    }
    if cfg.ablation:
        L.seed_everything(params.hardware.seed, workers=True, verbose=False)
        _, _, scratch = _train(ctx, classifier(), data, labels, {**describe, "ablation": True},
                               folder / "scratch", [])
        metrics.update({
            "ablation/scratch_val_macro_f1": scratch["val/macro_f1"],
            "ablation/scratch_test_macro_f1": scratch["test/macro_f1"],
            "ablation/pretraining_gain": scores["test/macro_f1"] - scratch["test/macro_f1"],
        })
    if trainer.is_global_zero:
        save_model(module.model, tokenizer, {**describe, "metrics": metrics}, ctx.path(paths.teacher))
        finish(folder)
    return StageResult(metrics=metrics)
