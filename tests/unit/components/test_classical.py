"""The classical family: grid selection on generated data (balanced class weights where val
favours them), ONNX export and its parity with scikit-learn, the runtime, and the
tokenizer patterns against Python's on all of Unicode."""

import re
import subprocess
import sys
import unicodedata

import numpy as np
import onnx
import pytest
from onnx import helper
from pydantic import ValidationError

from components.classical.config import ClassicalConfig
from components.classical.features import TOKENS
from components.classical.model import (
    Selection,
    count_parameters,
    export,
    parity,
    parity_gate,
    select,
)
from components.deploy.metadata import read_metadata
from components.errors import KilnError
from components.runtime.classical import ClassicalClassifier
from components.stats import stratified_sample
from tests.support.params import shipped
from tests.support.repo import ROOT

# A small grid: two ranges an analyzer, so choosing between ranges is exercised too.
CFG = shipped("classical", word_ngrams=[(1, 1), (1, 2)], char_ngrams=[(1, 2), (1, 3)], c=[1.0, 10.0], max_features=2000)

# What the parity gate must survive: no spaces, mixed case, punctuation, accents, every
# kind of whitespace, the converter's old pad "#", emoji, and texts with no word token.
HARD = [
    "这是一个没有空格的句子，还有标点！",
    "MiXeD CaSe, punctuation!?; (brackets) [and] {more}...",
    "Été à Noël — naïve café; ΟΔΟΣ İstanbul straße ǅ",
    "tabs\tand\n\nnewlines   spaces\u3000and\u00a0nbsp ",
    "#1 ## #tag a#b ####",
    "🙂🙃 emoji",
    "!!!",
    "a",
    " \n leading and trailing \t ",
]


def _texts(rng: np.random.Generator, words: list[list[str]], shared: list[str], n: int, sep: str) -> tuple[list, list]:
    """n texts a class: 4 to 12 tokens, two in three of them from the class's own words."""
    texts, labels = [], []
    for label, own in enumerate(words):
        for _ in range(n):
            size = int(rng.integers(4, 13))
            pool = [own if rng.random() < 2 / 3 else shared for _ in range(size)]
            texts.append(sep.join(str(rng.choice(p)) for p in pool))
            labels.append(f"class_{label}")
    return texts, labels


def chinese(n: int, seed: int, classes: int = 3) -> tuple[list[str], list[str]]:
    """Characters without spaces, each class with its own 15 CJK characters."""
    rng = np.random.default_rng(seed)
    own = [[chr(0x4E00 + 100 * (k + 1) + i) for i in range(15)] for k in range(classes)]
    return _texts(rng, own, [chr(0x4E00 + i) for i in range(30)], n, sep="")


def english(n: int, seed: int, classes: int = 3) -> tuple[list[str], list[str]]:
    """Words with spaces, mixed case and punctuation, each class with its own 15 words."""
    rng = np.random.default_rng(seed)
    stems = ["goal", "match", "Market", "SHARE", "vote", "Party", "chip", "Phone", "film", "Actor", "bank", "Tax"]
    own = [[f"{stems[(4 * k + i) % len(stems)]}{k}{i}," for i in range(15)] for k in range(classes)]
    # Accented, Cyrillic and "#" (the converter's own padding) words, shared by all classes.
    shared = ["the", "The", "of", "and", "A", "is", "in", "to", "said", "!", "#1", "café", "Été", "naïve", "Москва"]
    return _texts(rng, own, shared, n, sep=" ")


def _select(make, classes: int = 3, cfg: ClassicalConfig = CFG) -> Selection:
    train, val = make(40, seed=0, classes=classes), make(15, seed=1, classes=classes)
    return select(*train, *val, cfg, seed=0)


@pytest.fixture(scope="module")
def english_selection() -> Selection:
    return _select(english)


def test_config_refuses_typos_and_bad_ranges():
    with pytest.raises(ValidationError, match="analyser"):
        shipped("classical", analyser=["word"])
    with pytest.raises(ValidationError, match="starts after it ends"):
        shipped("classical", char_ngrams=[(3, 1)])
    with pytest.raises(ValidationError, match="twice"):
        shipped("classical", c=[1.0, 1.0])
    with pytest.raises(ValidationError, match="word_ngrams is empty"):
        shipped("classical", word_ngrams=[])
    assert shipped("classical", analyzers=["char"], word_ngrams=[]).analyzers == ["char"]


