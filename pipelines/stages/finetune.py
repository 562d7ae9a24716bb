"""finetune: the teacher, a sequence classifier initialised from the pretrained encoder;
with `ablation`, the same classifier from scratch beside it, and from the checkpoint as
it came when pretrain adapted one to these texts."""

import lightning as L
from transformers import AutoModelForMaskedLM, BertForMaskedLM

from components import stats
from components.text.classifier import MeanPoolClassifier, frozen
from components.text.data import ClassificationData, label_map, stratified_fraction
from components.text.model import keep_positions
from components.text.modules import Classifier, class_weights
from components.text.training import loading
from pipelines.stagekit.contract import StageContext, StageResult
from pipelines.stagekit.majority import checked
from pipelines.stagekit.pretrained import resolve as pretrained_source
from pipelines.stagekit.trained import trained_metrics
from pipelines.stagekit.training import card, fit, load_model, save_model, score, with_augmented


def run(ctx: StageContext) -> StageResult:
    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.finetune
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    split = ctx.read_split()
    encoder, tokenizer, pretrained = load_model(ctx, paths.encoder, BertForMaskedLM)
    labels = label_map(split["train"]["label"])
    split["train"] = stratified_fraction(split["train"], cfg.label_fraction, params.hardware.seed)
    if cfg.augmented:
        split["train"] = with_augmented(ctx, split["train"])
    loop, optim = (cfg.loop, cfg.optim) if pretrained.start is None else cfg.pretrained()
    length = pretrained.max_length
    data = _data(ctx, split, labels, tokenizer, length, loop)

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
    if pretrained.start is not None:
        frozen(teacher, cfg.pretrained_frozen_layers)
    weight = class_weights(cfg.class_weight, split["train"]["label"].map(labels), len(labels))
    module = Classifier(teacher, optim, described.model_dump(), len(labels), weight)
    trainer = fit(ctx, module, data, "teacher", loop, monitor="val/macro_f1", patience=cfg.patience)
    scored = score(trainer, module, data)
    metrics = trained_metrics(scored, trainer, teacher, len(split["train"])) | {"train/lr": optim.lr}
    truth, predicted = scored.truth, scored.predicted
    if cfg.ablation:
        metrics |= _ablation(ctx, split, labels, tokenizer, length, classifier, weight, pretrained, truth, predicted)
        metrics["ablation/pretraining_gain"] = metrics["test/macro_f1"] - metrics["ablation/scratch_test_macro_f1"]
    # Its val predictions go with it: distill compares its student with them, text by text.
    save_model(ctx, module.model, tokenizer, described.model_copy(update={"metrics": metrics}), paths.teacher, scored)
    names = described.label_list
    truth, predicted = [names[i] for i in truth], [names[i] for i in predicted]
    return checked(ctx, StageResult(metrics=metrics), "teacher", split["train"]["label"], truth, predicted)


def _data(ctx: StageContext, split, labels, tokenizer, length: int, loop) -> ClassificationData:
    """The splits as `loop` trains and checks a classifier on them, on this hardware."""
    hardware = ctx.params.hardware
    return ClassificationData(
        split,
        labels,
        tokenizer,
        length,
        loop.batch_size,
        hardware.seed,
        val_texts=loop.val_texts,
        loading=loading(hardware),
    )


def _ablation(ctx, split, labels, tokenizer, length, classifier, weight, pretrained, truth, predicted) -> dict:
    """The teacher's rivals on the same texts: the same classifier from scratch (what
    pretraining gains) and, when pretrain adapted a checkpoint to these texts, the
    classifier finetuned from the checkpoint as it came (what those steps gain); each
    with the paired difference of the teacher minus it on val."""
    params, cfg = ctx.params, ctx.params.finetune
    rivals = {"scratch": (classifier(), cfg.loop, cfg.optim)}
    if pretrained.start is not None and pretrained.metrics.get("train/steps", 0) > 0:
        as_it_came = classifier()
        checkpoint = AutoModelForMaskedLM.from_pretrained(pretrained_source(pretrained.start, ctx.root))
        keep_positions(checkpoint, length)
        as_it_came.bert.load_state_dict(checkpoint.bert.state_dict())
        frozen(as_it_came, cfg.pretrained_frozen_layers)
        rivals["unadapted"] = (as_it_came, *cfg.pretrained())
    found = {}
    for name, (model, loop, optim) in rivals.items():
        L.seed_everything(params.hardware.seed, workers=True, verbose=False)
        data = _data(ctx, split, labels, tokenizer, length, loop)
        module = Classifier(model, optim, {"ablation": name}, len(labels), weight)
        trainer = fit(ctx, module, data, name, loop, monitor="val/macro_f1", patience=cfg.patience, log_to_mlflow=False)
        scored = score(trainer, module, data)
        scores = scored.metrics
        d = stats.paired(truth, predicted, scored.predicted).macro_f1_difference
        found |= {
            f"ablation/{name}_val_macro_f1": scores["val/macro_f1"],
            f"ablation/{name}_test_macro_f1": scores["test/macro_f1"],
            f"ablation/{name}_val_gain": d.estimate,
            f"ablation/{name}_val_gain_lo": d.low,
            f"ablation/{name}_val_gain_hi": d.high,
        }
    return found
