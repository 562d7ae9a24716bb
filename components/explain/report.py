"""The explanation report: one self-contained HTML file (inline CSS and SVG, no script, no
address outside itself) with each class's strongest words, the most frequent confusions,
every misclassified test text (up to a cap) highlighted by attribution, calibration
before and after temperature scaling, and the faithfulness check. Every text that comes
from data or params is escaped."""

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import regex

from components.explain.attribution import Explanation
from components.explain.calibration import Calibration, Reliability
from components.explain.faithfulness import Faithfulness

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


def render(report: ExplanationReport) -> str:
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(report.title)}</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(report.title)}</h1>",
        _summary(report),
        _classes(report),
        _confusions(report),
        _calibration(report.calibration),
        _faithfulness(report.faithfulness),
        _misclassified(report),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _summary(report: ExplanationReport) -> str:
    c = report.calibration
    rows = [
        ("test texts explained", str(report.texts)),
        ("misclassified", f"{report.misclassified_total} ({report.misclassified_total / max(report.texts, 1):.1%})"),
        ("test ECE of the shipped model", f"{c.test.ece:.4f}"),
        ("temperature served", f"{c.temperature:.3f}" + ("" if c.applied else " (scaling not applied)")),
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


def _calibration(c: Calibration) -> str:
    decision = (
        f"applied: it lowers val ECE from {c.val_ece:.4f} to {c.val_ece_scaled:.4f}"
        if c.applied
        else f"not applied: val ECE {c.val_ece:.4f} at T = 1 against {c.val_ece_scaled:.4f} at the fitted T"
        + (" (the fitted T is at the search's bound)" if c.val_ece_scaled < c.val_ece else "")
    )
    return (
        f"<h2>Calibration</h2><p>Reliability diagrams: each confidence bin's accuracy against its mean "
        f"confidence; a calibrated model follows the diagonal. Expected calibration error over "
        f"{len(c.test.bins)} equal-width confidence bins. "
        f"Temperature fitted on val (minimum NLL): T = {c.fitted_temperature:.3f}, {escape(decision)}.</p>"
        f'<div class="diagrams">{_diagram(c.test, "Test, as shipped (T = 1)")}'
        f"{_diagram(c.test_scaled, f'Test at T = {c.fitted_temperature:.3f}')}</div>"
    )


def _diagram(r: Reliability, title: str) -> str:
    """A reliability diagram: each bin's accuracy (bar) against its mean confidence (the
    shaded gap to it), and the diagonal of perfect calibration."""
    size, pad = 240, 36

    def x(v: float) -> float:
        return pad + v * size

    def y(v: float) -> float:
        return pad + (1 - v) * size

    shapes = []
    for b in r.bins:
        if not b.count:
            continue
        width = (b.high - b.low) * size
        shapes.append(
            f'<rect x="{x(b.low):.1f}" y="{y(b.accuracy):.1f}" width="{width:.1f}" '
            f'height="{b.accuracy * size:.1f}" fill="#4575b4" stroke="#fff"><title>confidence '
            f"{b.low:.2f}-{b.high:.2f}: {b.count} texts, accuracy {b.accuracy:.3f}, mean confidence "
            f"{b.confidence:.3f}</title></rect>"
        )
        low, high = sorted((b.accuracy, b.confidence))
        shapes.append(
            f'<rect x="{x(b.low):.1f}" y="{y(high):.1f}" width="{width:.1f}" '
            f'height="{(high - low) * size:.1f}" fill="#d73027" fill-opacity="0.35"/>'
        )
    ticks = "".join(
        f'<text x="{x(v):.1f}" y="{y(0) + 14:.1f}" text-anchor="middle">{v:g}</text>'
        f'<text x="{x(0) - 6:.1f}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>'
        for v in (0, 0.5, 1)
    )
    full = size + 2 * pad
    return (
        f'<svg width="{full}" height="{full + 10}" viewBox="0 0 {full} {full + 10}" role="img" '
        f'font-size="11" font-family="sans-serif"><title>{escape(title)}</title>'
        f'<text x="{full / 2}" y="16" text-anchor="middle" font-weight="bold">{escape(title)}, '
        f"ECE {r.ece:.4f}</text>"
        f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#888"/>'
        f'{"".join(shapes)}<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#222" '
        f'stroke-dasharray="4 3"/>{ticks}'
        f'<text x="{x(0.5)}" y="{full + 6}" text-anchor="middle">confidence</text>'
        f'<text x="10" y="{y(0.5)}" transform="rotate(-90 10 {y(0.5)})" text-anchor="middle">accuracy</text>'
        "</svg>"
    )


def _faithfulness(f: Faithfulness | None) -> str:
    if f is None:
        return ""
    rows = "".join(
        f'<tr><td class="n">{k}</td><td class="n">{t:.4f}</td><td class="n">{r:.4f}</td></tr>'
        for k, t, r in zip(f.k, f.top, f.random)
    )
    d = f.difference
    return (
        f"<h2>Faithfulness</h2><p>Drop in the predicted label's probability after deleting each text's k most "
        f"attributed words, against k random ones, over {f.texts} test texts. AOPC (mean over k): "
        f"top {f.aopc_top:.4f}, random {f.aopc_random:.4f}; difference {d.estimate:.4f} "
        f"(95% interval {d.low:.4f} to {d.high:.4f}).</p>"
        f"<table><tr><th>k</th><th>top-k drop</th><th>random-k drop</th></tr>{rows}</table>"
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


def highlight(e: Explanation) -> str:
    """The explained text as HTML, its words shaded by sign and strength (five steps
    relative to the text's strongest word) with the score as a tooltip."""
    largest = max((abs(w.score) for w in e.words if w.read), default=0.0) or 1.0
    out, at = [], 0
    for w in e.words:
        if not w.read:
            # Unread words are the text's tail, past the cut.
            out.append(f'{escape(e.text[at : w.start])}<span class="unread">{escape(e.text[w.start :])}</span>')
            return "".join(out)
        out.append(escape(e.text[at : w.start]))
        word = escape(e.text[w.start : w.end])
        level = min(5, int(5 * abs(w.score) / largest + 0.5))
        out.append(
            f'<span class="{"p" if w.score > 0 else "n"}{level}" title="{w.score:+.4f}">{word}</span>'
            if level
            else word
        )
        at = w.end
    out.append(escape(e.text[at:]))
    return "".join(out)
