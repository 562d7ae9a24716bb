"""DataModules for masked-LM pretraining and sequence classification."""

import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from components.errors import KilnError
from components.stats import seeded_sample, stratified_sample

# The special tokens of a BERT-style tokenizer, by the names transformers gives them.
BERT_SPECIAL = {
    "unk_token": "[UNK]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def load_tokenizer(path: Path, stage: str) -> PreTrainedTokenizerFast:
    """The tokenize stage's tokenizer.json as a transformers tokenizer."""
    if not path.is_file():
        raise KilnError(f"{stage}: tokenizer {path} is missing")
    try:
        return PreTrainedTokenizerFast(tokenizer_file=str(path), **BERT_SPECIAL)
    except Exception as err:  # tokenizers raises a bare Exception for a broken file
        raise KilnError(f"{stage}: tokenizer {path} is corrupt ({err}); rerun the tokenize stage") from None


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Texts tokenized at a time. A fast tokenizer's batch output holds an Encoding per text
# with its offsets, token strings and, when truncating, every overflowing token: for all
# of 177,619 long texts at once that was 19.6 GB (at 100 times BBC's rows).
CHUNK = 2048


def token_ids(
    tokenizer: PreTrainedTokenizerFast, texts: list[str], **kwargs
) -> tuple[list[list[int]], list[list[int]]]:
    """(input ids, attention masks) of `texts`, as `tokenizer(texts, **kwargs)` gives
    them, without holding every text's Encoding at once."""
    ids: list[list[int]] = []
    masks: list[list[int]] = []
    for start in range(0, len(texts), CHUNK):
        encoded = tokenizer(texts[start : start + CHUNK], **kwargs)
        ids += encoded["input_ids"]
        masks += encoded["attention_mask"]
    return ids, masks


def windows(texts: list[str], tokenizer: PreTrainedTokenizerFast, length: int) -> list[list[int]]:
    """Every text cut into consecutive windows of at most `length` tokens ([CLS] and
    [SEP] included), so pretraining sees whole texts, not just their openings."""
    body = length - 2
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    out = []
    for ids in token_ids(tokenizer, texts, add_special_tokens=False)[0]:
        for start in range(0, max(len(ids), 1), body):
            out.append([cls, *ids[start : start + body], sep])
    return out


@dataclass(frozen=True)
class Loading:
    """How a DataModule's loaders make batches: in `workers` processes beside training (0:
    in the training process, between its steps), pinned in page-locked memory with `pin`,
    so that copying a batch to a GPU neither waits for the GPU's queued work nor holds up
    the host (components.text.training.loading chooses for the hardware)."""

    workers: int = 0
    pin: bool = False

    def options(self, collator=None) -> dict:
        options = {"num_workers": self.workers, "pin_memory": self.pin, "persistent_workers": self.workers > 0}
        if self.workers and isinstance(collator, DataCollatorForLanguageModeling):
            options["worker_init_fn"] = partial(_reseed, collator)
        return options


def _reseed(collator: DataCollatorForLanguageModeling, worker: int) -> None:
    """Each loader worker masks from its own stream (seed + worker id, as the collator
    itself seeds workers): the generator the workers inherit would give them all one."""
    collator.generator = torch.Generator().manual_seed(collator.seed + worker)


class _Rows(Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


def masked_positions(labels: torch.Tensor) -> torch.Tensor:
    """The flat positions of the masked tokens in a masked-LM batch's `labels` (every other
    position holds the ignore label -100)."""
    return (labels.flatten() != -100).nonzero().squeeze(1)


class _Masking(DataCollatorForLanguageModeling):
    """transformers' masking collator, whose batches also hold `masked`: the flat positions
    of the masked tokens, found here on the CPU. The loss picks them with it; picking them
    on a GPU by a boolean mask waits for the GPU at every step (masked_lm_loss). A plain
    dict, not the tokenizer's BatchEncoding, whose `to` copies to a GPU synchronously."""

    def __call__(self, examples: list[dict]) -> dict:
        batch = dict(super().__call__(examples))
        batch["masked"] = masked_positions(batch["labels"])
        return batch


def _seeded_collator(tokenizer: PreTrainedTokenizerFast, mask_prob: float, seed: int) -> _Masking:
    """The masking collator with its generator made here, as the collator itself makes it
    in a main process. Left to itself it looks at the process name, and in any other
    process (a Prefect deployment runs flows in a child process) it expects to be a
    DataLoader worker and fails."""
    collator = _Masking(tokenizer, mlm_probability=mask_prob, seed=seed)
    collator.generator = torch.Generator().manual_seed(seed)
    return collator


class MaskedLMData(L.LightningDataModule):
    """Train and val texts as windows; train windows are masked afresh each batch, val
    windows (at most `val_windows`, a seeded sample) once, with a fixed seed, so val/loss
    compares across epochs and runs."""

    def __init__(
        self,
        train: list[str],
        val: list[str],
        tokenizer: PreTrainedTokenizerFast,
        length: int,
        batch_size: int,
        mask_prob: float,
        seed: int,
        val_windows: int,
        loading: Loading = Loading(),
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.loading = loading
        self.batch_size = batch_size
        self.seed = seed
        self.collator = _seeded_collator(tokenizer, mask_prob, seed)
        self.train_rows = [{"input_ids": w} for w in windows(train, tokenizer, length)]
        # Each text gives at least one window: as many texts are enough to draw from.
        val = seeded_sample(val, val_windows, seed)
        # Every check scores the whole val set: with ten times the texts (or a short
        # max_length) it would cost ten times as much, however few steps train.
        val_rows = seeded_sample([{"input_ids": w} for w in windows(val, tokenizer, length)], val_windows, seed)
        fixed = _seeded_collator(tokenizer, mask_prob, seed + 1)
        self.val_batches = [fixed(val_rows[i : i + batch_size]) for i in range(0, len(val_rows), batch_size)]

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            _Rows(self.train_rows),
            batch_size=self.batch_size,
            shuffle=True,
            collate_fn=self.collator,
            generator=generator,
            **self.loading.options(self.collator),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Rows(self.val_batches), batch_size=None, pin_memory=self.loading.pin)


def label_map(labels: pd.Series) -> dict[str, int]:
    return {label: i for i, label in enumerate(sorted(labels.unique()))}


def stratified_fraction(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """`fraction` of each label's rows (at least one per label), drawn with `seed`."""
    if fraction >= 1:
        return frame
    parts = []
    for _, group in frame.groupby("label", sort=True):
        n = max(1, round(len(group) * fraction))
        parts.append(group.sample(n=n, random_state=seed))
    return pd.concat(parts).sort_index()


# The label id of a text without a label: cross-entropy's default ignore_index.
UNLABELED = -100


class ClassificationData(L.LightningDataModule):
    """Texts truncated to `length` tokens with integer labels from `labels`. With
    `teacher_tokenizer` (distilling from a teacher whose vocabulary is not the student's),
    each batch also holds the teacher's own tokens of the same texts, as `teacher_input_ids`
    and `teacher_attention_mask`. With `teacher_logits` (by split, a row per text), each
    batch holds the teacher's logits of its texts instead, as `teacher_logits`. With
    `val_texts`, the checks while training (`val_dataloader`) score at most that many val
    texts, a seeded sample keeping each label's share; `loader("val")` is the whole split.

    Texts are tokenized a batch at a time, as the loaders draw them: a bounded number of
    steps reads a fraction of a large train split (550 batches of 32 from 177,619 texts at
    100 times BBC's rows, which took 126 s to tokenize whole before the first step)."""

    def __init__(
        self,
        splits: dict[str, pd.DataFrame],
        labels: dict[str, int],
        tokenizer: PreTrainedTokenizerFast,
        length: int,
        batch_size: int,
        seed: int,
        teacher_tokenizer: PreTrainedTokenizerFast | None = None,
        teacher_logits: dict[str, np.ndarray] | None = None,
        val_texts: int | None = None,
        loading: Loading = Loading(),
    ):
        super().__init__()
        self.batch_size = batch_size
        self.loading = loading
        self.seed = seed
        self.collator = _Tokenized(tokenizer, length, teacher_tokenizer)
        # Each split's text ids in its order (the frame's index where it has no id column).
        self.ids = {name: frame.get("id", frame.index).tolist() for name, frame in splits.items()}
        self.sets = {}
        for name, frame in splits.items():
            rows = self.rows(frame, labels)
            if teacher_logits is not None and name in teacher_logits:
                given = teacher_logits[name]
                if len(given) != len(rows):
                    raise KilnError(f"{len(given)} rows of teacher logits for the {len(rows)} texts of {name}")
                for row, logits in zip(rows, given.tolist()):
                    row["teacher_logits"] = logits
            self.sets[name] = _Rows(rows)
        if val_texts is not None and "val" in splits and len(splits["val"]) > val_texts:
            kept = stratified_sample(splits["val"]["label"].tolist(), val_texts, seed)
            self.sets["val_check"] = _Rows([self.sets["val"][i] for i in kept])

    @staticmethod
    def rows(frame: pd.DataFrame, labels: dict[str, int]) -> list[dict]:
        """A row per text with its label id; a text without a label (an unlabelled text of
        a transfer set) gets UNLABELED, which the losses leave out."""
        given = frame["label"].dropna()
        unknown = sorted(set(given) - set(labels))
        if unknown:
            raise KilnError(f"labels {unknown} are not in the model's label map {sorted(labels)}")
        ids = [UNLABELED if pd.isna(v) else labels[v] for v in frame["label"]]
        return [{"text": text, "labels": y} for text, y in zip(frame["text"].tolist(), ids, strict=True)]

    def loader(self, name: str, shuffle: bool = False) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.sets[name],
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=self.collator,
            generator=generator,
            **self.loading.options(),
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val_check" if "val_check" in self.sets else "val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")


class _Tokenized:
    """A batch of rows as tensors: the texts in the student's tokens, padded to the
    longest, with their labels, the teacher's tokens of them (with `teacher`), and the
    teacher's logits where the rows hold them."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, length: int, teacher: PreTrainedTokenizerFast | None):
        self.tokenizer = tokenizer
        self.length = length
        self.teacher = teacher

    def tokens(self, tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(
            tokenizer(
                texts,
                truncation=True,
                max_length=self.length,
                padding=True,
                return_tensors="pt",
                return_token_type_ids=False,
            )
        )

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        texts = [r["text"] for r in rows]
        batch = self.tokens(self.tokenizer, texts)
        batch["labels"] = torch.tensor([r["labels"] for r in rows])
        if self.teacher is not None:
            theirs = self.tokens(self.teacher, texts)
            batch["teacher_input_ids"] = theirs["input_ids"]
            batch["teacher_attention_mask"] = theirs["attention_mask"]
        if "teacher_logits" in rows[0]:
            batch["teacher_logits"] = torch.tensor([r["teacher_logits"] for r in rows])
        return batch
