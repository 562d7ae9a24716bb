"""distill: a smaller student trained from the teacher's soft targets on train texts, and
their augmented copies when `distill.augmented` is on. The student reads the tokenize
stage's tokenizer (a teacher from a pretrained checkpoint keeps its own), or, with
`distill.inherit`, starts from every other layer of its teacher and reads the teacher's
vocabulary cut to the tokens the train texts use."""

import hashlib

import lightning as L
import pandas as pd
from transformers import PreTrainedTokenizerFast

from components import stats
from components.text.classifier import MeanPoolClassifier
from components.text.data import BERT_SPECIAL, ClassificationData, file_hash, load_tokenizer
from components.text.distill import Distiller, KdLoss, inherited_student, sized_config
from components.text.modules import class_weights
from components.text.tokenizer import cut_vocabulary, used_tokens
from components.text.training import loading
from pipelines.stagekit.contract import StageContext, StageResult
from pipelines.stagekit.majority import checked
from pipelines.stagekit.trained import trained_metrics
from pipelines.stagekit.training import (
    card,
    fit,
    load_model,
    save_model,
    score,
    teacher_logits,
    teacher_tokens,
    val_predictions,
    with_augmented,
)


def run(ctx: StageContext) -> StageResult:
    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.distill
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    teacher, teacher_tokenizer, taught = load_model(ctx, paths.teacher, MeanPoolClassifier)
    path = ctx.input(paths.tokenizer, "tokenizer")
    tokenizer_id = file_hash(path)
    tokenizer = teacher_tokenizer if taught.tokenizer == tokenizer_id else load_tokenizer(path, ctx.name)
    split = ctx.read_split()
    labelled, unlabeled, sampled, rows = _transfer_set(ctx, split)
    if cfg.inherit:
        student, tokenizer, tokenizer_id = _inherited(teacher, teacher_tokenizer, split["train"]["text"].tolist())
    else:
        student = MeanPoolClassifier(sized_config(teacher.config.to_dict(), cfg.student, tokenizer))
    described = card(ctx, tokenizer_id, {}, taught.labels, {"teacher": taught.metrics})
    described = described.model_copy(update={"start": taught.start})
    length = taught.max_length
    # Hidden-state matching needs the teacher at each step; logits alone are computed once.
    cached = cfg.hidden_weight == 0
    # The teacher's val answers, for the paired comparison: finetune's, read off its final
    # score of this split (the teacher again over every val text only when it has none).
    theirs = val_predictions(ctx, paths.teacher, split["val"])
    frames = ({"train": split["train"]} if cached else {}) | ({"val": split["val"]} if theirs is None else {})
    answers = teacher_logits(teacher, teacher_tokenizer, frames, taught.labels, length, params.hardware)
    if theirs is None:
        theirs = answers["val"].argmax(-1).tolist()
    data = ClassificationData(
        split,
        taught.labels,
        tokenizer,
        length,
        cfg.loop.batch_size,
        params.hardware.seed,
        teacher_tokenizer=None if cached else teacher_tokens(described, taught, teacher_tokenizer),
        teacher_logits={"train": answers["train"]} if cached else None,
        val_texts=cfg.loop.val_texts,
        loading=loading(params.hardware),
    )
    weight = class_weights(cfg.class_weight, labelled["label"].map(taught.labels), len(taught.labels))
    teaching, loss = None if cached else teacher, KdLoss(cfg.alpha, cfg.temperature, cfg.hidden_weight)
    module = Distiller(student, teaching, loss, cfg.optim, described.model_dump(), len(taught.labels), weight)
    trainer = fit(ctx, module, data, "student", cfg.loop, monitor="val/macro_f1")
    scored = score(trainer, module, data)
    metrics = trained_metrics(
        scored, trainer, student, len(split["train"]), ("teacher", taught.metrics["test/macro_f1"])
    )
    metrics |= {
        "train/labelled": sampled,
        "train/unlabeled": len(unlabeled),
        "model/vocab_size": student.config.vocab_size,
    }
    save_model(ctx, student, tokenizer, described.model_copy(update={"metrics": metrics}), paths.student)
    truth, mine = scored.truth, scored.predicted
    bounded = [f"{sampled:,} of {rows:,} train rows in the transfer set (distill.max_rows)"]
    summary = (bounded if sampled < rows else []) + _above_teacher(truth, mine, theirs, taught.metrics)
    result = StageResult(metrics=metrics, summary=summary)
    names = taught.label_list
    return checked(ctx, result, "student", labelled["label"], [names[i] for i in truth], [names[i] for i in mine])


def _transfer_set(ctx: StageContext, split: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """The texts the student learns from, set as `split`'s train: at most distill.max_rows
    labelled rows (a stratified sample), their augmented copies where asked, and the
    unlabeled texts. (The labelled rows, the unlabeled ones, rows kept, rows there were.)"""
    cfg = ctx.params.distill
    rows = len(split["train"])
    if cfg.max_rows is not None and rows > cfg.max_rows:
        kept = stats.stratified_sample(split["train"]["label"].tolist(), cfg.max_rows, ctx.params.hardware.seed)
        split["train"] = split["train"].iloc[kept].reset_index(drop=True)
    sampled = len(split["train"])
    labelled = with_augmented(ctx, split["train"]) if cfg.augmented else split["train"]
    unlabeled = _unlabeled(ctx)
    split["train"] = pd.concat([labelled, unlabeled], ignore_index=True)
    return labelled, unlabeled, sampled, rows


def _unlabeled(ctx: StageContext) -> pd.DataFrame:
    """The unlabeled stage's texts (at most distill.unlabeled_max, a seeded sample), as
    train rows without a label: the student learns the teacher's answers on them."""
    cfg = ctx.params.distill
    texts = ctx.read(ctx.params.paths.unlabeled)
    if len(texts) > cfg.unlabeled_max:
        texts = texts.sample(n=cfg.unlabeled_max, random_state=ctx.params.hardware.seed).sort_index()
    return texts.assign(label=None, source="unlabeled")


def _inherited(teacher: MeanPoolClassifier, teacher_tokenizer, train: list[str]):
    """(student, its tokenizer, the tokenizer's id): every other layer of `teacher`, and
    its vocabulary cut to the tokens the train texts use."""
    keep = used_tokens(teacher_tokenizer.backend_tokenizer, train)
    cut = cut_vocabulary(teacher_tokenizer.backend_tokenizer, keep)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=cut, **BERT_SPECIAL)
    return inherited_student(teacher, keep), tokenizer, hashlib.sha256(cut.to_str().encode()).hexdigest()


def _above_teacher(truth: list[int], mine: list[int], theirs: list[int], taught: dict[str, float]) -> list[str]:
    """Why not, when the student (predicting `mine` on val) scores above its teacher
    (`theirs`): the paired difference on the same val texts, and whether it is more than
    their noise."""
    d = stats.paired(truth, mine, theirs).macro_f1_difference
    if d.estimate <= 0:
        return []
    found = (
        f"student val macro-F1 {d.estimate:+.4f} above its teacher's {taught['val/macro_f1']:.4f} "
        f"(95 % interval [{d.low:+.4f}, {d.high:+.4f}] on {len(truth)} val texts)"
    )
    if d.low <= 0:
        return [f"{found}: within the noise of this val split"]
    return [f"{found}: the teacher is under-trained for this data; give finetune more steps or the encoder more width"]
