"""Deduplicated train/val/test split, assigned by a hash of the normalised text.

A text's split depends on its own content alone, never on the rest of the data: when new
data arrives, every old text stays where it was (an old test set stays in test), and two
copies of a text always land together, so after deduplication no text is in two splits.
Each class is cut by the same hash thresholds, so the split is stratified in expectation;
`split_report` gives the per-class shares actually reached.
"""

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.data.schema import text_hash

SPLITS = ("train", "val", "test")
# What later stages need; ingested_at stays behind so a re-ingest of the same texts
# leaves the split files, and everything trained on them, unchanged.
KEEP = ["id", "text", "label", "source"]


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    val: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)
    salt: str = Field(min_length=1, description="changing it reshuffles every split")

    @model_validator(mode="after")
    def _room_for_train(self) -> "SplitConfig":
        if self.val + self.test >= 0.9:
            raise ValueError("val + test leave less than 10% for train")
        return self


@dataclass
class SplitResult:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    duplicates_dropped: int
    conflicts_dropped: int

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "val": self.val, "test": self.test}


def bucket(key: str, salt: str) -> float:
    """A text's position in [0, 1), uniform over texts and fixed for a given salt."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(key: str, cfg: SplitConfig) -> str:
    u = bucket(key, cfg.salt)
    if u < cfg.test:
        return "test"
    if u < cfg.test + cfg.val:
        return "val"
    return "train"


def split(frame: pd.DataFrame, cfg: SplitConfig) -> SplitResult:
    """Drop exact duplicates (same normalised text), then assign each text its split.

    A text that occurs with two different labels cannot be learned either way: all its
    copies are dropped and counted as conflicts."""
    keyed = frame[KEEP].assign(_key=frame["text"].map(text_hash))
    labels_per_key = keyed.groupby("_key")["label"].nunique()
    conflicting = set(labels_per_key[labels_per_key > 1].index)
    conflicts = keyed["_key"].isin(conflicting)
    clean = keyed[~conflicts]
    unique = clean.drop_duplicates("_key", keep="first")
    where = unique["_key"].map(lambda k: assign(k, cfg))
    parts = {
        name: unique[where == name].drop(columns="_key").sort_values("id").reset_index(drop=True) for name in SPLITS
    }
    return SplitResult(
        **parts,
        duplicates_dropped=int(len(clean) - len(unique)),
        conflicts_dropped=int(conflicts.sum()),
    )


@dataclass
class TransferSet:
    """Unlabelled texts fit to teach a student: what was kept, and what was not, by reason."""

    frame: pd.DataFrame
    invalid_dropped: int  # missing, blank, or outside the length bounds
    duplicates_dropped: int
    in_splits_dropped: int  # the same normalised text as a train, val or test text


def transfer_set(
    unlabeled: pd.DataFrame, splits: Iterable[pd.DataFrame], min_chars: int, max_chars: int
) -> TransferSet:
    """The texts of `unlabeled` (id, text) within the length bounds, each once, and none
    whose normalised text is in a split: a val or test text among them would have the
    student learn its teacher's answer on the very texts it is scored on."""
    text = unlabeled["text"]
    valid = text.map(lambda t: isinstance(t, str) and bool(t.strip()) and min_chars <= len(t) <= max_chars)
    valid = valid.astype(bool)  # an empty frame's map gives an object column
    keyed = unlabeled.loc[valid].assign(_key=lambda f: f["text"].map(text_hash))
    unique = keyed.drop_duplicates("_key", keep="first")
    taken = set().union(*(set(part["text"].map(text_hash)) for part in splits))
    apart = unique[~unique["_key"].isin(taken)]
    return TransferSet(
        frame=apart.drop(columns="_key").sort_values("id").reset_index(drop=True),
        invalid_dropped=int((~valid).sum()),
        duplicates_dropped=int(len(keyed) - len(unique)),
        in_splits_dropped=int(len(unique) - len(apart)),
    )


def split_report(result: SplitResult) -> dict:
    """Sizes and per-class shares of each split."""
    report: dict = {
        "duplicates_dropped": result.duplicates_dropped,
        "conflicts_dropped": result.conflicts_dropped,
    }
    total = sum(len(f) for f in result.frames().values())
    for name, frame in result.frames().items():
        report[name] = {
            "rows": len(frame),
            "share": round(len(frame) / total, 4) if total else 0.0,
            "classes": {k: int(v) for k, v in frame["label"].value_counts().sort_index().items()},
        }
    return report
