"""The classical family: counts of token n-grams, TF-IDF and a multinomial logistic
regression, chosen on val from a small grid and exported with skl2onnx to one ONNX file
that takes raw texts.

Logistic regression rather than a linear SVM: its scores are the logits of the
probabilities it was trained to give, so their softmax is scikit-learn's own
`predict_proba` and the probability served per label means something. An SVM's margins
have no probability scale (a softmax over them is an arbitrary temperature away from
calibrated). On BBC val the two reach the same macro-F1.

What skl2onnx 1.20's TfidfVectorizer converter can express, and what Kiln does instead:

- analyzer "char_wb": not implemented. "char": converted, but scikit-learn first
  collapses each whitespace run to one space and no ONNX op can (there is no regex
  replace), so a text with a newline or a double space scores differently. Kiln's "char"
  analyzer is the closest form the converter expresses: a token analyzer whose tokens are
  single characters and whole whitespace runs, so n-grams still span word boundaries.
- analyzer "word": the pattern runs in RE2, where \\w and \\b are ASCII; scikit-learn's
  default pattern is silently replaced by [a-zA-Z0-9_]+, which splits "café" and drops
  Cyrillic and CJK. Kiln hands the converter an RE2 pattern with Unicode classes.
  Both of Kiln's patterns find Python's tokens on every code point that Python's Unicode
  database knows (tests/test_classical.py checks them all).
- lowercase: becomes a StringNormalizer whose en_US.UTF-8 locale must be installed where
  the model is served (on slim images the session fails to load), and whose case mapping
  is not str.lower's (İ, final sigma). Kiln keeps case; on BBC val lowercasing gained
  nothing.
- strip_accents, a custom preprocessor or tokenizer: refused.
- scikit-learn names n-grams by joining tokens with spaces, ambiguous once a token can be
  whitespace; Kiln's vectorizer keeps n-grams as token tuples, which the converter takes
  as they are.
- sublinear_tf is converted as log(1 + tf), not 1 + log(tf); and the Tokenizer pads the
  short rows of a batch with "#", a real "char" token, so a text's scores depended on
  its batch mates. Kiln mends both in the exported graph.
"""

import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
from joblib import Parallel, delayed
from joblib.externals.loky import get_reusable_executor
from onnx import helper, numpy_helper
from scipy.special import softmax
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline

from components.classical.config import Analyzer, ClassicalConfig, ClassWeight
from components.classical.runtime import ClassicalClassifier
from components.deploy.metadata import stamp
from components.deploy.parity import Parity
from components.deploy.parity import parity as compare
from components.deploy.stats import stratified_sample
from components.errors import KilnError


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
# params.yaml's export.opset; every op used (Tokenizer, TfIdfVectorizer, LinearClassifier,
# Where) is in ONNX Runtime 1.20, the oldest Kiln allows.
OPSET = {"": 17, "ai.onnx.ml": 3}


class NgramCounts(CountVectorizer):
    """Token n-gram counts whose vocabulary keys are token tuples rather than
    space-joined strings: a "char" token may itself be whitespace, and skl2onnx needs
    each n-gram's tokens."""

    def _word_ngrams(self, tokens, stop_words=None):
        low, high = self.ngram_range
        return [gram for n in range(low, high + 1) for gram in zip(*(tokens[i:] for i in range(n)))]


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
class Selection:
    pipeline: Pipeline  # the best grid point, fitted on train alone
    labels: list[str]  # the pipeline's class i is labels[i]
    best: GridScore
    table: list[GridScore]  # every grid point fitted, in grid order
    skipped: list[str]  # grid points left out for want of features, and why
    seconds: float
    train_texts: int  # the texts it was fitted on (about max_train_texts at most: each label rounds)


