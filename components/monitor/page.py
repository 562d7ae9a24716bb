"""The monitor report as one self-contained HTML page (reports/monitor.html): the verdict,
each check with its value and limit, and the predicted label shares beside the training
label shares."""

from html import escape

from components.data.validation_page import STYLE, _row, _verdict
from components.monitor.watch import MonitorReport


def render(report: MonitorReport, training_shares: dict[str, float]) -> str:
    title = f"Monitor of {report.model} version {report.version}"
    verdict = (
        '<span class="fail">no verdict</span>'
        if report.skipped
        else ('<span class="fail">drift</span>' if report.failed else '<span class="pass">no drift</span>')
    )
    summary = [
        ("window (UTC)", f"{report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M}"),
        ("logged texts answered by this version", str(report.requests)),
        ("mean top probability", "-" if report.mean_confidence is None else f"{report.mean_confidence:.3f}"),
    ]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}: {verdict}</h1>",
        f"<p>{escape(report.headline)}</p>",
        "<table>" + "".join(_row([escape(k), escape(v)]) for k, v in summary) + "</table>",
    ]
    if report.checks:
        parts.append("<h2>Checks</h2><table>")
        parts.append(_row(["check", "result", "value", "limit", "detail"], header=True))
        parts += [
            _row([escape(c.name), _verdict(c.passed), f"{c.value:.4f}", f"{c.threshold:g}", escape(c.detail)])
            for c in report.checks
        ]
        parts.append("</table>")
    if report.notes:
        parts.append("<h2>Not checked</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in report.notes) + "</ul>")
    if report.prediction_shares:
        parts.append("<h2>Labels</h2><table>")
        parts.append(_row(["label", "share of predictions", "share in training"], header=True))
        for label in sorted(set(training_shares) | set(report.prediction_shares)):
            cells = [report.prediction_shares.get(label, 0.0), training_shares.get(label, 0.0)]
            parts.append(_row([escape(label), *(f"{share:.1%}" for share in cells)]))
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
