"""The figures of the explanation report, each drawing one result as HTML or inline SVG:
a text shaded by its attribution, calibration's reliability diagrams, and the
faithfulness table. Their classes are styled by the report's stylesheet; every text
that comes from data or params is escaped."""

from html import escape

from components.explain.attribution import Explanation
from components.explain.calibration import Calibration, Reliability
from components.explain.faithfulness import Faithfulness


def calibration_section(c: Calibration) -> str:
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
        f'<div class="diagrams">{_diagram(c.test, "Test at T = 1" + ("" if c.applied else ", as served"))}'
        f"{_diagram(c.test_scaled, f'Test at T = {c.fitted_temperature:.3f}' + (', as served' if c.applied else ''))}"
        "</div>"
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


def faithfulness_section(f: Faithfulness | None) -> str:
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
