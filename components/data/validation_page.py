"""The validation report as one self-contained HTML page: every expectation with its
result, the row counts, label shares and duplicates. Great Expectations' Data Docs load
their scripts and styles from CDNs and show an empty index offline; this page needs
nothing but itself."""

from html import escape
from typing import Any

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .35em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.pass { color: #176b2c; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
code { font-size: .95em; }
"""


def _row(cells: list[str], header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{cell}</{tag}>" for cell in cells) + "</tr>"


def _verdict(passed: bool) -> str:
    return '<span class="pass">passed</span>' if passed else '<span class="fail">failed</span>'


def _observed(entry: dict[str, Any]) -> str:
    """What the expectation found, as the report words it."""
    if "unexpected_count" in entry:
        found = f"{entry['unexpected_count']} unexpected ({entry.get('unexpected_percent', 0):.2f} %)"
        samples = entry.get("samples") or []
        return escape(found + (": " + ", ".join(map(str, samples[:5])) if samples else ""))
    observed = entry.get("observed", "")
    return escape(f"{observed:.4f}" if isinstance(observed, float) else str(observed))


def render(report: dict[str, Any], source: str) -> str:
    """The page for a `Validation` report (as its JSON) of the rows read from `source`."""
    failed = [e for e in report["expectations"] if not e["success"]]
    summary = [
        ("rows", report["rows"]),
        ("valid rows", report["rows_valid"]),
        ("quarantined rows", report["rows_quarantined"]),
        ("policy", report["policy"]),
        ("shortest text allowed", f"{report['min_chars']} characters"),
        ("rows repeating an earlier text", report["duplicates"]["rows"]),
        ("expectations failed", f"{len(failed)} of {len(report['expectations'])}"),
    ]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Validation of {escape(source)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Validation of <code>{escape(source)}</code>: {_verdict(report['success'])}</h1>",
        "<table>" + "".join(_row([escape(k), escape(str(v))]) for k, v in summary) + "</table>",
    ]
    if report["failures"]:
        parts.append("<h2>Why it failed</h2><ul>")
        parts += [f"<li>{escape(line)}</li>" for line in report["failures"]]
        parts.append("</ul>")
    parts.append("<h2>Expectations</h2><table>" + _row(["expectation", "result", "observed"], header=True))
    parts += [
        _row([f"<code>{escape(e['expectation'])}</code>", _verdict(e["success"]), _observed(e)])
        for e in report["expectations"]
    ]
    parts.append("</table><h2>Label shares</h2><table>" + _row(["label", "share"], header=True))
    parts += [_row([escape(label), f"{share:.2%}"]) for label, share in report["class_shares"].items()]
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"
