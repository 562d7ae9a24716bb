import pytest
from tokenizers import Tokenizer

from components.data.bbc import read_bbc
from components.errors import KilnError
from components.text.tokenizer import (
    SPECIAL_TOKENS,
    choose_max_length,
    coverage,
    cut_vocabulary,
    normalizer,
    token_counts,
    train_tokenizer,
    used_tokens,
    vocabulary_fit,
)
from tests.support.data import chinese
from tests.support.params import shipped

# Kana whose voicing marks BERT's accent stripping removed (ヤバイ -> ヤハイ), Russian ё,
# Latin accents, Han, Thai and Devanagari vowel signs, full- and half-width forms.
MIXED = [
    "ヤバイ、どうもです。",
    "Ёлка и ещё ёж",
    "Café crème brûlée",
    "这款手机很好用，电池耐用",
    "สวัสดีครับ",
    "हिन्दी भाषा",
    "ＡＢＣ１２３ ｶﾞｷﾞ",
]


def test_tokenizer_is_bert_style_and_reproducible():
    texts = read_bbc()["text"].tolist()[::4]
    a = train_tokenizer(texts, shipped("tokenize", vocab_size=2000))
    b = train_tokenizer(list(texts), shipped("tokenize", vocab_size=2000))
    assert a.to_str() == b.to_str()
    assert [a.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    tokens = a.encode("Story about tech").tokens
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert coverage(a, texts)["unk_rate"] == 0.0


def test_normalisation_keeps_kana_cyrillic_and_accents_by_default():
    norm = normalizer(shipped("tokenize"))
    assert norm.normalize_str("ヤバイ") == "ヤバイ"
    assert norm.normalize_str("どうもです") == "どうもです"
    assert norm.normalize_str("Ёлка") == "ёлка"
    assert norm.normalize_str("Café") == "café"
    # NFKC: full-width letters and digits become ASCII, half-width kana full-width kana.
    assert norm.normalize_str("ＡＢＣ１２３ ｶﾞ") == "abc123 ガ"
    # BERT's handling of Han kept: each ideograph is a word of its own.
    assert norm.normalize_str("中文") == " 中  文 "
    assert normalizer(shipped("tokenize", lowercase=False)).normalize_str("Café Ёлка") == "Café Ёлка"


def test_accents_are_stripped_on_request_from_latin_greek_and_cyrillic_only():
    norm = normalizer(shipped("tokenize", strip_accents=True))
    assert norm.normalize_str("Café Ñandú") == "cafe nandu"
    assert norm.normalize_str("Ёлка Άθήνα") == "елка αθηνα"
    # Combining marks that are part of the letter stay: kana voicing, Thai and Devanagari
    # vowel signs, the virama.
    for text in ("ヤバイ", "どうもです", "สวัสดีครับ", "हिन्दी"):
        assert norm.normalize_str(text) == text


@pytest.mark.parametrize("strip_accents", [False, True])
def test_saved_tokenizer_loads_both_ways_and_decodes_what_it_read(tmp_path, strip_accents):
    # As components/text/data.py loads it; importing that module (Lightning) takes ~15 s.
    from transformers import PreTrainedTokenizerFast

    cfg = shipped("tokenize", vocab_size=300, min_frequency=1, strip_accents=strip_accents)
    path = tmp_path / "tokenizer.json"
    train_tokenizer(MIXED * 3, cfg).save(str(path))
    plain = Tokenizer.from_file(str(path))
    fast = PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    read = {
        "ヤバイ": "ヤバイ",
        "どうもです": "どうもです",
        "Ёлка": "елка" if strip_accents else "ёлка",
        "Café": "cafe" if strip_accents else "café",
    }
    for text, expected in read.items():
        encoding = plain.encode(text)
        assert "[UNK]" not in encoding.tokens
        assert plain.decode(encoding.ids) == expected
        assert fast(text)["input_ids"] == encoding.ids


@pytest.mark.parametrize("strip_accents", [False, True])
def test_a_head_cut_at_a_space_tokenizes_as_the_start_of_the_whole(strip_accents):
    # TextEncoder._head (components/runtime/) tokenizes a text's head alone: that
    # is right only while normalisation is local and never moves or removes a space.
    tokenizer = train_tokenizer(
        MIXED * 3, shipped("tokenize", vocab_size=300, min_frequency=1, strip_accents=strip_accents)
    )
    text = " ".join(MIXED) + " ｶ ﾞ e\u0301 ÉCOLE"
    whole = tokenizer.encode(text, add_special_tokens=False).tokens
    cuts = [i for i, c in enumerate(text) if c == " "]
    assert len(cuts) > 10
    for cut in cuts:
        head = tokenizer.encode(text[:cut], add_special_tokens=False).tokens
        assert whole[: len(head)] == head


def test_choose_max_length_takes_the_percentile_rounded_up_to_eight():
    counts = list(range(1, 101))
    assert choose_max_length(counts) == 96  # the 95th of 100 is 95
    assert choose_max_length(counts[::-1]) == 96
    assert choose_max_length(counts, percentile=50) == 56
    assert choose_max_length(counts, percentile=100) == 104
    assert choose_max_length([16] * 19 + [1000]) == 16
    assert choose_max_length([17]) == 24


def test_choose_max_length_floor_and_cap():
    assert choose_max_length([3] * 50) == 16
    assert choose_max_length([2000] * 50) == 512
    assert choose_max_length(list(range(1, 101)), cap=64) == 64
    for bad in (
        {"counts": []},
        {"counts": [10], "percentile": 0},
        {"counts": [10], "percentile": 101},
        {"counts": [10], "cap": 8},
    ):
        with pytest.raises(KilnError, match="max_length"):
            choose_max_length(**bad)


def test_token_counts_and_coverage_measure_sequence_lengths():
    # One token per Han character, so each text's length is known: k characters, k + 2.
    texts = ["中国人民大学图书馆文字语言好坏上下左右前"[:k] for k in range(1, 21)]
    tokenizer = train_tokenizer(texts, shipped("tokenize", vocab_size=200, min_frequency=1))
    counts = token_counts(tokenizer, texts)
    assert counts == [k + 2 for k in range(1, 21)]
    assert choose_max_length(counts) == 24
    stats = coverage(tokenizer, texts, max_length=16)
    assert stats == {
        "unk_rate": 0.0,
        "tokens_per_text": 10.5,
        "length_p50": 12.0,
        "length_p95": 21.0,
        "length_max": 22.0,
        "truncated_rate": 0.3,
    }
    assert set(coverage(tokenizer, texts)) == {"unk_rate", "tokens_per_text", "length_p50", "length_p95", "length_max"}


def test_vocabulary_fit_counts_word_pieces_and_unknowns_per_word():
    english = ["the bank rose", "the match was won", "bank shares rose again"]
    tokenizer = train_tokenizer(english, shipped("tokenize", vocab_size=200, min_frequency=1))
    tokenizer.enable_padding(length=64)  # as a checkpoint's tokenizer.json may ask: pads are not pieces
    fit = vocabulary_fit(tokenizer, english)
    assert (fit.words, fit.pieces_per_word, fit.unknown_share) == (11, 1.0, 0.0)
    # A sentence without spaces is one word, of a piece per character; characters the
    # vocabulary never saw are [UNK].
    fit = vocabulary_fit(tokenizer, ["银行股价上涨。", "the bank"])
    assert (fit.words, fit.pieces_per_word) == (3, 8 / 3) and fit.unknown_share == 6 / 8


def test_minilm_fits_english_news_and_not_chinese(tmp_path):
    from pipelines.stagekit import pretrained

    minilm = Tokenizer.from_file(f"{pretrained.resolve('all-MiniLM-L6-v2', tmp_path)}/tokenizer.json")
    news = vocabulary_fit(minilm, read_bbc()["text"].head(200))
    assert news.pieces_per_word < 1.2 and news.unknown_share < 0.001
    reviews = vocabulary_fit(minilm, chinese(40)["review"])
    assert reviews.pieces_per_word > 10 and reviews.unknown_share > 0.1


def test_a_cut_vocabulary_reads_the_texts_it_was_cut_for_as_before(tmp_path):
    from pipelines.stagekit import pretrained

    minilm = Tokenizer.from_file(f"{pretrained.resolve('all-MiniLM-L6-v2', tmp_path)}/tokenizer.json")
    texts = read_bbc()["text"]
    train, other = texts.iloc[::20].tolist(), texts.iloc[1::20].tolist()
    keep = used_tokens(minilm, train)
    assert keep[:5] == [0, 100, 101, 102, 103]  # [PAD], [UNK], [CLS], [SEP], [MASK]
    assert 3_000 < len(keep) < 30_522 / 2
    cut = cut_vocabulary(minilm, keep)
    assert cut.get_vocab_size() == len(keep)
    # MiniLM's tokenizer.json pads every batch to 128: with [PAD] renumbered.
    assert cut.padding["pad_id"] == 0 and cut.token_to_id("[CLS]") == 2 and cut.token_to_id("[MASK]") == 4
    encoded, before = cut.encode_batch(train), minilm.encode_batch(train)
    assert all([keep[i] for i in new.ids] == old.ids for new, old in zip(encoded, before, strict=True))
    # Another text loses only pieces it alone used, read as smaller pieces or [UNK].
    unknown = cut.token_to_id("[UNK]")
    for new, old in zip(cut.encode_batch(other), minilm.encode_batch(other), strict=True):
        assert new.ids[0] == 2 and new.ids.count(unknown) >= old.ids.count(100)
