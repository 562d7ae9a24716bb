"""Explanations: Integrated Gradients on a tiny transformer trained here to rely on marker
words, linear attributions against scikit-learn, calibration on cases with known answers,
the faithfulness check, and the report's and terminal's output."""

import io
import json
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.special import softmax
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from components.classical.model import select
from components.data.augment import units
from components.deploy.parity import TorchClassifier
from components.errors import KilnError
from components.explain.attribution import Explanation, Word, to_words
from components.explain.calibration import calibrate, ece, fit_temperature, reliability
from components.explain.faithfulness import aopc
from components.explain.figures import highlight
from components.explain.linear import LinearExplainer
from components.explain.report import class_words, confusions, render, summarise
from components.explain.terminal import colours, paint, to_json
from components.explain.transformer import TransformerExplainer
from components.text.classifier import MeanPoolClassifier
from components.text.model import bert_config
from components.text.tokenizer import SPECIAL_TOKENS, normalizer
from tests.support.params import shipped
from tests.support.repo import ROOT

MARKERS = {
    "business": ["shares", "profits", "bank"],
    "sport": ["goal", "striker", "match"],
    "tech": ["software", "chip", "phone"],
}
LABELS = list(MARKERS)
FILLER = [
    "the",
    "a",
    "of",
    "and",
    "in",
    "to",
    "said",
    "on",
    "for",
    "with",
    "was",
    "at",
    "by",
    "from",
    "after",
    "it",
    "year",
    "new",
    "people",
    "last",
]