def test_config_module_imports_no_heavy_library():
    code = (
        "import sys, components.classical.config; "
        "print(sorted({'sklearn', 'skl2onnx', 'onnx', 'onnxruntime', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_text_without_spaces_selects_a_char_analyzer():
    selection = _select(chinese)
    assert selection.best.analyzer == "char"
    # Chance is 1/3; each class's own characters make the texts almost separable.
    assert selection.best.val_macro_f1 >= 0.9
    # Every text is one word, seen once: the word analyzer has nothing to count.
    assert selection.skipped == ["word: no token occurs in 2 or more train texts"]


def test_english_selection_scores_every_grid_point_and_keeps_the_best(english_selection):
    table, best = english_selection.table, english_selection.best
    assert [(s.analyzer, s.ngram_range, s.c, s.class_weight) for s in table] == [
        (a, r, c, w) for a in ("word", "char") for r in CFG.ngrams(a) for c in CFG.c for w in ("none", "balanced")
    ]
    assert best.val_macro_f1 >= 0.9
    # Balanced labels weigh 1 each: weighting changes nothing, and the tie keeps "none".
    assert table[0].val_macro_f1 == table[1].val_macro_f1 and best.class_weight == "none"
    first = max(table, key=lambda s: (s.val_macro_f1, -s.params))  # max keeps the first of equals
    assert best == first
    assert count_parameters(english_selection.pipeline) == best.params
    assert english_selection.labels == ["class_0", "class_1", "class_2"]


def test_the_grid_fits_on_a_bounded_sample_that_keeps_every_labels_share():
    labels = ["a"] * 600 + ["b"] * 300 + ["c"] * 3  # a rare label keeps a row too
    keep = stratified_sample(labels, 90, seed=0)
    assert keep == sorted(set(keep)) and [labels[i] for i in keep].count("a") == 60
    assert [labels[i] for i in keep].count("b") == 30 and [labels[i] for i in keep].count("c") == 1
    assert stratified_sample(labels, 90, seed=0) == keep != stratified_sample(labels, 90, seed=1)

    capped = _select(english, cfg=CFG.model_copy(update={"max_train_texts": 60}))
    assert capped.train_texts == 60  # 40 texts of each of 3 labels: 20 of each
    assert capped.best.val_macro_f1 >= 0.9
    assert _select(english, cfg=CFG.model_copy(update={"max_train_texts": None})).train_texts == 120


def test_select_refuses_what_it_cannot_learn():
    texts, labels = english(10, seed=0)
    with pytest.raises(KilnError, match="at least 2"):
        select(texts, ["one"] * len(texts), texts, ["one"] * len(texts), CFG, seed=0)
    with pytest.raises(KilnError, match=r"val labels \['other'\] do not occur in train"):
        select(texts, labels, texts[:1], ["other"], CFG, seed=0)
    with pytest.raises(KilnError, match="no grid point has a feature"):
        select(texts, labels, texts, labels, CFG.model_copy(update={"min_df": len(texts) + 1}), seed=0)


@pytest.mark.parametrize(
    ("make", "classes", "analyzer", "sublinear"),
    [
        (english, 3, "word", True),
        (english, 3, "char", True),
        (english, 3, "char", False),
        (chinese, 3, "char", True),
        (english, 2, "word", True),
    ],
    ids=["word", "char", "char-raw-tf", "chinese", "binary"],
)
def test_onnx_gives_scikit_learns_probabilities(make, classes, analyzer, sublinear, tmp_path):
    selection = _select(make, classes, CFG.model_copy(update={"analyzers": [analyzer], "sublinear_tf": [sublinear]}))
    path = tmp_path / "model.onnx"
    export(selection, path, {"git_commit": "abc"})
    runtime = ClassicalClassifier(path)
    texts = make(15, seed=2, classes=classes)[0] + HARD
    found = parity_gate(selection.pipeline, runtime, texts, max_abs_diff=1e-4)
    assert found.agreement == 1.0 and found.max_abs_diff <= 1e-4 and found.texts == len(texts)
    # A text scores the same alone as in a padded batch.
    alone = np.concatenate([runtime.logits([text]) for text in texts])
    np.testing.assert_allclose(alone, runtime.logits(texts), atol=1e-5)
    assert runtime.labels == selection.labels


def test_export_writes_one_self_describing_onnx_file_and_nothing_else(english_selection, tmp_path):
    path = tmp_path / "model.onnx"
    export(english_selection, path, {"git_commit": "abc", "data_hash": "123"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx.ml", "com.microsoft"}
    assert [o.name for o in model.graph.output] == ["label", "logits"]
    meta = read_metadata(path)
    assert meta["family"] == "classical" and meta["git_commit"] == "abc" and meta["data_hash"] == "123"
    assert meta["labels"] == {"class_0": 0, "class_1": 1, "class_2": 2}
    assert meta["grid_point"]["analyzer"] == english_selection.best.analyzer
    assert meta["grid_point"]["class_weight"] == english_selection.best.class_weight
    texts = ["the goal00, of the match01,", "Tax24, vote"]
    predictions = ClassicalClassifier(path, threads=1).predict(texts)
    expected = [english_selection.labels[i] for i in english_selection.pipeline.predict(texts)]
    assert [p["label"] for p in predictions] == expected
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-6 for p in predictions)


def test_parity_gate_fails_on_perturbed_weights(english_selection, tmp_path):
    path = tmp_path / "model.onnx"
    export(english_selection, path, {})
    model = onnx.load(str(path))
    linear = next(n for n in model.graph.node if n.op_type == "LinearClassifier")
    weights = next(a for a in linear.attribute if a.name == "coefficients")
    noise = np.random.default_rng(0).normal(0, 1.0, len(weights.floats))
    weights.CopyFrom(helper.make_attribute("coefficients", (np.array(weights.floats) + noise).tolist()))
    onnx.save(model, str(path))
    texts = english(15, seed=2)[0]
    assert parity(english_selection.pipeline, ClassicalClassifier(path), texts).max_abs_diff > 1e-2
    with pytest.raises(KilnError, match="parity gate failed"):
        parity_gate(english_selection.pipeline, ClassicalClassifier(path), texts, max_abs_diff=1e-4)


def test_runtime_refuses_files_and_requests_it_cannot_serve(english_selection, tmp_path):
    with pytest.raises(KilnError, match="is missing"):
        ClassicalClassifier(tmp_path / "missing.onnx")
    other = tmp_path / "other.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(other))
    with pytest.raises(KilnError, match="not a classical Kiln model"):
        ClassicalClassifier(other)
    path = tmp_path / "model.onnx"
    export(english_selection, path, {})
    runtime = ClassicalClassifier(path)
    with pytest.raises(KilnError, match="text 1 is empty"):
        runtime.predict(["fine", "  "])
    assert runtime.predict("one text")[0]["label"] in runtime.labels


def _onnx_tokens(text: str, pattern: str) -> list[str]:
    """ONNX Runtime's Tokenizer as the exported graph runs it."""
    import onnxruntime as ort

    node = helper.make_node(
        "Tokenizer", ["x"], ["y"], domain="com.microsoft", mark=0, mincharnum=1, pad_value="", tokenexp=pattern
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.STRING, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.STRING, None)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.array([text], dtype=object)})[0].ravel().tolist()


