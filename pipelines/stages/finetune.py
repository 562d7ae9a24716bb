"""finetune: the teacher, a sequence classifier initialised from the pretrained encoder;
with `ablation`, the same classifier from scratch beside it."""

import lightning as L
from transformers import BertForMaskedLM

from components.text.classifier import MeanPoolClassifier, predict_labels
from components.text.data import ClassificationData, label_map, stratified_fraction
from components.text.model import count_parameters
from components.text.modules import Classifier, class_weights
from pipelines.contract import StageContext, StageResult
from pipelines.majority import checked
from pipelines.training import card, fit, load_model, save_model, score, with_augmented


def run(ctx: StageContext) -> StageResult:
    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.finetune
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    split = ctx.read_split()
    encoder, tokenizer, pretrained = load_model(ctx, paths.encoder, BertForMaskedLM)
    labels = label_map(split["train"]["label"])
    split["train"] = stratified_fraction(split["train"], cfg.label_fraction, params.hardware.seed)
    if cfg.augmented:
        split["train"] = with_augmented(ctx, split["train"])
    data = ClassificationData(
        split, labels, tokenizer, encoder.config.max_position_embeddings, cfg.loop.batch_size, params.hardware.seed
    )

    def classifier() -> MeanPoolClassifier:
        config = encoder.config.__class__.from_dict(
            {
                **encoder.config.to_dict(),
                "num_labels": len(labels),
                "id2label": {i: label for label, i in labels.items()},
                "label2id": labels,
            }
        )
        return MeanPoolClassifier(config)

    described = card(ctx, pretrained.tokenizer, {}, labels, {"encoder": pretrained.metrics})
    described = described.model_copy(update={"start": pretrained.start})
    teacher = classifier()
    # The encoder's weights; its MLM head stays behind, the classifier layer starts fresh.
    teacher.bert.load_state_dict(encoder.bert.state_dict())
    weight = class_weights(cfg.class_weight, split["train"]["label"].map(labels), len(labels))
    optim = cfg.optim if pretrained.start is None else cfg.optim.model_copy(update={"lr": cfg.pretrained_lr})
    module = Classifier(teacher, optim, described.model_dump(), len(labels), weight)
    trainer = fit(ctx, module, data, "teacher", cfg.loop, monitor="val/macro_f1", patience=cfg.patience)
    scores = score(trainer, module, data)
    metrics = {
        **{k: scores[k] for k in ("val/macro_f1", "val/accuracy", "test/macro_f1", "test/accuracy")},
        "train/examples": len(split["train"]),
        "train/steps": trainer.global_step,
        "train/lr": optim.lr,
        "model/params": count_parameters(teacher),
        "model/params_non_embedding": count_parameters(teacher, embeddings=False),
    }
    if cfg.ablation:
        L.seed_everything(params.hardware.seed, workers=True, verbose=False)
        scratch = Classifier(classifier(), cfg.optim, {**described.model_dump(), "ablation": True}, len(labels), weight)
        found = score(
            fit(
                ctx,
                scratch,
                data,
                "scratch",
                cfg.loop,
                monitor="val/macro_f1",
                patience=cfg.patience,
                log_to_mlflow=False,
            ),
            scratch,
            data,
        )
        metrics.update(
            {
                "ablation/scratch_val_macro_f1": found["val/macro_f1"],
                "ablation/scratch_test_macro_f1": found["test/macro_f1"],
                "ablation/pretraining_gain": scores["test/macro_f1"] - found["test/macro_f1"],
            }
        )
    save_model(ctx, module.model, tokenizer, described.model_copy(update={"metrics": metrics}), paths.teacher)
    names = described.label_list
    truth, predicted = ([names[i] for i in ids] for ids in predict_labels(module.model, data.val_dataloader()))
    return checked(ctx, StageResult(metrics=metrics), "teacher", split["train"]["label"], truth, predicted)
