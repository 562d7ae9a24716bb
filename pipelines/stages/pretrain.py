"""pretrain: masked-LM pretraining of a BERT encoder on the train texts."""

import math

import lightning as L
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM

from components.errors import KilnError
from components.stats import seeded_sample
from components.text.data import MaskedLMData, file_hash, load_tokenizer
from components.text.model import bert_config, count_parameters, keep_positions, unigram_bias, unigram_perplexity
from components.text.modules import MaskedLM, masked_lm_perplexity
from components.text.tokenizer import choose_max_length, token_counts, vocabulary_fit
from components.text.training import loading, precision
from pipelines.stagekit import pretrained
from pipelines.stagekit.contract import StageContext, StageResult
from pipelines.stagekit.training import card, fit, save_model


def _auto(ctx: StageContext, texts: list[str]) -> tuple[str | None, dict[str, float], str]:
    """`init: auto`: (the checkpoint to start from, or None for scratch; the figures the
    choice rests on; the choice, in words)."""
    auto = ctx.params.pretrain.auto
    source = pretrained.resolve(auto.checkpoint, ctx.root)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - OSError offline, ValueError for a wrong model type, ...
        raise KilnError(f"pretrain: cannot load pretrain.auto.checkpoint '{auto.checkpoint}': {err}") from None
    fit = vocabulary_fit(tokenizer.backend_tokenizer, texts)
    figures = {
        "start/pieces_per_word": fit.pieces_per_word,
        "start/unknown_share": fit.unknown_share,
    }
    measured = (
        f"{fit.pieces_per_word:.2f} word pieces a word (at most {auto.max_pieces_per_word:g}) and "
        f"{fit.unknown_share:.1%} unknown (at most {auto.max_unknown_share:.1%}) over {fit.words:,} train words"
    )
    if fit.pieces_per_word <= auto.max_pieces_per_word and fit.unknown_share <= auto.max_unknown_share:
        return auto.checkpoint, figures, f"start: {auto.checkpoint}, whose vocabulary fits the train texts: {measured}"
    return (
        None,
        figures,
        f"start: from scratch, since {auto.checkpoint}'s vocabulary does not fit the train texts: {measured}",
    )


def _judged(ctx: StageContext, perplexity: float, unigram: float, start: float | None, steps: int) -> list[str]:
    """What the masked-LM steps did, in words: the val perplexity beside what token
    frequencies alone score (and, from a checkpoint, its own before the steps), and a
    warning where an encoder trained here learned little about context, or where the
    steps did not lower a checkpoint's perplexity. A checkpoint's encoder is trained
    whatever its perplexity: one that came without a masked-LM head gets a new one, and
    its first steps mostly train that head."""
    since = f", {start:.1f} before these {steps} steps" if start is not None else f" after {steps} steps"
    lines = [f"encoder: val perplexity {perplexity:.1f}{since}; token frequencies alone: {unigram:.1f}"]
    ratio = ctx.params.pretrain.unigram_ratio
    if start is None and perplexity > ratio * unigram:
        warning = (
            f"encoder learned little about context: its val perplexity is more than {ratio:.0%} of what token "
            "frequencies alone score, so it is not a trained encoder (more pretrain steps, or pretrain.init "
            "auto or a checkpoint that fits the texts)"
        )
        ctx.run.set_tags({"kiln.pretrain_warning": warning})
        lines.append(warning)
    elif start is not None and perplexity >= start:
        warning = f"the masked-LM steps did not lower the checkpoint's val perplexity ({start:.1f} to {perplexity:.1f})"
        ctx.run.set_tags({"kiln.pretrain_warning": warning})
        lines.append(warning)
    return lines


def _start(ctx: StageContext, texts: list[str], init: str | None):
    """(model, tokenizer, tokenizer id, whether its masked-LM head is new): a new encoder
    sized by params, or the checkpoint `init` names with its own tokenizer; either way its
    sequence length is chosen from the train texts unless set (a checkpoint's position
    table is cut to it)."""
    encoder, paths = ctx.params.encoder, ctx.params.paths
    if init is None:
        path = ctx.input(paths.tokenizer, "tokenizer")
        tokenizer = load_tokenizer(path, ctx.name)
        model, tokenizer_id, fresh_head = None, file_hash(path), True
    else:
        source = pretrained.resolve(init, ctx.root)
        try:
            # Domain-adaptive pretraining: the checkpoint brings its own tokenizer and sizes.
            tokenizer = AutoTokenizer.from_pretrained(source)
            model, loading = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True)
        except Exception as err:  # noqa: BLE001 - OSError offline, ValueError for a wrong model type, ...
            raise KilnError(f"pretrain: cannot load pretrain.init '{init}': {err}") from None
        tokenizer_id = init
        # An encoder saved without its masked-LM head (a sentence-embedding model) gets a new one.
        fresh_head = any(key.startswith("cls.") for key in loading["missing_keys"])
    length = encoder.max_length
    if length == "auto":
        counts = token_counts(tokenizer.backend_tokenizer, texts)
        length = choose_max_length(counts, encoder.length_percentile, encoder.length_cap)
    if model is None:
        model = BertForMaskedLM(bert_config(encoder, len(tokenizer), tokenizer.pad_token_id, max_length=length))
    keep_positions(model, length)
    return model, tokenizer, tokenizer_id, fresh_head