@pytest.mark.parametrize("analyzer", ["word", "char"])
def test_patterns_find_pythons_tokens_on_every_known_code_point(analyzer):
    # Unassigned code points (Cn) are left out: RE2 knows newer Unicode versions than
    # Python's database, and Python calls their characters neither letters nor digits.
    known = [
        chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn"
    ]
    # Doubled, so each character can form a two-character word; joined by spaces, so
    # word tokens stay apart and whitespace runs form.
    text = " ".join(c * 2 for c in known)
    pattern = TOKENS[analyzer]
    assert _onnx_tokens(text, pattern.re2) == re.findall(pattern.python, text)


def test_the_classical_grid_picks_balanced_weights_where_val_favours_them():
    def skewed(seed: int) -> tuple[list[str], list[str]]:
        """65/26/9 % of three labels; a label's own words are one token in six, the rest shared."""
        rng = np.random.default_rng(seed)
        shared = [f"w{i}" for i in range(40)]
        texts, labels = [], []
        for k, n in enumerate((65, 26, 9)):
            own = [f"c{k}x{i}" for i in range(10)]
            for _ in range(n):
                size = int(rng.integers(6, 12))
                texts.append(" ".join(str(rng.choice(own if rng.random() < 1 / 6 else shared)) for _ in range(size)))
                labels.append(f"class_{k}")
        return texts, labels

    cfg = shipped("classical", analyzers=["word"], word_ngrams=[(1, 1)], c=[1.0], max_features=500)
    chosen = select(*skewed(0), *skewed(100), cfg, seed=0)
    scores = {point.class_weight: point.val_macro_f1 for point in chosen.table}
    # Unweighted, the 9 % label is never predicted: 0.45; balanced about 0.7.
    assert scores["balanced"] > scores["none"] + 0.1
    assert chosen.best.class_weight == "balanced"
    assert chosen.pipeline["model"].class_weight == "balanced"


def test_small_feature_sets_are_fitted_in_this_process_and_large_ones_on_every_core(monkeypatch):
    """Worker processes cost seconds of imports each: only a feature set with
    grid.PARALLEL_NNZ non-zeros or more is worth them."""
    from components.classical import grid

    asked = []
    real = grid.Parallel

    def parallel(n_jobs):
        asked.append(n_jobs)
        return real(n_jobs=1)  # the same fits either way; only the choice is checked here

    monkeypatch.setattr(grid, "Parallel", parallel)
    (x, y), (vx, vy) = english(40, 0), english(15, 1)
    features = next(grid.feature_sets(x, vx, CFG, []))
    assert 0 < features.train.nnz < grid.PARALLEL_NNZ
    labels = {label: i for i, label in enumerate(sorted(set(y)))}
    args = (np.array([labels[v] for v in y]), np.array([labels[v] for v in vy]), CFG, 0)
    small = grid.scored(features, *args)
    monkeypatch.setattr(grid, "PARALLEL_NNZ", features.train.nnz)
    large = grid.scored(features, *args)
    assert asked == [1, -1]
    assert [score for score, _ in small] == [score for score, _ in large]
