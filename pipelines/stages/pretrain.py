"""pretrain: masked-LM pretraining of a BERT encoder on the train texts."""

import lightning as L
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM

from components.errors import KilnError
from components.text.data import MaskedLMData, file_hash, load_tokenizer
from components.text.model import bert_config, count_parameters, unigram_bias
from components.text.modules import MaskedLM
from components.text.training import build_trainer, finish
from pipelines.io import read_parquet
from pipelines.stages import StageContext, StageResult
from pipelines.training import checkpoints, mlflow_logger, save_model


def _start(ctx: StageContext):
    cfg, paths = ctx.params.pretrain, ctx.params.paths
    if cfg.init is None:
        tokenizer = load_tokenizer(ctx.path(paths.tokenizer), "pretrain")
        config = bert_config(ctx.params.encoder, len(tokenizer), tokenizer.pad_token_id)
        return BertForMaskedLM(config), tokenizer, file_hash(ctx.path(paths.tokenizer))
    try:
        # Domain-adaptive pretraining: the checkpoint brings its own tokenizer and sizes.
        tokenizer = AutoTokenizer.from_pretrained(cfg.init)
        return AutoModelForMaskedLM.from_pretrained(cfg.init), tokenizer, cfg.init
    except Exception as err:  # OSError offline, ValueError for a wrong model type, ...
        raise KilnError(f"pretrain: cannot load pretrain.init '{cfg.init}': {err}") from None


def run(ctx: StageContext) -> StageResult:
    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.pretrain
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    train = read_parquet(ctx.path(paths.split) / "train.parquet", "pretrain", "split")
    val = read_parquet(ctx.path(paths.split) / "val.parquet", "pretrain", "split")
    model, tokenizer, tokenizer_id = _start(ctx)
    length = min(params.encoder.max_length, model.config.max_position_embeddings)
    data = MaskedLMData(train["text"].tolist(), val["text"].tolist(), tokenizer, length,
                        cfg.loop.batch_size, cfg.mask_prob, params.hardware.seed)
    if cfg.init is None:
        # From scratch, the head starts out predicting token frequencies (see unigram_bias);
        # the decoder's bias is the head's `bias` parameter, tied.
        bias = unigram_bias([row["input_ids"] for row in data.train_rows], model.config.vocab_size)
        model.cls.predictions.decoder.bias.data.copy_(bias)
    describe = {
        "stage": "pretrain",
        "encoder": params.encoder.model_dump(),
        "pretrain": cfg.model_dump(),
        "tokenizer": tokenizer_id,
        "data": ctx.deps,
    }
    module = MaskedLM(model, cfg.optim, describe)
    folder, resume = checkpoints(ctx, "hardware", "encoder", "pretrain")
    trainer = build_trainer("pretrain", params.hardware, cfg.loop, folder, mlflow_logger(ctx))
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    final = trainer.validate(module, datamodule=data, verbose=False)[0]
    metrics = {
        "val/loss": final["val/loss"],
        "val/perplexity": final["val/perplexity"],
        "train/windows": len(data.train_rows),
        "model/params": count_parameters(model),
        "train/steps": trainer.global_step,
    }
    if trainer.is_global_zero:
        save_model(model, tokenizer, {**describe, "metrics": metrics}, ctx.path(paths.encoder))
        finish(folder)
    return StageResult(metrics=metrics)