def marked(n: int, seed: int) -> tuple[list[str], list[str]]:
    """n texts a label: 7 to 11 shared filler words and one marker word of the label."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label in LABELS:
        for _ in range(n):
            words = [str(w) for w in rng.choice(FILLER, size=int(rng.integers(7, 12)))]
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(MARKERS[label])))
            texts.append(" ".join(words).capitalize() + ".")
            labels.append(label)
    return texts, labels


def whole_words(words: list[str]) -> Tokenizer:
    """Kiln's tokenizer (components/text/tokenizer.py) with `words` for its vocabulary,
    each a token: a trained one may break ties between merges either way from run to
    run, and the model trained on it with them."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + sorted(words))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer(shipped("tokenize"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[MeanPoolClassifier, Path]:
    """A 1-layer, 32-wide MeanPoolClassifier trained until it labels the marked texts by
    their marker word alone (the filler is shared by every label)."""
    folder = tmp_path_factory.mktemp("tiny")
    texts, labels = marked(30, seed=0)
    tokenizer = whole_words(FILLER + [w for words in MARKERS.values() for w in words] + [".", ","])
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    config = bert_config(
        shipped("encoder", layers=1, hidden=32, heads=2, intermediate=64, max_length=32, dropout=0.0),
        tokenizer.get_vocab_size(),
        tokenizer.token_to_id("[PAD]"),
        num_labels=len(LABELS),
    )
    model = MeanPoolClassifier(config)
    runner = TorchClassifier(model, folder / "tokenizer.json", LABELS)
    feed = {k: torch.from_numpy(v) for k, v in runner.encoder(texts).items()}
    y = torch.tensor([LABELS.index(label) for label in labels])
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(model(**feed).logits, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    test, truth = marked(5, seed=1)
    assert (runner.logits(test).argmax(-1) == [LABELS.index(t) for t in truth]).all()
    return model, folder / "tokenizer.json"


def test_marker_words_get_the_strongest_positive_attribution(tiny):
    model, tokenizer = tiny
    texts, truth = marked(5, seed=1)
    explanations = TransformerExplainer(model, tokenizer, LABELS, n_steps=64).explain(texts)
    for e, label in zip(explanations, truth):
        assert e.label == e.predicted == label and e.probability > 0.9
        best, second = sorted((w.score for w in e.words), reverse=True)[:2]
        assert e.top(1)[0].text.rstrip(".").lower() in MARKERS[label], e
        # The marker carries the decision, not a nose ahead of the filler.
        assert best > 2 * abs(second)
        # Integrated Gradients' completeness: the words share what the label gained.
        # (At most 0.0015 of it here; 0.023 at 32 steps.)
        assert abs(e.delta) < 0.02 * abs(e.score - e.base)
        assert [w.text for w in e.words] == units(e.text) and all(w.read for w in e.words)


def test_top_k_deletion_lowers_the_probability_more_than_random_deletion(tiny):
    model, tokenizer = tiny
    texts, _ = marked(5, seed=1)
    explanations = TransformerExplainer(model, tokenizer, LABELS, n_steps=32).explain(texts)
    runner = TorchClassifier(model, tokenizer, LABELS)
    found = aopc(explanations, lambda batch: softmax(runner.logits(batch), -1), LABELS, k=5, draws=3)
    # Deleting the one marker leaves the model nothing to go on (a drop near 2/3 from
    # p ~ 1); k random words of 8 to 12 hit it with chance k/10 or so.
    assert found.aopc_top > 0.5 and found.aopc_top > found.aopc_random + 0.25
    assert found.difference.low > 0.15
    assert found.k == [1, 2, 3, 4, 5] and len(found.top) == len(found.random) == 5


def test_texts_far_from_completeness_are_attributed_again_with_more_steps(tiny):
    model, tokenizer = tiny
    texts, _ = marked(5, seed=1)

    def errors(explanations: list[Explanation]) -> np.ndarray:
        return np.array([abs(e.delta) / abs(e.score - e.base) for e in explanations])

    rough = errors(TransformerExplainer(model, tokenizer, LABELS, n_steps=8, max_delta=1e9).explain(texts))
    refined = errors(TransformerExplainer(model, tokenizer, LABELS, n_steps=8, max_delta=0.02).explain(texts))
    # This model is sure of itself (p > 0.998): 8 steps leave 11 of 15 texts past 0.02,
    # with a mean error of 0.26; 32 steps bring those to 0.023 at most.
    again = rough > 0.02
    assert again.sum() > 5 and (refined[~again] == rough[~again]).all()
    assert refined.mean() < rough.mean() / 10 and refined.max() < 0.05


def test_targets_explain_another_label_and_are_checked(tiny):
    model, tokenizer = tiny
    explainer = TransformerExplainer(model, tokenizer, LABELS, n_steps=8)
    text = "The bank said it was a new year."
    (e,) = explainer.explain([text], targets=["sport"])
    assert e.label == "sport" and e.predicted == "business" and e.probability < 0.1
    assert min(e.words, key=lambda w: w.score).text == "bank"
    with pytest.raises(KilnError, match="not the model's"):
        explainer.explain([text], targets=["weather"])
    with pytest.raises(KilnError, match="1 target labels for 2 texts"):
        explainer.explain([text, text], targets=["sport"])


def test_words_past_the_token_limit_are_unread_and_get_nothing(tiny):
    model, tokenizer = tiny
    text = "Shares " + " ".join(["the year"] * 30) + " goal match striker."
    (e,) = TransformerExplainer(model, tokenizer, LABELS, n_steps=8).explain([text])
    unread = [w for w in e.words if not w.read]
    # 32 tokens, [CLS] and [SEP] among them: the first 30 words are read.
    assert len(e.words) - len(unread) == 30 and unread[-1].text == "striker."
    assert all(w.score == 0 for w in unread) and e.label == "business"


def test_chinese_text_is_attributed_character_by_character(tiny):
    model, tokenizer = tiny
    text = "银行利润上涨，Apple发布了新的iPhone手机"
    (e,) = TransformerExplainer(model, tokenizer, LABELS, n_steps=8).explain([text])
    assert [w.text for w in e.words] == [
        "银",
        "行",
        "利",
        "润",
        "上",
        "涨",
        "，",
        "Apple",
        "发",
        "布",
        "了",
        "新",
        "的",
        "iPhone",
        "手",
        "机",
    ]
    assert all(text[w.start : w.end] == w.text for w in e.words)
    # Each character is a token of its own ([UNK] to this tokenizer, but not [PAD]), and
    # so are Apple and iPhone.
    assert all(w.score != 0 for w in e.words)


def test_pieces_are_spread_over_the_units_they_cover():
    text = "ab cd\u3000 ef"
    # A piece over "b c" (three characters, the space owned by "ab"), one over "ef", and
    # one in the whitespace after "cd".
    words = to_words(text, [(1, 4), (7, 9), (5, 7)], [3.0, 1.0, 0.5])
    assert [(w.text, w.start, w.end) for w in words] == [("ab", 0, 2), ("cd", 3, 5), ("ef", 7, 9)]
    assert [w.score for w in words] == pytest.approx([2.0, 1.5, 1.0])
    cut = to_words(text, [(0, 2)], [1.0], read_until=3)
    assert [w.read for w in cut] == [True, False, False]
    assert to_words("   ", [], []) == ()


def chinese(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Unspaced texts: 6 to 12 characters, a third of them from the label's own 10."""
    rng = np.random.default_rng(seed)
    shared = [chr(0x4E00 + i) for i in range(20)]
    texts, labels = [], []
    for k, label in enumerate(LABELS):
        own = [chr(0x4E00 + 100 * (k + 1) + i) for i in range(10)]
        for _ in range(n):
            texts.append(
                "".join(
                    str(rng.choice(own if rng.random() < 1 / 3 else shared)) for _ in range(int(rng.integers(6, 13)))
                )
            )
            labels.append(label)
    return texts, labels


def _linear(make, analyzer: str, labels: list[str] = LABELS):
    train, val = make(30, seed=0), make(10, seed=1)
    keep = [i for i, label in enumerate(train[1]) if label in labels]
    keep_val = [i for i, label in enumerate(val[1]) if label in labels]
    cfg = shipped("classical", analyzers=[analyzer], word_ngrams=[(1, 2)], char_ngrams=[(1, 3)], c=[10.0], min_df=1)
    selection = select(
        [train[0][i] for i in keep],
        [train[1][i] for i in keep],
        [val[0][i] for i in keep_val],
        [val[1][i] for i in keep_val],
        cfg,
        seed=0,
    )
    return selection, LinearExplainer.from_pipeline(selection.pipeline, selection.labels)


@pytest.mark.parametrize(
    "make, analyzer, labels",
    [(chinese, "char", LABELS), (marked, "word", LABELS), (marked, "char", ["business", "tech"])],
)
def test_linear_explainer_gives_the_pipelines_logits_and_attributions_that_add_up(make, analyzer, labels):
    selection, explainer = _linear(make, analyzer, labels)
    texts = make(4, seed=2)[0] + [
        "这是一个没有空格的句子，还有标点！",
        "tabs\tand\n\nnewlines   spaces\u3000",
        "!!!",
        "a",
    ]
    expected = selection.pipeline.decision_function(texts)
    # Stored as JSON, read back: no pickle.
    restored = LinearExplainer.from_dict(json.loads(json.dumps(explainer.to_dict())))
    logits = restored.logits(texts)
    assert np.allclose(logits if len(labels) > 2 else logits[:, 1] - logits[:, 0], expected, atol=1e-9)
    assert np.allclose(restored.proba(texts), selection.pipeline.predict_proba(texts), atol=1e-9)
    for e, row in zip(restored.explain(texts), logits):
        assert e.score == pytest.approx(row.max(), abs=1e-9) and e.base == restored.intercept[labels.index(e.label)]
        assert sum(w.score for w in e.words) + e.base == pytest.approx(e.score, abs=1e-9)


def test_linear_attributions_find_the_marker_and_pass_the_deletion_check():
    _, explainer = _linear(marked, "word")
    texts, truth = marked(5, seed=2)
    explanations = explainer.explain(texts)
    # Case is kept: a capitalised marker opening a text is a word train rarely had.
    right = [(e, t) for e, t in zip(explanations, truth) if e.predicted == t]
    assert len(right) >= 10 and all(e.top(1)[0].text.rstrip(".").lower() in MARKERS[t] for e, t in right)
    found = aopc(explanations, explainer.proba, explainer.labels, k=5, draws=3)
    assert found.aopc_top > found.aopc_random + 0.1 and found.difference.low > 0
    _, chars = _linear(chinese, "char")
    (e,) = chars.explain(["一丁七万丈三上下不与丐丑专且丕世丘丙业丛"])
    assert [w.text for w in e.words] == list("一丁七万丈三上下不与丐丑专且丕世丘丙业丛")


def test_linear_explainer_refuses_a_corrupt_file():
    _, explainer = _linear(marked, "word")
    data = explainer.to_dict()
    with pytest.raises(KilnError, match="not a Kiln linear explainer"):
        LinearExplainer.from_dict({**data, "format": "other"})
    with pytest.raises(KilnError, match="corrupt: 3 labels"):
        LinearExplainer.from_dict({**data, "coef": data["coef"][:2]})
    with pytest.raises(KilnError, match="corrupt"):
        LinearExplainer.from_dict({k: v for k, v in data.items() if k != "idf"})


def test_ece_of_known_cases():
    def two_labels(confidence: list[float], right: list[bool]) -> tuple[np.ndarray, list[int]]:
        c = np.array(confidence)
        return np.stack([c, 1 - c], 1), [0 if r else 1 for r in right]

    # Calibrated exactly: 3 of 5 right at 0.6, 4 of 5 at 0.8, all at 1.0.
    p, y = two_labels([0.6] * 5 + [0.8] * 5 + [1.0] * 5, [True] * 3 + [False] * 2 + [True] * 4 + [False] + [True] * 5)
    assert ece(p, y, bins=10) == pytest.approx(0.0, abs=1e-12)
    # Overconfident: 0.9 sure, 60% right.
    assert ece(*two_labels([0.9] * 10, [True] * 6 + [False] * 4), bins=10) == pytest.approx(0.3)
    # Two bins: 10 texts at 0.95 (half right) and 30 at 0.55 (half right): (10 * 0.45 + 30 * 0.05) / 40.
    p, y = two_labels([0.95] * 10 + [0.55] * 30, [True, False] * 20)
    assert ece(p, y, bins=15) == pytest.approx(0.15)
    # (m-1)/M < confidence <= m/M: 0.8 with 5 bins is in the fourth.
    bins = reliability(*two_labels([0.8], [True]), bins=5).bins
    assert [b.count for b in bins] == [0, 0, 0, 1, 0] and bins[3].accuracy == 1.0 and bins[3].low == pytest.approx(0.6)


def _tempered(n: int, seed: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) and logits z * temperature: a model that is
    overconfident by exactly `temperature`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(n, 4))
    y = (rng.random(n)[:, None] > np.cumsum(softmax(z, -1), -1)).sum(1)
    return z * temperature, y


def test_temperature_scaling_recovers_a_known_temperature_and_is_applied_only_when_it_helps():
    logits, y = _tempered(20_000, seed=0, temperature=3.0)
    assert fit_temperature(logits, y) == pytest.approx(3.0, rel=0.05)
    test_logits, test_y = _tempered(5_000, seed=1, temperature=3.0)
    found = calibrate(logits, y, test_logits, test_y, bins=15)
    assert found.applied and found.temperature == found.fitted_temperature
    assert found.val_ece_scaled < found.val_ece and found.test_scaled.ece < found.test.ece / 3
    # Already calibrated: T near 1, and applied only if val ECE drops.
    found = calibrate(*_tempered(20_000, seed=2, temperature=1.0), test_logits, test_y, bins=15)
    assert found.fitted_temperature == pytest.approx(1.0, rel=0.05)
    assert found.applied == (found.val_ece_scaled < found.val_ece)
    # Every val text right: NLL falls without end as T goes to 0; nothing is applied.
    separable = np.eye(4)[np.arange(40) % 4] * 5.0
    found = calibrate(separable, np.arange(40) % 4, test_logits, test_y, bins=15)
    assert found.fitted_temperature < 0.02 and not found.applied and found.temperature == 1.0


def _explanation(text: str, label: str, predicted: str, scores: list[float], probability: float = 0.8) -> Explanation:
    words = tuple(Word(w.text, w.start, w.end, s) for w, s in zip(to_words(text, [], []), scores, strict=True))
    return Explanation(text, label, probability, predicted, sum(scores), 0.0, words)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, list]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_data(self, data):
        self.text.append(data)


