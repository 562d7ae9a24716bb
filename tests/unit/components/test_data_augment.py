import random
import re
from collections import Counter

import pandas as pd
import pytest
from pydantic import ValidationError

from components.data.augment import Augmenter, Vocabulary, augment, has_content, join, units
from tests.support.data import tiny_frame
from tests.support.params import shipped

# Hand-written reviews, as a Chinese e-commerce or travel site would show them.
CHINESE = [
    ("这款手机的电池很耐用，拍照效果也不错。", "pos"),
    ("酒店位置很好，离地铁站只有五分钟，房间干净整洁。", "pos"),
    ("物超所值，已经推荐给朋友了！", "pos"),
    ("快递三天才到，包装还破了，客服态度很差。", "neg"),
    ("菜的味道太咸了，等了四十分钟才上菜，不会再来。", "neg"),
    ("耳机用了一周就坏了，音质也一般。", "neg"),
]


def chinese_reviews(n: int, seed: int = 0) -> pd.DataFrame:
    """`n` short reviews, alternately negative and positive, put together from parts."""
    rng = random.Random(seed)
    things = ["手机", "耳机", "酒店", "餐厅", "快递", "衣服", "电脑", "外卖"]
    aspects = {
        "pos": ["质量很好", "服务热情", "物流很快", "性价比高", "味道不错", "做工精细", "屏幕清晰", "房间干净"],
        "neg": ["质量太差", "服务冷淡", "物流太慢", "价格偏贵", "味道一般", "做工粗糙", "屏幕发黄", "房间很脏"],
    }
    endings = {"pos": ["下次还会再来。", "推荐购买！", "非常满意。"], "neg": ["不会再买了。", "非常失望。", "不推荐。"]}
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        said = "，".join(rng.sample(aspects[label], rng.randint(1, 3)))
        rows.append((f"zh{i}", f"这个{rng.choice(things)}{said}，{rng.choice(endings[label])}", label))
    return pd.DataFrame(rows, columns=["id", "text", "label"]).assign(source="file")


def frame(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(f"r{i}", t, y, "file") for i, (t, y) in enumerate(pairs)], columns=["id", "text", "label", "source"]
    )


def with_originals(out: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    return out.merge(train[["id", "text"]].rename(columns={"id": "origin_id", "text": "original"}), on="origin_id")


@pytest.fixture
def train() -> pd.DataFrame:
    return tiny_frame(4).assign(id=lambda f: [f"t{i}" for i in range(len(f))], source="file")


def test_seeded_and_order_independent(train):
    cfg = shipped("augment", factor=2)
    a = augment(train, cfg).frame
    b = augment(train.iloc[::-1], cfg).frame.sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a.sort_values("id").reset_index(drop=True), b)
    assert len(a) == 2 * len(train)
    assert set(a["origin_id"]) == set(train["id"])
    assert list(a.columns) == ["id", "text", "label", "source", "origin_id", "op"]


def test_beyond_max_rows_the_same_rows_get_copies_whatever_their_order(train):
    cfg = shipped("augment", max_rows=7)
    first = augment(train, cfg).frame
    again = augment(train.iloc[::-1], cfg).frame
    assert len(first) == 7 and set(first["origin_id"]) == set(again["origin_id"])
    assert set(augment(train, shipped("augment", max_rows=7, seed=14)).frame["origin_id"]) != set(first["origin_id"])


def test_a_rows_copies_do_not_depend_on_the_other_rows():
    train = chinese_reviews(40)
    cfg = shipped("augment", factor=2, ops=["delete", "swap", "mask"])
    whole = augment(train, cfg).frame.set_index("id")
    part = augment(train.iloc[:10], cfg).frame.set_index("id")
    pd.testing.assert_frame_equal(whole.loc[part.index], part)


def test_inserted_words_come_from_texts_of_the_same_label(train):
    vocabulary = {label: {w for t in group["text"] for w in t.split()} for label, group in train.groupby("label")}
    out = augment(train, shipped("augment", factor=3, ops=["insert"], alpha=0.5)).frame
    for text, label in zip(out["text"], out["label"]):
        assert set(text.split()) <= vocabulary[label]
    # tiny_frame gives each label words of its own ("techword1"), and insertion draws them.
    assert any(w.startswith("tech") for t in out.loc[out["label"] == "tech", "text"] for w in t.split())


def test_inserted_characters_come_from_texts_of_the_same_label():
    # Each label written with its own characters: any character of the other one in a
    # copy could only have come from insertion across labels.
    alphabet = {"pos": "好棒赞美妙喜欢满意推荐快", "neg": "差烂坏慢贵糟退失望脏破"}
    rng = random.Random(0)
    train = frame([("".join(rng.choices(alphabet[y], k=rng.randint(4, 12))), y) for y in ("pos", "neg") * 30])
    out = augment(train, shipped("augment", factor=4, ops=["insert"], alpha=0.5)).frame
    assert len(out) == 4 * len(train)
    for text, label, original in with_originals(out, train)[["text", "label", "original"]].itertuples(index=False):
        assert set(text) <= set(alphabet[label]) and len(text) > len(original)