def select(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    val_texts: Sequence[str],
    val_labels: Sequence[str],
    cfg: ClassicalConfig,
    seed: int,
) -> Selection:
    """Fit every grid point on train (at most `cfg.max_train_texts` of it) and score it
    on val. The best has the highest val macro-F1, then the fewest parameters, then comes
    first in grid order; each point is fitted from scratch, so its score does not depend
    on the points before it."""
    try:
        return _select(train_texts, train_labels, val_texts, val_labels, cfg, seed)
    finally:
        # joblib keeps its worker processes 5 minutes for more work, and a process that
        # multiprocessing started (a search trial's worker, a flow run of `kiln serve`)
        # waits for its children when it ends, before joblib's own exit hook can stop
        # them: there they go now. Elsewhere they stay for the next grid.
        if multiprocessing.parent_process() is not None:
            get_reusable_executor().shutdown(wait=True)


def _select(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    val_texts: Sequence[str],
    val_labels: Sequence[str],
    cfg: ClassicalConfig,
    seed: int,
) -> Selection:
    start = time.perf_counter()
    labels = sorted(set(train_labels))
    if len(labels) < 2:
        raise KilnError(f"classical: train has {len(labels)} label(s) {labels}; a classifier needs at least 2")
    if cfg.max_train_texts is not None and len(train_texts) > cfg.max_train_texts:
        keep = stratified_sample(train_labels, cfg.max_train_texts, seed)
        train_texts, train_labels = [train_texts[i] for i in keep], [train_labels[i] for i in keep]
    unknown = sorted(set(val_labels) - set(labels))
    if unknown:
        raise KilnError(f"classical: val labels {unknown} do not occur in train {labels}")
    ids = {label: i for i, label in enumerate(labels)}
    y_train, y_val = np.array([ids[v] for v in train_labels]), np.array([ids[v] for v in val_labels])

    table: list[GridScore] = []
    skipped: list[str] = []
    best: tuple[GridScore, Pipeline] | None = None
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
            columns = _columns(grams, x_train, ngram_range, cfg.max_features)
            if not columns.size:
                skipped.append(f"{analyzer} {ngram_range}: no n-gram occurs in {cfg.min_df} or more train texts")
                continue
            for sublinear in cfg.sublinear_tf:
                tfidf = TfidfTransformer(sublinear_tf=sublinear).fit(x_train[:, columns])
                a_train, a_val = tfidf.transform(x_train[:, columns]), tfidf.transform(x_val[:, columns])
                points = list(product(cfg.c, cfg.class_weight))
                # The fits of one feature set are independent: one per core (most of the
                # grid's time; 2 cores fit BBC's char grid in 5.8 s instead of 13.7).
                models = Parallel(n_jobs=-1)(
                    delayed(_fit)(a_train, y_train, c, weighting, cfg.max_iter, seed) for c, weighting in points
                )
                for (c, weighting), model in zip(points, models):
                    predicted = model.predict(a_val)
                    score = GridScore(
                        analyzer,
                        ngram_range,
                        sublinear,
                        c,
                        weighting,
                        len(columns),
                        _params(model, len(columns)),
                        float(f1_score(y_val, predicted, average="macro", zero_division=0)),
                        float(accuracy_score(y_val, predicted)),
                    )
                    table.append(score)
                    if best is None or (score.val_macro_f1, -score.params) > (best[0].val_macro_f1, -best[0].params):
                        best = (score, _pipeline(analyzer, [grams[i] for i in columns], tfidf, model))
    if best is None:
        raise KilnError(f"classical: no grid point has a feature (min_df {cfg.min_df}): {'; '.join(skipped)}")
    return Selection(best[1], labels, best[0], table, skipped, time.perf_counter() - start, len(train_texts))


def _fit(x, y, c: float, weighting: ClassWeight, max_iter: int, seed: int) -> LogisticRegression:
    # lbfgs is deterministic; the seed only matters to solvers that shuffle.
    weight = None if weighting == "none" else "balanced"
    return LogisticRegression(C=c, class_weight=weight, max_iter=max_iter, random_state=seed).fit(x, y)