def _report(evil: str):
    explanations = [
        _explanation(f"Shares rose {evil}", "business", "business", [0.9, -0.2] + [0.0] * len(units(evil))),
        _explanation(f"Goal! {evil}", evil, evil, [0.5] + [0.1] * len(units(evil)), probability=0.95),
        _explanation("银行利润", "tech", "tech", [0.4, 0.3, -0.1, 0.0]),
    ]
    truth = ["business", "sport", "business"]
    logits, y = _tempered(400, seed=0, temperature=2.0)
    calibration = calibrate(logits, y, logits, y, bins=10)
    fake = lambda texts: np.full((len(texts), 3), 1 / 3)  # noqa: E731
    faithfulness = aopc(explanations[:1], fake, ["business", "sport", "tech"], k=2, draws=2)
    return summarise(
        f"Model {evil}",
        ["business", "sport", "tech", evil],
        explanations,
        truth,
        calibration,
        faithfulness,
        top_words=5,
        max_misclassified=1,
        top_confusions=5,
    )


def test_report_is_self_contained_and_escapes_everything():
    evil = '<script src="http://evil.example/x.js"></script><img src=x onerror=alert(1)> "quoted" & more'
    report = _report(evil)
    assert report.misclassified_total == 2 and len(report.misclassified) == 1
    assert report.misclassified[0].truth == "sport"  # the most confident error first
    html = render(report)
    parser = _Tags()
    parser.feed(html)
    tags = {tag for tag, _ in parser.tags}
    assert not tags & {"script", "img", "link", "iframe", "object", "embed"}
    assert tags >= {"style", "svg", "table", "span"}
    for _, attrs in parser.tags:
        for name, value in attrs:
            assert not name.startswith("on") and "http" not in (value or "") and "url(" not in (value or "")
    # The data came through as text, intact.
    assert evil in "".join(parser.text)
    # Nothing of Kiln's own markup points outside the file.
    clean = render(_report("plain words"))
    assert "http" not in clean and "<script" not in clean and "@import" not in clean and "url(" not in clean


