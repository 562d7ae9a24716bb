"""The explanation report: one self-contained HTML file (inline CSS and SVG, no script, no
address outside itself) with each class's strongest words, the most frequent confusions,
every misclassified test text (up to a cap) highlighted by attribution, calibration
before and after temperature scaling, and the faithfulness check. Every text that comes
from data or params is escaped. The figures that draw one result each (a highlighted
text, a reliability diagram) are in components.explain.figures."""

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import regex

from components.explain.attribution import Explanation
from components.explain.calibration import Calibration
from components.explain.faithfulness import Faithfulness
from components.explain.figures import calibration_section, faithfulness_section, highlight

# Symbols and punctuation around a word ("profits," and "(profits)" are one word);
# inside it they stay ("bank's", "e-mail").
_EDGES = regex.compile(r"^[\p{P}\p{S}\s]+|[\p{P}\p{S}\s]+$")


@dataclass(frozen=True)
class Misclassified:
    explanation: Explanation  # of the predicted label
    truth: str


@dataclass(frozen=True)
class ExplanationReport:
    title: str
    labels: list[str]
    texts: int  # test texts explained
    class_words: dict[str, list[tuple[str, float]]]  # label: (word, mean score), strongest first
    confusions: list[tuple[str, str, int]]  # (true, predicted, texts), most frequent first
    misclassified: list[Misclassified]  # most confident first, capped
    misclassified_total: int
    calibration: Calibration
    faithfulness: Faithfulness | None
    mean_abs_delta: float  # mean |delta| of the explanations: Integrated Gradients' convergence error


def word_key(unit: str) -> str:
    """What words are grouped by: case folded, punctuation and symbols at the edges gone."""
    return _EDGES.sub("", unit).casefold()


def class_words(
    explanations: Sequence[Explanation], truth: Sequence[str], top: int
) -> dict[str, list[tuple[str, float]]]:
    """For each label, the `top` words with the highest mean score over the texts of that
    label whose explanation is of that label (all of them when explained toward the true
    label; the correctly predicted ones when explained toward the predicted label).

    A word's score in a text is the mean over its occurrences there, and a text without
    it counts as 0, so a word must be both common and strong in the label's texts to
    rank high. Summing occurrences instead put "to", "in" and "of" at the top of BBC's
    business words (they occur dozens of times a text, each with a little weight); the
    mean ranks economy, state, company first."""
    totals: dict[str, Counter] = defaultdict(Counter)
    texts: Counter = Counter()
    for e, label in zip(explanations, truth, strict=True):
        if e.label != label:
            continue
        texts[label] += 1
        seen: dict[str, list[float]] = defaultdict(list)
        for word in e.words:
            if word.read and (key := word_key(word.text)):
                seen[key].append(word.score)
        for key, scores in seen.items():
            totals[label][key] += sum(scores) / len(scores)
    return {
        label: sorted(((w, s / texts[label]) for w, s in totals[label].items()), key=lambda ws: (-ws[1], ws[0]))[:top]
        for label in sorted(texts)
    }


def confusions(truth: Sequence[str], predicted: Sequence[str], top: int) -> list[tuple[str, str, int]]:
    pairs = Counter((t, p) for t, p in zip(truth, predicted, strict=True) if t != p)
    return sorted(((t, p, n) for (t, p), n in pairs.items()), key=lambda tpn: (-tpn[2], tpn[0], tpn[1]))[:top]


