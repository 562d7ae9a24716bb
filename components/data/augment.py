"""EDA-style augmentation of training texts (Wei & Zou, 2019), on units that suit the script.

A text is cut into units: in scripts written without spaces between words (Han, Hiragana,
Katakana, Thai, Lao, Khmer, Myanmar) each grapheme is a unit, so a Chinese review is edited
character by character rather than as one "word"; everywhere else a unit is a
whitespace-separated word, punctuation attached. Graphemes keep combining marks with their
base letter. The edited units are joined with spaces, except between two units of those
scripts, so Chinese comes back unspaced; a space that stood between two such units stays
with the unit after it, so Thai keeps the spaces between its phrases.

Each augmented copy applies one operation, chosen at random, at strength `alpha`: random
deletion and masking (each unit dropped, or replaced by the mask token, with probability
alpha, at least one unit and never every unit that carries a letter or digit), random swap
(of two different positions) and random insertion (alpha times the unit count, at least
one). Inserted units are drawn only from the training texts of the same label, so a copy
brings in no word from val or test, nor any from another label. A text with fewer than
`min_units` units carrying a letter or digit gets no copy, and the result counts them.
"""

import bisect
import hashlib
import itertools
import random
import string
from collections import Counter, defaultdict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import regex
from pydantic import BaseModel, ConfigDict, Field

Op = Literal["delete", "swap", "insert", "mask"]

COLUMNS = ["id", "text", "label", "source", "origin_id", "op"]

# A character that belongs to a script written without spaces, by script extension so
# that the kana length mark ー, the iteration mark 々 and 、。「」 count, or full-width
# punctuation (，！？), which is written unspaced in the same texts.
_UNSPACED = (
    r"(?:[\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}\p{scx=Thai}\p{scx=Lao}\p{scx=Khmer}"
    r"\p{scx=Myanmar}]|(?=\p{P})[\p{ea=W}\p{ea=F}])"
)
_UNIT = regex.compile(rf"(?={_UNSPACED})\X|(?:(?!{_UNSPACED})\X)+")
_UNSPACED_START = regex.compile(_UNSPACED)
_CONTENT = regex.compile(r"[\p{L}\p{N}]")


class AugmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factor: int = Field(ge=0, le=16, description="augmented copies per training text")
    alpha: float = Field(gt=0, lt=1)
    ops: list[Op] = Field(min_length=1)
    mask_token: str = Field(min_length=1)
    # Each operation changes at least one unit: on a text of one or two units that is half
    # of it or more, enough to remove what made it its label, so such texts get no copy.
    min_units: int = Field(
        ge=2,
        description="fewest units (words, or characters of unspaced scripts) with a letter or digit "
        "a text needs to be augmented",
    )
    max_rows: int | None = Field(
        ge=1,
        description="train rows that get copies: beyond, those first by a seeded hash of their id (the same rows "
        "whatever their order); the training stages read a bounded number of steps, and copying every row of 100 "
        "times BBC's took 20 times as long; None: every row",
    )
    seed: int


@dataclass(frozen=True)
class Augmented:
    """The copies (columns id, text, label, source, origin_id, op) and the training rows
    that got none, with why."""

    frame: pd.DataFrame
    skipped: int
    reason: str


def units(text: str) -> list[str]:
    """`text` cut into units: graphemes of unspaced scripts, otherwise whitespace words.
    An unspaced unit that followed a space after another unspaced one keeps that space as
    its first character: in Thai (and kana) a space is the only word boundary the
    tokenizer sees, so joining without it would merge words."""
    out: list[str] = []
    for word in text.split():
        # Most words hold no unspaced character; skipping the grapheme scan for them makes
        # cutting the BBC articles ~30x faster.
        if word.isascii() or not _UNSPACED_START.search(word):
            out.append(word)
            continue
        pieces = _UNIT.findall(word)
        if out and _unspaced(out[-1]) and _unspaced(pieces[0]):
            pieces[0] = " " + pieces[0]
        out.extend(pieces)
    return out


def join(parts: list[str]) -> str:
    """Units back into a text: a space between two units unless both are unspaced (or
    the second brings its own)."""
    if all(unit.isascii() for unit in parts):
        return " ".join(parts)
    out: list[str] = []
    for previous, unit in zip([None, *parts], parts):
        if previous is None:
            unit = unit.lstrip(" ")
        elif not unit.startswith(" ") and not (_unspaced(previous) and _unspaced(unit)):
            out.append(" ")
        out.append(unit)
    return "".join(out)


def has_content(unit: str) -> bool:
    """Whether a unit carries a letter or digit, not punctuation or symbols alone."""
    if unit.isascii():
        # Only punctuation is left in a printable ASCII unit without letters or digits.
        return bool(unit.strip(string.punctuation))
    return _CONTENT.search(unit) is not None


