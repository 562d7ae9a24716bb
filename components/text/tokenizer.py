"""A BERT-style WordPiece tokenizer trained with Hugging Face `tokenizers`."""

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# The names BERT models expect; [MASK] is also the augment stage's mask token.
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class TokenizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(8000, ge=len(SPECIAL_TOKENS) + 100, le=250_000)
    min_frequency: int = Field(2, ge=1)
    lowercase: bool = True


def train_tokenizer(texts: Iterable[str], cfg: TokenizeConfig) -> Tokenizer:
    """A WordPiece tokenizer with BERT's normalisation, pre-tokenisation and
    [CLS] ... [SEP] template, learned from `texts` alone."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=cfg.lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    # The trainer numbers tokens of equal frequency in hash-map order, which changes from
    # run to run; renumbering (special tokens first, the rest sorted) makes a rerun on the
    # same texts write the same file, so DVC sees no change. (Merges tied on count can
    # still go either way: common on toy data, not seen on the BBC corpus.)
    learned = sorted(set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS))
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + learned)}
    tokenizer.model = models.WordPiece(vocab, unk_token="[UNK]")
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def coverage(tokenizer: Tokenizer, texts: list[str]) -> dict[str, float]:
    """Share of [UNK] tokens and mean tokens per text (special tokens excluded)."""
    unk = tokenizer.token_to_id("[UNK]")
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    total = sum(len(e.ids) for e in encodings)
    unknown = sum(e.ids.count(unk) for e in encodings)
    return {
        "unk_rate": unknown / total if total else 0.0,
        "tokens_per_text": total / len(texts) if texts else 0.0,
    }
