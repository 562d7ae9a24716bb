"""A BERT-style WordPiece tokenizer trained with Hugging Face `tokenizers`, with a
normalisation that does not assume English, and the sequence length the data needs.

BERT's own normaliser strips accents whenever it lowercases, by decomposing (NFD) and
dropping every combining mark: that turns the kana ヤバイ into ヤハイ and どうもです into
とうもてす (the voicing marks are combining marks once decomposed), and Russian ёлка into
елка. Here text is NFKC-normalised first (full-width ＡＢＣ１２３ becomes abc123, half-width
ｶﾞ becomes ガ, which leaves kana and ё whole), then cleaned, spaced around Han characters
and lowercased as BERT does, and accents are stripped only when asked, and then only from
Latin, Greek and Cyrillic letters. NFKC also rewrites a few characters into others that look
the same (Thai ำ into ํา, Korean compatibility jamo ㅋ into ᄏ); training and serving
normalise alike, so a classifier sees the same tokens either way.
"""

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import regex
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from components.errors import KilnError

# The names BERT models expect; [MASK] is also the augment stage's mask token.
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Bounds of a chosen sequence length. Multiples of 8 suit GPU matrix units (fp16 tensor
# cores work in tiles of 8); below 16 tokens a shorter limit saves no measurable time and
# leaves a served text longer than the training texts next to nothing.
LENGTH_STEP = 8
LENGTH_FLOOR = 16


class TokenizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(ge=len(SPECIAL_TOKENS) + 100, le=250_000)
    min_frequency: int = Field(ge=1)
    lowercase: bool
    strip_accents: bool = Field(
        description="drop accents from Latin, Greek and Cyrillic letters (café -> cafe, ё -> е); "
        "off in the shipped params.yaml because in many languages an accent changes the word",
    )
    max_texts: int | None = Field(
        ge=1,
        description="train texts the vocabulary is learned from and its statistics read: beyond, a sample drawn "
        "with `seed` (8,000 word pieces are settled long before; at 100 times BBC's rows all of them took 30 "
        "times as long); None: all of them",
    )
    seed: int


def normalizer(cfg: TokenizeConfig) -> normalizers.Normalizer:
    """NFKC, then BERT's cleaning, Han spacing and lowercasing, then (if asked) accent
    stripping. Every step maps characters locally and never moves or removes a space (NFKC
    may add one, for a no-break or ideographic space), which TextEncoder._head
    (components/runtime/) relies on to tokenize a text's head alone."""
    steps = [
        normalizers.NFKC(),
        normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=cfg.lowercase
        ),
    ]
    if cfg.strip_accents:
        # Marks only after these scripts' letters: elsewhere a combining mark is part of
        # the letter (kana voicing, Thai and Devanagari vowel signs, the virama).
        steps += [
            normalizers.NFD(),
            normalizers.Replace(Regex(r"(?<=[\p{Latin}\p{Greek}\p{Cyrillic}])\p{Mn}+"), ""),
            normalizers.NFC(),
        ]
    return normalizers.Sequence(steps)