def _unspaced(unit: str) -> bool:
    return not unit.isascii() and _UNSPACED_START.match(unit.lstrip(" ")) is not None


class Vocabulary:
    """One label's units with content, each as often as its training texts hold it. A
    draw is the one `rng.choice` makes from their sorted list, without holding that list:
    at 100 times BBC's rows it held 67 million strings."""

    def __init__(self, counts: Counter):
        self.units = sorted(counts)
        self.ends = list(itertools.accumulate(counts[unit] for unit in self.units))

    def draw(self, rng: random.Random) -> str:
        # choice(seq) is seq[_randbelow(len(seq))], and so is randrange(len(seq)).
        return self.units[bisect.bisect_right(self.ends, rng.randrange(self.ends[-1]))]


@dataclass(frozen=True)
class Augmenter:
    """The operations, on a text's units (at least two: `min_units` sees to it), for the
    texts of one label; `vocabulary` is that label's units with content."""

    cfg: AugmentConfig
    vocabulary: Vocabulary

    def delete(self, parts: list[str], rng: random.Random) -> list[str]:
        chosen = self._chosen(parts, rng)
        return [u for i, u in enumerate(parts) if i not in chosen]

    def swap(self, parts: list[str], rng: random.Random) -> list[str]:
        parts = list(parts)
        for _ in range(self._count(parts)):
            i, j = rng.sample(range(len(parts)), 2)
            parts[i], parts[j] = parts[j], parts[i]
        return parts

    def insert(self, parts: list[str], rng: random.Random) -> list[str]:
        parts = list(parts)
        for _ in range(self._count(parts)):
            parts.insert(rng.randrange(len(parts) + 1), self.vocabulary.draw(rng))
        return parts

    def mask(self, parts: list[str], rng: random.Random) -> list[str]:
        chosen = self._chosen(parts, rng)
        return [self.cfg.mask_token if i in chosen else u for i, u in enumerate(parts)]

    def _count(self, parts: list[str]) -> int:
        return max(1, int(self.cfg.alpha * len(parts)))

    def _chosen(self, parts: list[str], rng: random.Random) -> set[int]:
        """Positions to delete or mask: each with probability alpha, at least one, and
        never all of those with content (one of them, at random, is spared)."""
        chosen = {i for i in range(len(parts)) if rng.random() < self.cfg.alpha}
        if not chosen:
            chosen = {rng.randrange(len(parts))}
        content = [i for i, u in enumerate(parts) if has_content(u)]
        if content and chosen.issuperset(content):
            chosen.discard(rng.choice(content))
        return chosen

    def apply(self, parts: list[str], rng: random.Random) -> tuple[Op, str]:
        op = rng.choice(self.cfg.ops)
        return op, join(getattr(self, op)(parts, rng))


def augment(train: pd.DataFrame, cfg: AugmentConfig) -> Augmented:
    """`factor` augmented copies of each row of `train` (at most `max_rows` of them) with
    at least `min_units` units with content, the originals not included.

    Each copy is seeded by (seed, id, copy number), so a row's copies do not change when
    other rows are added or removed."""
    if cfg.factor == 0 or train.empty:
        return Augmented(pd.DataFrame(columns=COLUMNS), 0, "")
    if cfg.max_rows is not None and len(train) > cfg.max_rows:
        rank = train["id"].map(
            lambda i: int.from_bytes(hashlib.blake2b(f"{cfg.seed}:{i}".encode(), digest_size=8).digest())
        )
        train = train[rank.rank(method="first") <= cfg.max_rows]
    # Two passes, each text cut twice: holding every text's units at once took gigabytes.
    counts: dict[Hashable, Counter] = defaultdict(Counter)
    for label, text in zip(train["label"], train["text"]):
        counts[label].update(u.lstrip(" ") for u in units(text) if has_content(u))
    # Sorted, so the draw does not depend on row order; counts keep unit frequencies.
    augmenters = {label: Augmenter(cfg, Vocabulary(c)) for label, c in counts.items()}
    rows, skipped = [], 0
    for row in train.itertuples(index=False):
        parts = units(row.text)
        if sum(has_content(u) for u in parts) < cfg.min_units:
            skipped += 1
            continue
        for k in range(1, cfg.factor + 1):
            rng = random.Random(f"{cfg.seed}:{row.id}:{k}")
            op, text = augmenters[row.label].apply(parts, rng)
            rows.append((f"{row.id}#aug{k}", text, row.label, "augment", row.id, op))
    reason = (
        (
            f"{skipped} of {len(train)} texts have fewer than min_units={cfg.min_units} units with a letter "
            "or digit (words, or characters of unspaced scripts) and got no augmented copy"
        )
        if skipped
        else ""
    )
    return Augmented(pd.DataFrame(rows, columns=COLUMNS), skipped, reason)