def test_report_names_its_model_and_says_one_thing_about_the_temperature_it_serves():
    report = _report("plain words")
    c = report.calibration
    assert c.applied  # logits made at T = 2: scaling lowers val ECE
    html = render(report, [("model", "onnx_int8 <b>"), ("git", "abc123")])
    assert '<p class="meta">model: onnx_int8 &lt;b&gt; &middot; git: abc123</p>' in html
    # The served model is the scaled one: its ECE in the summary, "as served" on its diagram alone.
    assert f"<th>test ECE as served</th><td>{c.test_scaled.ece:.4f}</td>" in html
    assert "T = 1, as served" not in html and f"T = {c.fitted_temperature:.3f}, as served" in html
    unscaled = render(replace(report, calibration=replace(c, temperature=1.0)))
    assert f"<th>test ECE as served</th><td>{c.test.ece:.4f}</td>" in unscaled
    assert "Test at T = 1, as served" in unscaled


def test_report_summaries():
    text_words = [
        ("Shares rose", "business", "business", [1.0, 0.2]),
        ("shares, fell", "business", "business", [0.6, 0.1]),
        ("Goal scored", "business", "business", [0.3, 0.3]),
        ("Goal now", "sport", "sport", [0.8, -0.4]),
    ]
    explanations = [_explanation(t, label, predicted, s) for t, label, predicted, s in text_words]
    truth = ["business", "business", "sport", "sport"]
    words = class_words(explanations, truth, top=3)
    # "Shares" and "shares," are one word; the mis-explained sport text does not count.
    assert words["business"] == [
        ("shares", pytest.approx(0.8)),
        ("rose", pytest.approx(0.1)),
        ("fell", pytest.approx(0.05)),
    ]
    assert words["sport"] == [("goal", 0.8), ("now", -0.4)]
    assert confusions(truth, [e.predicted for e in explanations], top=5) == [("sport", "business", 1)]
    shaded = highlight(_explanation("a <b> c", "x", "x", [1.0, 0.0, -0.5]))
    assert shaded == '<span class="p5" title="+1.0000">a</span> &lt;b&gt; <span class="n3" title="-0.5000">c</span>'


