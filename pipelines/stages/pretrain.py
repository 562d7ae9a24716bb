"""pretrain: masked-LM pretraining of a BERT encoder on the train texts."""

import lightning as L
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM

from components.deploy.stats import seeded_sample
from components.errors import KilnError
from components.text.data import MaskedLMData, file_hash, load_tokenizer
from components.text.model import bert_config, count_parameters, keep_positions, unigram_bias
from components.text.modules import MaskedLM
from components.text.tokenizer import choose_max_length, token_counts
from pipelines import pretrained
from pipelines.contract import StageContext, StageResult
from pipelines.training import card, fit, save_model


def _start(ctx: StageContext, texts: list[str]):
    """(model, tokenizer, tokenizer id, whether its masked-LM head is new): a new encoder
    sized by params, or the checkpoint `pretrain.init` names with its own tokenizer;
    either way its sequence length is chosen from the train texts unless set (a
    checkpoint's position table is cut to it)."""
    cfg, encoder, paths = ctx.params.pretrain, ctx.params.encoder, ctx.params.paths
    if cfg.init is None:
        path = ctx.input(paths.tokenizer, "tokenizer")
        tokenizer = load_tokenizer(path, ctx.name)
        model, tokenizer_id, fresh_head = None, file_hash(path), True
    else:
        source = pretrained.resolve(cfg.init, ctx.root)
        try:
            # Domain-adaptive pretraining: the checkpoint brings its own tokenizer and sizes.
            tokenizer = AutoTokenizer.from_pretrained(source)
            model, loading = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True)
        except Exception as err:  # noqa: BLE001 - OSError offline, ValueError for a wrong model type, ...
            raise KilnError(f"pretrain: cannot load pretrain.init '{cfg.init}': {err}") from None
        tokenizer_id = cfg.init
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


def run(ctx: StageContext) -> StageResult:
    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.pretrain
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    split = ctx.read_split("train", "val")
    texts = split["train"]["text"].tolist()
    if cfg.max_texts is not None:
        texts = seeded_sample(texts, cfg.max_texts, params.hardware.seed)
    model, tokenizer, tokenizer_id, fresh_head = _start(ctx, texts)
    length = model.config.max_position_embeddings
    described = card(ctx, tokenizer_id, {})
    if cfg.loop.max_steps == 0:
        # A checkpoint used as it is: nothing to train, and the val loss of a head it came
        # without would say nothing about its encoder.
        metrics = {"train/steps": 0, "model/params": count_parameters(model), "model/max_length": length}
        save_model(ctx, model, tokenizer, described.model_copy(update={"metrics": metrics}), paths.encoder)
        return StageResult(metrics=metrics)
    data = MaskedLMData(
        texts,
        split["val"]["text"].tolist(),
        tokenizer,
        length,
        cfg.loop.batch_size,
        cfg.mask_prob,
        params.hardware.seed,
        cfg.val_windows,
    )
    if fresh_head:
        # A new head starts out predicting token frequencies (see unigram_bias); the
        # decoder's bias is the head's `bias` parameter, tied.
        bias = unigram_bias([row["input_ids"] for row in data.train_rows], model.config.vocab_size)
        model.cls.predictions.decoder.bias.data.copy_(bias)
    module = MaskedLM(model, cfg.optim, described.model_dump())
    trainer = fit(ctx, module, data, "encoder", cfg.loop)
    final = trainer.validate(module, datamodule=data, verbose=False)[0]
    metrics = {
        "val/loss": final["val/loss"],
        "val/perplexity": final["val/perplexity"],
        "train/windows": len(data.train_rows),
        "train/texts": len(texts),
        "train/steps": trainer.global_step,
        "model/params": count_parameters(model),
        "model/max_length": length,
    }
    save_model(ctx, model, tokenizer, described.model_copy(update={"metrics": metrics}), paths.encoder)
    return StageResult(metrics=metrics)