def _adapting(cfg):
    """The loop of domain-adaptive steps from a checkpoint: `adapt_steps` of them, with a
    val check at the end (and at loop.val_every_steps, if sooner)."""
    steps = cfg.adapt_steps
    every = min(cfg.loop.val_every_steps or steps, steps) or None
    return cfg.loop.model_copy(update={"max_steps": steps, "val_every_steps": every})


def run(ctx: StageContext) -> StageResult:
    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.pretrain
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    split = ctx.read_split("train", "val")
    texts = split["train"]["text"].tolist()
    if cfg.max_texts is not None:
        texts = seeded_sample(texts, cfg.max_texts, params.hardware.seed)
    init, chosen, said = cfg.init, {}, []
    if init == "auto":
        init, chosen, decision = _auto(ctx, texts)
        chosen["start/pretrained"] = float(init is not None)
        ctx.run.set_tags({"kiln.start": init or "scratch"})
        said = [decision]
    model, tokenizer, tokenizer_id, fresh_head = _start(ctx, texts, init)
    length = model.config.max_position_embeddings
    described = card(ctx, tokenizer_id, {}).model_copy(update={"start": init})
    loop = cfg.loop if init is None else _adapting(cfg)
    if loop.max_steps == 0:
        # A checkpoint used as it is: nothing to train, and the val loss of a head it came
        # without would say nothing about its encoder.
        metrics = {**chosen, "train/steps": 0, "model/params": count_parameters(model), "model/max_length": length}
        save_model(ctx, model, tokenizer, described.model_copy(update={"metrics": metrics}), paths.encoder)
        return StageResult(metrics=metrics, summary=said)
    data = MaskedLMData(
        texts,
        split["val"]["text"].tolist(),
        tokenizer,
        length,
        cfg.loop.batch_size,
        cfg.mask_prob,
        params.hardware.seed,
        cfg.val_windows,
        loading(params.hardware),
    )
    trained, judged = _train(ctx, model, data, len(texts), described, loop, init is not None, fresh_head)
    metrics = {**chosen, **trained, "model/params": count_parameters(model), "model/max_length": length}
    save_model(ctx, model, tokenizer, described.model_copy(update={"metrics": metrics}), paths.encoder)
    return StageResult(metrics=metrics, summary=said + judged)


def _train(ctx: StageContext, model, data: MaskedLMData, texts: int, described, loop, adapting: bool, fresh_head: bool):
    """The masked-LM steps on `model`, whose data came from `texts` train texts: (their
    metrics, what they did in words)."""
    train_windows = [row["input_ids"] for row in data.train_rows]
    if fresh_head:
        # A new head starts out predicting token frequencies (see unigram_bias); the
        # decoder's bias is the head's `bias` parameter, tied.
        model.cls.predictions.decoder.bias.data.copy_(unigram_bias(train_windows, model.config.vocab_size))
    before = {}
    if adapting:  # a checkpoint's own perplexity on these texts, before adapting it to them
        bf16 = precision(ctx.params.hardware) == "bf16-mixed"
        before = {"val/perplexity_start": masked_lm_perplexity(model, data.val_batches, bf16)}
    module = MaskedLM(model, ctx.params.pretrain.optim, described.model_dump())
    trainer = fit(ctx, module, data, "encoder", loop)
    scored = module.scored
    if scored.get("step") != trainer.global_step:  # the last val check was before the last step
        scored = trainer.validate(module, datamodule=data, verbose=False)[0]
    final = {"val/loss": scored["val/loss"], "val/perplexity": math.exp(min(scored["val/loss"], 50.0))}
    unigram = unigram_perplexity(train_windows, model.config.vocab_size, data.val_batches)
    judged = _judged(ctx, final["val/perplexity"], unigram, before.get("val/perplexity_start"), trainer.global_step)
    metrics = {
        **before,
        "val/loss": final["val/loss"],
        "val/perplexity": final["val/perplexity"],
        "val/unigram_perplexity": unigram,
        "train/windows": len(data.train_rows),
        "train/texts": texts,
        "train/steps": trainer.global_step,
    }
    return metrics, judged
