"""The classical family's features: token n-gram counts that scikit-learn and the exported
ONNX graph compute alike, and the columns a grid point keeps.

What skl2onnx 1.20's TfidfVectorizer converter can express shapes the tokens:

- analyzer "char_wb": not implemented. "char": converted, but scikit-learn first
  collapses each whitespace run to one space and no ONNX op can (there is no regex
  replace), so a text with a newline or a double space scores differently. Kiln's "char"
  analyzer is the closest form the converter expresses: a token analyzer whose tokens are
  single characters and whole whitespace runs, so n-grams still span word boundaries.
- analyzer "word": the pattern runs in RE2, where \\w and \\b are ASCII; scikit-learn's
  default pattern is silently replaced by [a-zA-Z0-9_]+, which splits "café" and drops
  Cyrillic and CJK. Kiln hands the converter an RE2 pattern with Unicode classes.
  Both of Kiln's patterns find Python's tokens on every code point that Python's Unicode
  database knows (tests/unit/components/test_classical.py checks them all).
- scikit-learn names n-grams by joining tokens with spaces, ambiguous once a token can be
  whitespace; Kiln's vectorizer keeps n-grams as token tuples, which the converter takes
  as they are.
"""

from typing import NamedTuple

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer


class Pattern(NamedTuple):
    python: str  # scikit-learn's token_pattern
    re2: str  # the same tokens for ONNX Runtime's Tokenizer


# Python's \s is Unicode whitespace and RE2's is ASCII, so whitespace is spelled out as
# what str.isspace() accepts.
_SPACE = r"\t\n\v\f\r\x1c-\x1f\x85\p{Z}"
TOKENS: dict[str, Pattern] = {
    # The tokens of scikit-learn's default (?u)\b\w\w+\b.
    "word": Pattern(r"\w\w+", r"[\p{L}\p{N}_]{2,}"),
    "char": Pattern(r"\s+|\S", f"[{_SPACE}]+|[^{_SPACE}]"),
}


class NgramCounts(CountVectorizer):
    """Token n-gram counts whose vocabulary keys are token tuples rather than
    space-joined strings: a "char" token may itself be whitespace, and skl2onnx needs
    each n-gram's tokens."""

    def _word_ngrams(self, tokens, stop_words=None):
        low, high = self.ngram_range
        return [gram for n in range(low, high + 1) for gram in zip(*(tokens[i:] for i in range(n)))]


def columns(grams: list[tuple[str, ...]], x_train, ngram_range: tuple[int, int], limit: int) -> np.ndarray:
    """The columns of the n-grams in `ngram_range`: the `limit` most frequent in train,
    ties to the shorter. An n-gram is never more frequent than its prefix, so every kept
    n-gram's prefix is kept too, and the kept lengths leave no gap in the ONNX
    TfIdfVectorizer's pool, which is laid out by length."""
    lengths = np.array([len(gram) for gram in grams])
    inside = np.flatnonzero((lengths >= ngram_range[0]) & (lengths <= ngram_range[1]))
    totals = np.asarray(x_train[:, inside].sum(axis=0)).ravel()
    order = np.lexsort((inside, lengths[inside], -totals))  # the last key sorts first
    return np.sort(inside[order[:limit]])