def summarise(
    title: str,
    labels: list[str],
    explanations: Sequence[Explanation],
    truth: Sequence[str],
    calibration: Calibration,
    faithfulness: Faithfulness | None,
    top_words: int,
    max_misclassified: int,
    top_confusions: int,
) -> ExplanationReport:
    """The report of `explanations` (one per test text, each of its predicted label) and
    the texts' true labels `truth`."""
    wrong = [Misclassified(e, t) for e, t in zip(explanations, truth, strict=True) if e.predicted != t]
    wrong.sort(key=lambda m: -m.explanation.probability)
    return ExplanationReport(
        title=title,
        labels=labels,
        texts=len(explanations),
        class_words=class_words(explanations, truth, top_words),
        confusions=confusions(truth, [e.predicted for e in explanations], top_confusions),
        misclassified=wrong[:max_misclassified],
        misclassified_total=len(wrong),
        calibration=calibration,
        faithfulness=faithfulness,
        mean_abs_delta=sum(abs(e.delta) for e in explanations) / len(explanations) if explanations else 0.0,
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.classes{display:flex;flex-wrap:wrap;gap:1.5em}.classes table{min-width:14em}
.bar{display:inline-block;height:.7em;background:#1a9850;vertical-align:middle}
.bar.neg{background:#d73027}
.text{border:1px solid #ddd;padding:.6em;margin:.4em 0 1.4em;white-space:pre-wrap;font-size:.92em}
.p1{background:rgba(26,152,80,.12)}.p2{background:rgba(26,152,80,.28)}.p3{background:rgba(26,152,80,.45)}
.p4{background:rgba(26,152,80,.62)}.p5{background:rgba(26,152,80,.8)}
.n1{background:rgba(215,48,39,.12)}.n2{background:rgba(215,48,39,.28)}.n3{background:rgba(215,48,39,.45)}
.n4{background:rgba(215,48,39,.62)}.n5{background:rgba(215,48,39,.8)}
.unread{color:#999}.meta{color:#555;font-size:.9em}
.diagrams{display:flex;flex-wrap:wrap;gap:2em}
"""


def render(report: ExplanationReport, provenance: Sequence[tuple[str, str]] = ()) -> str:
    """The report as one page; `provenance` (what, value) heads it: the model, its code, when."""
    heading = " &middot; ".join(f"{escape(k)}: {escape(v)}" for k, v in provenance)
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(report.title)}</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(report.title)}</h1>",
        f'<p class="meta">{heading}</p>' if heading else "",
        _summary(report),
        _classes(report),
        _confusions(report),
        calibration_section(report.calibration),
        faithfulness_section(report.faithfulness),
        _misclassified(report),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _summary(report: ExplanationReport) -> str:
    c = report.calibration
    rows = [
        ("test texts explained", str(report.texts)),
        ("misclassified", f"{report.misclassified_total} ({report.misclassified_total / max(report.texts, 1):.1%})"),
        ("test ECE as served", f"{c.served.ece:.4f}"),
        ("temperature served", f"{c.temperature:.3f} ({'fitted on val' if c.applied else 'scaling not applied'})"),
        ("mean |convergence error| of the attributions", f"{report.mean_abs_delta:.2e}"),
    ]
    if report.faithfulness:
        f = report.faithfulness
        rows.append(("AOPC top-k / random-k deletion", f"{f.aopc_top:.4f} / {f.aopc_random:.4f}"))
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _classes(report: ExplanationReport) -> str:
    tables = []
    for label, words in report.class_words.items():
        largest = max((abs(s) for _, s in words), default=0.0) or 1.0
        rows = "".join(
            f'<tr><td>{escape(w)}</td><td class="n">{s:+.4f}</td><td><span class="bar{" neg" if s < 0 else ""}" '
            f'style="width:{6 * abs(s) / largest:.2f}em"></span></td></tr>'
            for w, s in words
        )
        tables.append(f'<table><tr><th colspan="3">{escape(label)}</th></tr>{rows}</table>')
    return (
        '<h2>Words that speak for each class</h2><p class="meta">Mean attribution over the class\'s test texts '
        "explained as that class (a text without the word counts as 0).</p>"
        f'<div class="classes">{"".join(tables)}</div>'
    )


def _confusions(report: ExplanationReport) -> str:
    if not report.confusions:
        return "<h2>Most frequent confusions</h2><p>No test text was misclassified.</p>"
    rows = "".join(
        f'<tr><td>{escape(t)}</td><td>{escape(p)}</td><td class="n">{n}</td></tr>' for t, p, n in report.confusions
    )
    return (
        f"<h2>Most frequent confusions</h2><table><tr><th>true</th><th>predicted</th><th>texts</th></tr>{rows}</table>"
    )


def _misclassified(report: ExplanationReport) -> str:
    shown = len(report.misclassified)
    head = (
        f'<h2>Misclassified test texts</h2><p class="meta">{shown} of {report.misclassified_total}, most '
        "confident first. Green words speak for the predicted label, red ones against it; grey ones lie past "
        "the model's token limit and were not read.</p>"
    )
    items = [
        f"<p><b>true</b> {escape(m.truth)} &middot; <b>predicted</b> {escape(m.explanation.label)} "
        f'({m.explanation.probability:.3f})</p><div class="text">{highlight(m.explanation)}</div>'
        for m in report.misclassified
    ]
    return head + "".join(items)
