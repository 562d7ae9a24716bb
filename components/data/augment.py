"""EDA-style augmentation of training texts (Wei & Zou, 2019).

Each augmented copy applies one operation, chosen at random, at strength `alpha`:
random deletion (each word dropped with probability alpha), random swap and random
insertion (alpha times the word count, at least one), and token masking (each word
replaced by the mask token with probability alpha). Inserted words are drawn from the
texts given, so augmenting the train split never brings in a word from val or test.
"""

import random
from dataclasses import dataclass
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

Op = Literal["delete", "swap", "insert", "mask"]


class AugmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factor: int = Field(1, ge=0, le=16, description="augmented copies per training text")
    alpha: float = Field(0.1, gt=0, lt=1)
    ops: list[Op] = Field(default_factory=lambda: ["delete", "swap", "insert", "mask"], min_length=1)
    mask_token: str = Field("[MASK]", min_length=1)
    seed: int = 13


@dataclass(frozen=True)
class Augmenter:
    cfg: AugmentConfig
    vocabulary: tuple[str, ...]

    def delete(self, words: list[str], rng: random.Random) -> list[str]:
        kept = [w for w in words if rng.random() >= self.cfg.alpha]
        return kept or [rng.choice(words)]

    def swap(self, words: list[str], rng: random.Random) -> list[str]:
        words = list(words)
        for _ in range(self._count(words)):
            i, j = rng.randrange(len(words)), rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
        return words

    def insert(self, words: list[str], rng: random.Random) -> list[str]:
        words = list(words)
        for _ in range(self._count(words)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(self.vocabulary))
        return words

    def mask(self, words: list[str], rng: random.Random) -> list[str]:
        return [self.cfg.mask_token if rng.random() < self.cfg.alpha else w for w in words]

    def _count(self, words: list[str]) -> int:
        return max(1, int(self.cfg.alpha * len(words)))

    def apply(self, text: str, rng: random.Random) -> tuple[str, str]:
        op = rng.choice(self.cfg.ops)
        words = text.split()
        if not words:
            return op, text
        return op, " ".join(getattr(self, op)(words, rng))


def augment(train: pd.DataFrame, cfg: AugmentConfig) -> pd.DataFrame:
    """`factor` augmented copies of each row of `train`, the originals not included.

    Each copy is seeded by (seed, id, copy number), so a row's copies do not change when
    other rows are added or removed."""
    columns = ["id", "text", "label", "source", "origin_id", "op"]
    if cfg.factor == 0 or train.empty:
        return pd.DataFrame(columns=columns)
    # Sorted, so the draw does not depend on row order; repeats keep word frequencies.
    vocabulary = tuple(sorted(word for text in train["text"] for word in text.split()))
    augmenter = Augmenter(cfg, vocabulary)
    rows = []
    for row in train.itertuples(index=False):
        for k in range(1, cfg.factor + 1):
            rng = random.Random(f"{cfg.seed}:{row.id}:{k}")
            op, text = augmenter.apply(row.text, rng)
            rows.append((f"{row.id}#aug{k}", text, row.label, "augment", row.id, op))
    return pd.DataFrame(rows, columns=columns)