def train_tokenizer(texts: Iterable[str], cfg: TokenizeConfig) -> Tokenizer:
    """A WordPiece tokenizer with `normalizer(cfg)`, BERT's pre-tokenisation and the
    [CLS] ... [SEP] template, learned from `texts` alone."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizer(cfg)
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


# Texts encoded at a time when only counts are kept: an Encoding holds ids, tokens, offsets
# and masks, and all of 178,000 long texts' at once took 11 GB.
ENCODE_CHUNK = 2048


def _encoded(tokenizer: Tokenizer, texts: Sequence[str], add_special_tokens: bool = True) -> Iterator:
    for start in range(0, len(texts), ENCODE_CHUNK):
        yield from tokenizer.encode_batch(
            list(texts[start : start + ENCODE_CHUNK]), add_special_tokens=add_special_tokens
        )


def token_counts(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    """Tokens of each whole text, [CLS] and [SEP] included: the sequence length it needs."""
    return [len(e.ids) for e in _encoded(tokenizer, texts)]


def choose_max_length(counts: Sequence[int], percentile: float = 95.0, cap: int = 512) -> int:
    """The shortest sequence length that holds `percentile` % of texts whole (nearest
    rank over `counts`, which include [CLS] and [SEP]), rounded up to a multiple of 8,
    at least 16 and at most `cap` (BERT's usual 512 positions: attention costs grow with
    the square of the length, and the encoder's position table must hold it)."""
    if not counts:
        raise KilnError("max_length: no training texts to measure token lengths on")
    if not 0 < percentile <= 100:
        raise KilnError(f"max_length: percentile must be in (0, 100], got {percentile}")
    if cap < LENGTH_FLOOR:
        raise KilnError(f"max_length: cap must be at least {LENGTH_FLOOR}, got {cap}")
    rounded = math.ceil(_nearest_rank(counts, percentile) / LENGTH_STEP) * LENGTH_STEP
    return min(cap, max(LENGTH_FLOOR, rounded))


def coverage(tokenizer: Tokenizer, texts: list[str], max_length: int | None = None) -> dict[str, float]:
    """Share of [UNK] tokens and mean tokens per text (special tokens excluded), the 50th
    and 95th percentile and the largest sequence length ([CLS] and [SEP] included), and,
    given `max_length`, the share of texts longer than it (cut in training and serving)."""
    unk = tokenizer.token_to_id("[UNK]")
    special = tokenizer.post_processor.num_special_tokens_to_add(False) if tokenizer.post_processor else 0
    total = unknown = 0
    lengths = []
    for encoding in _encoded(tokenizer, texts, add_special_tokens=False):
        total += len(encoding.ids)
        unknown += encoding.ids.count(unk)
        lengths.append(len(encoding.ids) + special)
    stats = {
        "unk_rate": unknown / total if total else 0.0,
        "tokens_per_text": total / len(texts) if texts else 0.0,
        "length_p50": float(_nearest_rank(lengths, 50)),
        "length_p95": float(_nearest_rank(lengths, 95)),
        "length_max": float(max(lengths, default=0)),
    }
    if max_length is not None:
        stats["truncated_rate"] = sum(n > max_length for n in lengths) / len(texts) if texts else 0.0
    return stats


class VocabularyFit(BaseModel):
    """How well a pretrained tokenizer's vocabulary covers some texts."""

    words: int  # runs of letters and digits (a Chinese sentence without spaces is one)
    unknown_share: float  # of their word pieces, the share that is [UNK]
    pieces_per_word: float


# A word here is a run of letters, marks and digits, whatever the script: a WordPiece
# vocabulary made for the texts splits few of them (English news under an English
# vocabulary: about 1.07 pieces), one made for other texts splits them into many pieces or
# [UNK] (Chinese without spaces under the same vocabulary: one piece per character, about
# 18 a run), which is what leaves a pretrained encoder little to build on.
_WORD = regex.compile(r"[\p{L}\p{M}\p{N}]+")


def vocabulary_fit(tokenizer: Tokenizer, texts: Iterable[str]) -> VocabularyFit:
    """Pieces per word and the share of [UNK] among them, over every word of `texts`
    (each distinct word tokenized once), with the tokenizer's own normalisation."""
    words = Counter(word for text in texts for word in _WORD.findall(text))
    tokenizer = _unpadded(tokenizer)
    unknown = tokenizer.token_to_id("[UNK]")
    distinct = list(words)
    pieces = missing = 0
    for word, encoding in zip(distinct, _encoded(tokenizer, distinct, add_special_tokens=False), strict=True):
        pieces += len(encoding.ids) * words[word]
        missing += encoding.ids.count(unknown) * words[word]
    total = sum(words.values())
    return VocabularyFit(
        words=total,
        unknown_share=missing / pieces if pieces else 0.0,
        pieces_per_word=pieces / total if total else 0.0,
    )


def _unpadded(tokenizer: Tokenizer) -> Tokenizer:
    """A copy without the padding and truncation a checkpoint's tokenizer.json may set
    (MiniLM's pads every batch to 128), which would count pads as tokens."""
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_padding()
    plain.no_truncation()
    return plain


def used_tokens(tokenizer: Tokenizer, texts: Sequence[str]) -> list[int]:
    """The ids, in order, of the special tokens and of every token `texts` are read as."""
    used = set(tokenizer.get_added_tokens_decoder())
    for encoding in _encoded(_unpadded(tokenizer), texts, add_special_tokens=False):
        used.update(encoding.ids)
    return sorted(used)


def cut_vocabulary(tokenizer: Tokenizer, keep: Sequence[int]) -> Tokenizer:
    """`tokenizer` with only the tokens `keep` names, token keep[i] becoming id i (special
    tokens included). WordPiece takes the longest piece its vocabulary has, so texts whose
    tokens are all kept (those `used_tokens` measured) are read as before, in the new ids;
    a piece of another text that was cut splits further, or becomes [UNK]."""
    data = json.loads(tokenizer.to_str())
    renumbered = {old: new for new, old in enumerate(keep)}
    names = {index: token for token, index in data["model"]["vocab"].items()}
    data["model"]["vocab"] = {names[old]: new for old, new in renumbered.items()}
    data["added_tokens"] = [
        {**token, "id": renumbered[token["id"]]} for token in data["added_tokens"] if token["id"] in renumbered
    ]
    for special in (data.get("post_processor") or {}).get("special_tokens", {}).values():
        special["ids"] = [renumbered[index] for index in special["ids"]]
    if data.get("padding"):
        data["padding"]["pad_id"] = renumbered[data["padding"]["pad_id"]]
    return Tokenizer.from_str(json.dumps(data))


def _nearest_rank(values: Sequence[int], percentile: float) -> int:
    """The smallest value at or above which `percentile` % of `values` lie."""
    ordered = sorted(values)
    return ordered[math.ceil(percentile / 100 * len(ordered)) - 1] if ordered else 0