def _columns(grams: list[tuple[str, ...]], x_train, ngram_range: tuple[int, int], limit: int) -> np.ndarray:
    """The columns of the n-grams in `ngram_range`: the `limit` most frequent in train,
    ties to the shorter. An n-gram is never more frequent than its prefix, so every kept
    n-gram's prefix is kept too, and the kept lengths leave no gap in the ONNX
    TfIdfVectorizer's pool, which is laid out by length."""
    lengths = np.array([len(gram) for gram in grams])
    inside = np.flatnonzero((lengths >= ngram_range[0]) & (lengths <= ngram_range[1]))
    totals = np.asarray(x_train[:, inside].sum(axis=0)).ravel()
    order = np.lexsort((inside, lengths[inside], -totals))  # the last key sorts first
    return np.sort(inside[order[:limit]])


def _params(model: LogisticRegression, features: int) -> int:
    """Weights and biases, and the vocabulary: one n-gram (and its IDF weight) a feature."""
    return int(model.coef_.size + model.intercept_.size + features)


def _pipeline(
    analyzer: Analyzer, grams: list[tuple[str, ...]], tfidf: TfidfTransformer, model: LogisticRegression
) -> Pipeline:
    lengths = [len(gram) for gram in grams]
    counts = NgramCounts(
        token_pattern=TOKENS[analyzer].python,
        lowercase=False,
        ngram_range=(min(lengths), max(lengths)),
        vocabulary={gram: i for i, gram in enumerate(grams)},
    )
    # A given vocabulary learns nothing from texts: fitting on none only validates it.
    counts.fit([])
    return Pipeline([("counts", counts), ("tfidf", tfidf), ("model", model)])


def count_parameters(pipeline: Pipeline) -> int:
    return _params(pipeline["model"], len(pipeline["counts"].vocabulary_))


