"""tokenize: a WordPiece tokenizer learned from the train split alone."""

from components.text.tokenizer import coverage, train_tokenizer
from pipelines.contract import StageContext, StageResult
from pipelines.io import atomic


def run(ctx: StageContext) -> StageResult:
    # Train split only: a tokenizer that saw val or test words would leak them.
    texts = ctx.read(f"{ctx.params.paths.split}/train.parquet")["text"].tolist()
    tokenizer = train_tokenizer(texts, ctx.params.tokenize)
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