def test_terminal_colours_only_a_terminal_that_wants_them():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert colours(io.StringIO(), {}) is None
    assert colours(Tty(), {"NO_COLOR": "1"}) is None and colours(Tty(), {"TERM": "dumb"}) is None
    assert colours(Tty(), {"COLORTERM": "truecolor"}) == "truecolor" and colours(Tty(), {}) == "256"
    e = _explanation("Shares rose sharply", "business", "tech", [0.9, -0.3, 0.1])
    plain = paint(e, None)
    assert "\x1b" not in plain and plain.splitlines()[:2] == [
        "business  p=0.800  (predicted: tech)",
        "Shares rose sharply",
    ]
    assert "for:     Shares +0.900, sharply +0.100" in plain and "against: rose -0.300" in plain
    assert "\x1b[38;2;" in paint(e, "truecolor") and "\x1b[38;5;" in paint(e, "256")
    (parsed,) = json.loads(to_json([e]))
    assert parsed["text"] == "Shares rose sharply" and parsed["words"][0] == {
        "word": "Shares",
        "start": 0,
        "end": 6,
        "score": 0.9,
        "read": True,
    }


def test_config_refuses_typos_and_stays_light():
    assert shipped("explain").aopc_k == 5
    with pytest.raises(ValidationError, match="n_step"):
        shipped("explain", n_step=8)
    code = (
        "import sys, components.explain.config; "
        "print(sorted({'torch', 'captum', 'sklearn', 'scipy', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
