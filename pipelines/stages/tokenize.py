"""tokenize: a WordPiece tokenizer learned from the train split alone."""

from components.text.tokenizer import coverage, train_tokenizer
from pipelines.io import atomic, read_parquet
from pipelines.stages import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    paths = ctx.params.paths
    # Train split only: a tokenizer that saw val or test words would leak them.
    train = read_parquet(ctx.path(paths.split) / "train.parquet", "tokenize", "split")
    texts = train["text"].tolist()
    tokenizer = train_tokenizer(texts, ctx.params.tokenize)
    with atomic(ctx.path(paths.tokenizer)) as tmp:
        tokenizer.save(str(tmp))
    stats = coverage(tokenizer, texts)
    return StageResult(
        metrics={
            "tokenizer/vocab_size": tokenizer.get_vocab_size(),
            "train/unk_rate": stats["unk_rate"],
            "train/tokens_per_text": stats["tokens_per_text"],
        }
    )
