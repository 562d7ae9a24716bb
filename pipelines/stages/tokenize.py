"""tokenize: a WordPiece tokenizer learned from the train split alone (at most
`tokenize.max_texts` of its texts)."""

from components.stats import seeded_sample
from components.text.tokenizer import coverage, train_tokenizer
from pipelines.core.io import atomic
from pipelines.stagekit.contract import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    # Train split only: a tokenizer that saw val or test words would leak them.
    texts = ctx.read(f"{ctx.params.paths.split}/train.parquet")["text"].tolist()
    cfg = ctx.params.tokenize
    if cfg.max_texts is not None:
        texts = seeded_sample(texts, cfg.max_texts, cfg.seed)
    tokenizer = train_tokenizer(texts, cfg)
    with atomic(ctx.path(ctx.params.paths.tokenizer)) as tmp:
        tokenizer.save(str(tmp))
    stats = coverage(tokenizer, texts)
    return StageResult(
        metrics={
            "tokenizer/vocab_size": tokenizer.get_vocab_size(),
            "tokenizer/unk_rate": stats["unk_rate"],
            "tokenizer/tokens_per_text": stats["tokens_per_text"],
            "tokenizer/tokens_p95": stats["length_p95"],
        }
    )