def export(selection: Selection, path: Path, metadata: dict[str, object]) -> None:
    """The selected pipeline as one ONNX file. Input "text": raw texts, string [batch].
    Outputs "label": int64 index into the label map; "logits": float [batch, labels],
    whose softmax is scikit-learn's `predict_proba`. The file carries `metadata`, the
    label map and the grid point it was chosen at."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    _register()
    pipeline, best = selection.pipeline, selection.best
    options = {
        id(pipeline["counts"]): {"tokenexp": TOKENS[best.analyzer].re2},
        # Scores rather than probabilities: the runtime's softmax makes those, as
        # the transformer's does.
        id(pipeline["model"]): {"zipmap": False, "raw_scores": True},
    }
    outputs = [("label", Int64TensorType([None])), ("logits", FloatTensorType([None, len(selection.labels)]))]
    model = convert_sklearn(
        pipeline,
        "kiln-classical",
        initial_types=[("text", StringTensorType([None]))],
        options=options,
        target_opset=OPSET,
        final_types=outputs,
    )
    _mend(model.graph, best.sublinear_tf, binary=len(selection.labels) == 2)
    onnx.save(model, str(path))
    stamp(
        path,
        {
            **metadata,
            "family": "classical",
            "labels": {label: i for i, label in enumerate(selection.labels)},
            "grid_point": {
                "analyzer": best.analyzer,
                "ngram_range": list(best.ngram_range),
                "sublinear_tf": best.sublinear_tf,
                "c": best.c,
                "class_weight": best.class_weight,
                "features": best.features,
                "params": best.params,
                "val_macro_f1": best.val_macro_f1,
            },
        },
    )


def _register() -> None:
    """NgramCounts goes through skl2onnx's text-vectorizer converter, which takes tuple
    n-grams as they are."""
    from skl2onnx import update_registered_converter
    from skl2onnx.operator_converters.text_vectoriser import convert_sklearn_text_vectorizer
    from skl2onnx.shape_calculators.text_vectorizer import calculate_sklearn_text_vectorizer_output_shapes

    update_registered_converter(
        NgramCounts,
        "KilnNgramCounts",
        calculate_sklearn_text_vectorizer_output_shapes,
        convert_sklearn_text_vectorizer,
        options={
            "tokenexp": None,
            "separators": None,
            "nan": [True, False],
            "keep_empty_string": [True, False],
            "locale": None,
        },
    )


def _mend(graph: onnx.GraphProto, sublinear_tf: bool, binary: bool) -> None:
    """Mend what skl2onnx 1.20 exports wrongly (see the module's docstring)."""
    # "" is never a token (every pattern matches at least one character), so padding
    # makes no n-gram.
    pad = next(a for a in _only(graph, "Tokenizer").attribute if a.name == "pad_value")
    pad.CopyFrom(helper.make_attribute("pad_value", ""))
    if sublinear_tf:
        _sublinear(graph)
    if binary:
        _halve(graph)


def _only(graph: onnx.GraphProto, op_type: str) -> onnx.NodeProto:
    found = [node for node in graph.node if node.op_type == op_type]
    if len(found) != 1:
        raise RuntimeError(
            f"expected one {op_type} node in skl2onnx's graph, found {len(found)}; "
            f"the mends in {__name__} were written for skl2onnx 1.20"
        )
    return found[0]


def _sublinear(graph: onnx.GraphProto) -> None:
    """Replace skl2onnx's log(tf + 1) by scikit-learn's 1 + log(tf), left at 0 where tf is 0."""
    log = _only(graph, "Log")
    add = next(node for node in graph.node if log.input[0] in node.output)
    constants = {init.name for init in graph.initializer}
    tf = next(name for name in add.input if name not in constants)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(0, np.float32), "kiln_zero"),
            numpy_helper.from_array(np.array(1, np.float32), "kiln_one"),
        ]
    )
    # Log(0) is -inf, but Where only takes it where tf > 0.
    mended = [
        helper.make_node("Greater", [tf, "kiln_zero"], ["kiln_counted"], name="kiln_counted"),
        helper.make_node("Log", [tf], ["kiln_log_tf"], name="kiln_log_tf"),
        helper.make_node("Add", ["kiln_log_tf", "kiln_one"], ["kiln_sublinear_tf"], name="kiln_sublinear_tf"),
        helper.make_node("Where", ["kiln_counted", "kiln_sublinear_tf", tf], [log.output[0]], name="kiln_sublinear"),
    ]
    nodes = list(graph.node)
    at = nodes.index(add)
    nodes = nodes[:at] + mended + [node for node in nodes[at:] if node is not add and node is not log]
    del graph.node[:]
    graph.node.extend(nodes)
    unused = set(add.input) - {tf}
    kept = [init for init in graph.initializer if init.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _halve(graph: onnx.GraphProto) -> None:
    """For two classes skl2onnx's raw scores are [-z, z], whose softmax is sigmoid(2z);
    halved, it is scikit-learn's [1 - sigmoid(z), sigmoid(z)]."""
    producer = next(node for node in graph.node if "logits" in node.output)
    producer.output[list(producer.output).index("logits")] = "kiln_scores"
    graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "kiln_half"))
    graph.node.append(helper.make_node("Mul", ["kiln_scores", "kiln_half"], ["logits"], name="kiln_halve"))


def parity(pipeline: Pipeline, runtime: ClassicalClassifier, texts: list[str]) -> Parity:
    """scikit-learn's probabilities against ONNX Runtime's on the same texts; the runtime
    runs batches of 32, so texts of different lengths are padded together."""
    return compare(pipeline.predict_proba(texts), softmax(runtime.logits(texts), axis=-1))


def parity_gate(pipeline: Pipeline, runtime: ClassicalClassifier, texts: list[str], max_abs_diff: float) -> Parity:
    """`parity`, or a KilnError if the file differs by more than the gate allows."""
    found = parity(pipeline, runtime, texts)
    if not found.within(max_abs_diff):
        differ = round((1 - found.agreement) * found.texts)
        raise KilnError(
            f"classical: parity gate failed: max |probability difference| {found.max_abs_diff:.2e} "
            f"(allowed {max_abs_diff:.0e}) and {differ} of {found.texts} predicted labels differ from "
            f"scikit-learn on held-out texts"
        )
    return found