def test_each_op():
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    aug = Augmenter(shipped("augment", alpha=0.3), Vocabulary(Counter(["extra"])))
    rng = random.Random(0)
    assert len(aug.delete(words, rng)) < len(words)
    swapped = aug.swap(words, rng)
    assert sorted(swapped) == sorted(words) and swapped != words
    assert aug.insert(words, rng).count("extra") == 3
    masked = aug.mask(words, random.Random(1))
    assert "[MASK]" in masked and len(masked) == len(words)


def test_a_vocabulary_draws_what_choice_draws_from_its_sorted_units_with_repeats():
    units_seen = ["the", "market", "the", "rose", "shares", "the", "market", "市场"]
    vocabulary = Vocabulary(Counter(units_seen))
    assert vocabulary.units == sorted(set(units_seen))
    for seed in range(300):
        assert vocabulary.draw(random.Random(seed)) == random.Random(seed).choice(sorted(units_seen))


def test_delete_and_mask_change_at_least_one_unit_and_spare_one_with_content():
    aug = Augmenter(shipped("augment", alpha=0.95), Vocabulary(Counter("x")))
    # 200 seeds: at alpha 0.95 nearly every draw picks every unit, so the rule that
    # spares one is what is tested; "!" is punctuation and does not count as sparing.
    for seed in range(200):
        parts = ["很", "好", "！"]
        kept = aug.delete(parts, random.Random(seed))
        assert len(kept) < len(parts) and any(has_content(u) for u in kept)
        masked = aug.mask(parts, random.Random(seed))
        assert "[MASK]" in masked and any(has_content(u) and u != "[MASK]" for u in masked)
    low = Augmenter(shipped("augment", alpha=0.01), Vocabulary(Counter("x")))
    assert all(len(low.delete(list("质量很好"), random.Random(s))) == 3 for s in range(50))


def test_units_follow_the_script():
    text, _ = CHINESE[0]
    assert units(text) == list(text) and join(units(text)) == text
    assert units("iPhone很好用，真的!!") == ["iPhone", "很", "好", "用", "，", "真", "的", "!!"]
    assert join(units("iPhone很好用，真的!!")) == "iPhone 很好用，真的 !!"
    assert join(units("このラーメンは美味しいです。")) == "このラーメンは美味しいです。"
    assert units("Привет, ёлка!") == ["Привет,", "ёлка!"]
    # Combining marks stay with their letter: an accent written as a separate mark, Thai
    # vowel signs above or below their consonant.
    assert units("cafe\u0301 noir.") == ["cafe\u0301", "noir."]
    assert units("ดีมาก") == ["ดี", "ม", "า", "ก"]
    # A space between Thai (or kana) words is their only boundary, so it survives.
    assert join(units("สวัสดีครับ ผมชื่อ")) == "สวัสดีครับ ผมชื่อ"
    assert join(units("ヤバイ どうもです")[::-1]) == "すでもう どイバヤ"


def test_english_units_are_whitespace_words(train):
    for text in train["text"]:
        assert units(text) == text.split() and join(units(text)) == " ".join(text.split())


def test_chinese_reviews_are_edited_a_few_characters_at_a_time():
    train = pd.concat([chinese_reviews(194), frame(CHINESE)], ignore_index=True)
    result = augment(train, shipped("augment", factor=2))
    out = with_originals(result.frame, train)
    assert result.skipped == 0 and len(out) == 2 * len(train)
    assert set(out["op"]) == {"delete", "swap", "insert", "mask"}
    unchanged = (out["text"] == out["original"]).mean()
    assert unchanged < 0.05
    for text, original in out[["text", "original"]].itertuples(index=False):
        real = [u for u in units(text) if u != "[MASK]" and has_content(u)]
        # Something of the review is left, and not just a character or two of it.
        assert len(real) >= len([u for u in units(original) if has_content(u)]) // 2
        # Chinese comes back unspaced, apart from the spaces around a mask token.
        assert " " not in re.sub(r" ?\[MASK\] ?", "", text)


def test_short_texts_get_no_copy_and_are_counted():
    train = frame(
        [
            ("好评", "pos"),
            ("差！！", "neg"),
            ("很好！", "pos"),
            ("Great!", "pos"),
            ("", "neg"),
            ("质量很好", "pos"),
            ("Works as described", "pos"),
        ]
    )
    result = augment(train, shipped("augment", factor=2))
    assert result.skipped == 5
    assert "5 of 7 texts" in result.reason and "min_units=3" in result.reason
    assert set(result.frame["origin_id"]) == {"r5", "r6"} and len(result.frame) == 4
    assert augment(train, shipped("augment", factor=2, min_units=2)).skipped == 3
    assert augment(frame(CHINESE), shipped("augment")).reason == ""


def test_all_short_or_factor_zero_gives_the_columns_and_no_rows(train):
    assert augment(train, shipped("augment", factor=0)).frame.empty
    result = augment(frame([("好", "pos"), ("差", "neg")]), shipped("augment"))
    assert result.frame.empty and result.skipped == 2
    assert list(result.frame.columns) == ["id", "text", "label", "source", "origin_id", "op"]


def test_config_is_checked():
    with pytest.raises(ValidationError, match="min_units"):
        shipped("augment", min_units=1)
    with pytest.raises(ValidationError, match="min_unit"):
        shipped("augment", min_unit=3)
