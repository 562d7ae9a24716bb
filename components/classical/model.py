"""The classical family: counts of token n-grams, TF-IDF and a multinomial logistic
regression, chosen on val from a small grid and exported with skl2onnx to one ONNX file
that takes raw texts.

Logistic regression rather than a linear SVM: its scores are the logits of the
probabilities it was trained to give, so their softmax is scikit-learn's own
`predict_proba` and the probability served per label means something. An SVM's margins
have no probability scale (a softmax over them is an arbitrary temperature away from
calibrated). On BBC val the two reach the same macro-F1.

skl2onnx cannot express every TfidfVectorizer: components.classical.features says how
the tokens are shaped for it, components.classical.converter what its graph needs mended.
"""

import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from joblib.externals.loky import get_reusable_executor
from scipy.special import softmax
from sklearn.pipeline import Pipeline

from components.classical import grid
from components.classical.config import ClassicalConfig
from components.classical.converter import OPSET, mend, register
from components.classical.features import TOKENS
from components.classical.grid import GridScore
from components.deploy.metadata import stamp
from components.deploy.parity import Parity
from components.deploy.parity import parity as compare
from components.errors import KilnError
from components.runtime.classical import ClassicalClassifier
from components.stats import stratified_sample


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
    for features in grid.feature_sets(train_texts, val_texts, cfg, skipped):
        for score, model in grid.scored(features, y_train, y_val, cfg, seed):
            table.append(score)
            if best is None or (score.val_macro_f1, -score.params) > (best[0].val_macro_f1, -best[0].params):
                best = (score, grid.pipeline(features, model))
    if best is None:
        raise KilnError(f"classical: no grid point has a feature (min_df {cfg.min_df}): {'; '.join(skipped)}")
    return Selection(best[1], labels, best[0], table, skipped, time.perf_counter() - start, len(train_texts))


def count_parameters(pipeline: Pipeline) -> int:
    return grid.params(pipeline["model"], len(pipeline["counts"].vocabulary_))


def export(selection: Selection, path: Path, metadata: dict[str, object]) -> None:
    """The selected pipeline as one ONNX file. Input "text": raw texts, string [batch].
    Outputs "label": int64 index into the label map; "logits": float [batch, labels],
    whose softmax is scikit-learn's `predict_proba`. The file carries `metadata`, the
    label map and the grid point it was chosen at."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    register()
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
    mend(model.graph, best.sublinear_tf, binary=len(selection.labels) == 2)
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


def parity(pipeline: Pipeline, runtime: ClassicalClassifier, texts: list[str]) -> Parity:
    """scikit-learn's probabilities against ONNX Runtime's on the same texts; the runtime
    runs batches of 32, so texts of different lengths are padded together."""
    return compare(pipeline.predict_proba(texts), softmax(runtime.logits(texts), axis=-1))


def parity_gate(pipeline: Pipeline, runtime: ClassicalClassifier, texts: list[str], max_abs_diff: float) -> Parity:
    """`parity`, or a KilnError if the file differs by more than the gate allows."""
    found = parity(pipeline, runtime, texts)
    return found.require(max_abs_diff, "classical: parity gate failed", "probability", "scikit-learn")
