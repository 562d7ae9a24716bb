"""The classical family's grid: each (analyzer, n-gram range, sublinear_tf) point's TF-IDF
features, a logistic regression fitted at each (C, class weight) on them, and its val
score."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
from joblib import Parallel, delayed
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline

from components.classical.config import Analyzer, ClassicalConfig, ClassWeight
from components.classical.features import TOKENS, NgramCounts, columns


@dataclass(frozen=True)
class GridScore:
    analyzer: Analyzer
    ngram_range: tuple[int, int]
    sublinear_tf: bool
    c: float
    class_weight: ClassWeight
    features: int
    params: int
    val_macro_f1: float
    val_accuracy: float


@dataclass(frozen=True)
class Features:
    """The TF-IDF features of one (analyzer, n-gram range, sublinear_tf) of the grid."""

    analyzer: Analyzer
    ngram_range: tuple[int, int]
    sublinear: bool
    grams: list[tuple[str, ...]]  # the n-gram of each column
    tfidf: TfidfTransformer
    train: object  # sparse matrices, a row a text
    val: object


def feature_sets(
    train_texts: Sequence[str], val_texts: Sequence[str], cfg: ClassicalConfig, skipped: list[str]
) -> Iterator[Features]:
    """The grid's feature sets in grid order, one at a time; one without a feature is left
    out, and why is added to `skipped`."""
    for analyzer in cfg.analyzers:
        ranges = cfg.ngrams(analyzer)
        # Counting is most of the time: count every n-gram up to the longest length once;
        # each range is a subset of its columns.
        counts = NgramCounts(
            token_pattern=TOKENS[analyzer].python,
            lowercase=False,
            ngram_range=(1, max(high for _, high in ranges)),
            min_df=cfg.min_df,
        )
        try:
            x_train = counts.fit_transform(train_texts)
        except ValueError:  # scikit-learn's "empty vocabulary" and "no terms remain"
            # Words of text without spaces are whole sentences, seldom seen twice: the
            # other analyzer may still work.
            skipped.append(f"{analyzer}: no token occurs in {cfg.min_df} or more train texts")
            continue
        x_val = counts.transform(val_texts)
        grams = sorted(counts.vocabulary_, key=counts.vocabulary_.__getitem__)
        for ngram_range in ranges:
            kept = columns(grams, x_train, ngram_range, cfg.max_features)
            if not kept.size:
                skipped.append(f"{analyzer} {ngram_range}: no n-gram occurs in {cfg.min_df} or more train texts")
                continue
            for sublinear in cfg.sublinear_tf:
                tfidf = TfidfTransformer(sublinear_tf=sublinear).fit(x_train[:, kept])
                yield Features(
                    analyzer,
                    ngram_range,
                    sublinear,
                    [grams[i] for i in kept],
                    tfidf,
                    tfidf.transform(x_train[:, kept]),
                    tfidf.transform(x_val[:, kept]),
                )


# Non-zeros of a feature set's train matrix from which its fits go to worker processes.
# Each worker first spends seconds importing (joblib's loky pool): fits of 60 tiny texts
# took the classical stage 10.6 s on two workers (12.2 s of CPU), 7.0 s in its own
# process. BBC's feature sets hold 440,000 (words) and 2.0 million (chars) from 1,424
# train texts; a fit of 100,000 random non-zeros took 0.05 s.
PARALLEL_NNZ = 200_000


def scored(
    features: Features, y_train: np.ndarray, y_val: np.ndarray, cfg: ClassicalConfig, seed: int
) -> list[tuple[GridScore, LogisticRegression]]:
    """A model fitted at each (C, class weight) of the grid on `features`, and its val score."""
    points = list(product(cfg.c, cfg.class_weight))
    # The fits of one feature set are independent: one per core (most of the grid's time;
    # 2 cores fit BBC's char grid in 5.8 s instead of 13.7), once they outweigh starting
    # the worker processes.
    models = Parallel(n_jobs=-1 if features.train.nnz >= PARALLEL_NNZ else 1)(
        delayed(_fit)(features.train, y_train, c, weighting, cfg.max_iter, seed) for c, weighting in points
    )
    results = []
    for (c, weighting), model in zip(points, models):
        predicted = model.predict(features.val)
        score = GridScore(
            features.analyzer,
            features.ngram_range,
            features.sublinear,
            c,
            weighting,
            len(features.grams),
            params(model, len(features.grams)),
            float(f1_score(y_val, predicted, average="macro", zero_division=0)),
            float(accuracy_score(y_val, predicted)),
        )
        results.append((score, model))
    return results


def _fit(x, y, c: float, weighting: ClassWeight, max_iter: int, seed: int) -> LogisticRegression:
    # lbfgs is deterministic; the seed only matters to solvers that shuffle.
    weight = None if weighting == "none" else "balanced"
    return LogisticRegression(C=c, class_weight=weight, max_iter=max_iter, random_state=seed).fit(x, y)


def params(model: LogisticRegression, features: int) -> int:
    """Weights and biases, and the vocabulary: one n-gram (and its IDF weight) a feature."""
    return int(model.coef_.size + model.intercept_.size + features)


def pipeline(features: Features, model: LogisticRegression) -> Pipeline:
    """A grid point as one scikit-learn pipeline that takes raw texts: counts of its
    n-grams, its TF-IDF weights and `model`."""
    lengths = [len(gram) for gram in features.grams]
    counts = NgramCounts(
        token_pattern=TOKENS[features.analyzer].python,
        lowercase=False,
        ngram_range=(min(lengths), max(lengths)),
        vocabulary={gram: i for i, gram in enumerate(features.grams)},
    )
    # A given vocabulary learns nothing from texts: fitting on none only validates it.
    counts.fit([])
    return Pipeline([("counts", counts), ("tfidf", features.tfidf), ("model", model)])
