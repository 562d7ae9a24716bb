"""The dataset's columns and the text normalisation every data stage agrees on."""

import hashlib
import re
import unicodedata

# Columns of data/raw/dataset.parquet, in order.
COLUMNS = ("id", "text", "label", "source", "ingested_at")

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Unicode NFKC, lower case, whitespace collapsed: two texts that differ only in
    spacing, case or Unicode form count as the same text."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def text_hash(text: str) -> str:
    """Stable hex digest of the normalised text (dedup key and split assignment)."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()
