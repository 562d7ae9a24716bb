"""Small labelled datasets made up for the tests: balanced over BBC's labels, batches
that do and do not drift from them, and Chinese reviews written without spaces."""

import random
from pathlib import Path

import pandas as pd

from tests.support.params import shipped

LABELS = ["business", "entertainment", "politics", "sports", "tech"]


def tiny_frame(rows_per_label: int = 12) -> pd.DataFrame:
    """A small labelled dataset with distinct texts, balanced over the BBC labels."""
    rows = []
    for label in LABELS:
        for i in range(rows_per_label):
            words = " ".join(f"{label}word{j}" for j in range(i % 5 + 3))
            rows.append(
                {"text": f"Story {i} about {label}: {words}. More detail {i * 7} follows here.", "label": label}
            )
    return pd.DataFrame(rows)


TEXTS = tiny_frame(8)["text"].tolist()


def good_batch(start: int = 0, rows_per_label: int = 4) -> pd.DataFrame:
    """New texts in the words of `tiny_frame` (reversed word order), so nothing drifts."""
    rows = []
    for label in LABELS:
        for i in range(start, start + rows_per_label):
            words = " ".join(f"{label}word{j}" for j in reversed(range(i % 5 + 3)))
            rows.append(
                {"text": f"Story {i} about {label}: {words}. More detail {i * 7} follows here.", "label": label}
            )
    return pd.DataFrame(rows)


def drifted_batch() -> pd.DataFrame:
    return pd.DataFrame({"text": [f"lol omg zzyzx qwv {i} sooo gud #blessed wow" for i in range(20)], "label": "tech"})


def dataset(frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """`frame` (`tiny_frame` when None) as ingest writes it from data/external/mine.csv."""
    frame = tiny_frame() if frame is None else frame.reset_index(drop=True)
    return frame.assign(
        id=[f"mine.csv:{i + 2}" for i in range(len(frame))],
        source="file",
        ingested_at=pd.Timestamp("2026-01-01", tz="UTC"),
    )[["id", "text", "label", "source", "ingested_at"]]


def check_batch(folder: Path, name: str, content: str | pd.DataFrame, tokenizer=None):
    """The retrain's checks of batch file `name` (written into `folder`) against `dataset`,
    with drift measured when a tokenizer is given."""
    from components.data.batches import check
    from components.data.drift import profile

    path = folder / name
    if isinstance(content, pd.DataFrame):
        content.to_csv(path, index=False)
    else:
        path.write_text(content)
    reference = profile(tiny_frame(), tokenizer) if tokenizer else None
    return check(
        path, dataset(), shipped("ingest.file"), shipped("validate"), reference, tokenizer, shipped("retrain.drift")
    )


# Characters of generated "reviews": each label has words of its own, the rest are shared.
SHARED = "的了是我在有这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作里"
TOPICS = {
    "好评": "好棒赞喜欢满意推荐干净舒适快速便宜",
    "差评": "差烂慢贵脏吵失望退款投诉糟糕",
    "中评": "一般还行普通凑合尚可平常中等",
}


def chinese(rows_per_label: int | dict[str, int], seed: int = 0) -> pd.DataFrame:
    """Reviews (column `review`) rated by `stars`, in characters without spaces;
    `rows_per_label` the same for every label, or a count for each (a skewed set)."""
    rng = random.Random(seed)
    counts = rows_per_label if isinstance(rows_per_label, dict) else dict.fromkeys(TOPICS, rows_per_label)
    rows = []
    for label, own in TOPICS.items():
        for _ in range(counts[label]):
            chars = [rng.choice(own) for _ in range(rng.randint(4, 8))] + [rng.choice(SHARED) for _ in range(12)]
            rng.shuffle(chars)
            rows.append({"review": "".join(chars) + rng.choice("。！？"), "stars": label})
    return pd.DataFrame(rows).drop_duplicates("review")
