"""Term attributions of the classical family (n-gram counts, TF-IDF, a linear model):
each n-gram's weight for the label times its TF-IDF value, so the words' scores and the
intercept add up to the logit exactly.

An n-gram's contribution is shared by its occurrences in the text, an occurrence's by its
tokens, and a token's by its characters (components/explain/attribution.py): a character
trigram that spans two words gives each the share of its characters it covers.

The explainer holds numbers and strings only (`to_dict` is JSON), so a registered model
can be explained without unpickling a scikit-learn pipeline; it recomputes the pipeline's
features itself, with the same token pattern (Python's `re`, as scikit-learn's) and the
same TF-IDF arithmetic.
"""

import math
import re
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from components.errors import KilnError
from components.explain.attribution import Explanation, target_ids, to_words

FORMAT = "kiln-linear-explainer/1"


class _Features(NamedTuple):
    tokens: list[tuple[int, int]]  # character spans
    columns: np.ndarray  # each vocabulary n-gram occurrence's feature column,
    starts: np.ndarray  # its first token
    lengths: np.ndarray  # and its length in tokens
    x: np.ndarray  # the TF-IDF vector


class LinearExplainer:
    """A linear model over TF-IDF n-gram features, as plain arrays: what the classical
    pipeline computes, without scikit-learn."""

    def __init__(
        self,
        labels: list[str],
        pattern: str,
        ngrams: list[tuple[str, ...]],
        idf: np.ndarray | None,
        sublinear_tf: bool,
        norm: Literal["l1", "l2"] | None,
        coef: np.ndarray,
        intercept: np.ndarray,
    ):
        self.labels = labels
        self.pattern = pattern  # the vectorizer's token pattern
        self.ngrams = ngrams  # the feature columns, in order
        self.idf = idf  # [features], or None where TF-IDF used no idf
        self.sublinear_tf = sublinear_tf
        self.norm = norm
        self.coef = coef  # [labels, features]
        self.intercept = intercept  # [labels]
        self._regex = re.compile(pattern)
        self._columns = {gram: j for j, gram in enumerate(ngrams)}
        self._lengths = sorted({len(gram) for gram in ngrams})

    @classmethod
    def from_pipeline(cls, pipeline, labels: list[str]) -> "LinearExplainer":
        """From a fitted scikit-learn Pipeline of components.classical.model (counts,
        tfidf, model); `labels[i]` is the model's class i. Two classes become two logits,
        -z/2 and z/2, whose softmax is the pipeline's predict_proba, as in the served
        ONNX file."""
        counts, tfidf, model = pipeline["counts"], pipeline["tfidf"], pipeline["model"]
        unsupported = {
            "analyzer": counts.analyzer != "word",
            "lowercase": counts.lowercase,
            "strip_accents": counts.strip_accents is not None,
            "preprocessor": counts.preprocessor is not None,
            "tokenizer": counts.tokenizer is not None,
            "stop_words": counts.stop_words is not None,
            "binary": counts.binary,
            "multi_class": getattr(model, "multi_class", "auto") == "ovr",
        }
        if any(unsupported.values()):
            raise ValueError(
                f"cannot explain a vectorizer or model with {[k for k, v in unsupported.items() if v]}: "
                f"components.classical.model never builds one"
            )
        if list(model.classes_) != list(range(len(labels))):
            raise ValueError(f"the model's classes {list(model.classes_)} are not 0..{len(labels) - 1} for {labels}")
        grams = sorted(counts.vocabulary_, key=counts.vocabulary_.__getitem__)
        coef, intercept = np.asarray(model.coef_, float), np.asarray(model.intercept_, float)
        if len(labels) == 2:
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        return cls(
            labels,
            counts.token_pattern,
            [tuple(g) for g in grams],
            np.asarray(tfidf.idf_, float) if tfidf.use_idf else None,
            bool(tfidf.sublinear_tf),
            tfidf.norm,
            coef,
            intercept,
        )

    def to_dict(self) -> dict:
        """JSON-ready; `from_dict` reads it back to an explainer giving the same logits."""
        return {
            "format": FORMAT,
            "labels": list(self.labels),
            "pattern": self.pattern,
            "ngrams": [list(gram) for gram in self.ngrams],
            "idf": None if self.idf is None else self.idf.tolist(),
            "sublinear_tf": self.sublinear_tf,
            "norm": self.norm,
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict, where: str = "the explainer") -> "LinearExplainer":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KilnError(f"{where} is not a Kiln linear explainer (format {FORMAT})")
        try:
            labels, ngrams = [str(v) for v in data["labels"]], [tuple(str(t) for t in g) for g in data["ngrams"]]
            coef, intercept = np.asarray(data["coef"], float), np.asarray(data["intercept"], float)
            idf = None if data["idf"] is None else np.asarray(data["idf"], float)
            found = cls(
                labels, str(data["pattern"]), ngrams, idf, bool(data["sublinear_tf"]), data["norm"], coef, intercept
            )
        except (KeyError, TypeError, ValueError, re.error) as err:
            raise KilnError(f"{where} is corrupt ({type(err).__name__}: {err})") from None
        shapes_agree = (
            coef.shape == (len(labels), len(ngrams))
            and intercept.shape == (len(labels),)
            and (idf is None or idf.shape == (len(ngrams),))
            and found.norm in ("l1", "l2", None)
        )
        if not shapes_agree:
            raise KilnError(
                f"{where} is corrupt: {len(labels)} labels, {len(ngrams)} n-grams, coef {coef.shape}, "
                f"intercept {intercept.shape}, norm {found.norm!r}"
            )
        return found

    def _features(self, text: str) -> _Features:
        tokens = [(m.start(), m.end()) for m in self._regex.finditer(text)]
        strings = [text[start:end] for start, end in tokens]
        columns, starts, lengths = [], [], []
        get = self._columns.get
        for n in self._lengths:
            for i, gram in enumerate(zip(*(strings[offset:] for offset in range(n)))):
                if (j := get(gram)) is not None:
                    columns.append(j)
                    starts.append(i)
                    lengths.append(n)
        cols = np.array(columns, dtype=np.int64)
        counts = np.bincount(cols, minlength=len(self.ngrams)).astype(float)
        tf = np.where(counts > 0, 1 + np.log(np.maximum(counts, 1)), 0.0) if self.sublinear_tf else counts
        x = tf * self.idf if self.idf is not None else tf
        size = {"l2": math.sqrt(x @ x), "l1": np.abs(x).sum(), None: 1.0}[self.norm]
        return _Features(
            tokens,
            cols,
            np.array(starts, dtype=np.int64),
            np.array(lengths, dtype=np.int64),
            x / size if size > 0 else x,
        )

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """[texts, labels]: the pipeline's decision_function (halved to two columns for two labels)."""
        return np.array([self.coef @ self._features(text).x + self.intercept for text in texts]).reshape(
            len(texts), len(self.labels)
        )

    def proba(self, texts: Sequence[str]) -> np.ndarray:
        logits = self.logits(texts)
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return shifted / shifted.sum(-1, keepdims=True)

    def explain(self, texts: Sequence[str], targets: Sequence[str] | None = None) -> list[Explanation]:
        """One Explanation per text, of its predicted label, or of `targets[i]` if given."""
        wanted = target_ids(self.labels, texts, targets)
        return [self._one(text, wanted[i] if wanted else None) for i, text in enumerate(texts)]

    def _one(self, text: str, target: int | None) -> Explanation:
        tokens, cols, starts, lengths, x = self._features(text)
        logits = self.coef @ x + self.intercept
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        t = int(logits.argmax()) if target is None else target
        # The n-gram's contribution, shared equally by its occurrences and by their tokens.
        counts = np.bincount(cols, minlength=len(self.ngrams))
        share = (self.coef[t] * x)[cols] / counts[cols] / lengths if cols.size else np.zeros(0)
        per_token = np.zeros(len(tokens))
        for offset in range(int(lengths.max()) if lengths.size else 0):
            inside = lengths > offset
            np.add.at(per_token, starts[inside] + offset, share[inside])
        return Explanation(
            text=text,
            label=self.labels[t],
            probability=float(probabilities[t]),
            predicted=self.labels[int(logits.argmax())],
            score=float(logits[t]),
            base=float(self.intercept[t]),
            words=to_words(text, tokens, per_token),
        )
