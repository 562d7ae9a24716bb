"""Explanations for a terminal: the text with its words coloured by the sign and strength
of their scores (green for the label, red against it, grey where the model did not read),
the strongest words listed in numbers beneath, or all of it as JSON."""

import json
from collections.abc import Mapping, Sequence
from typing import Literal, TextIO

from components.explain.attribution import Explanation

_FOR, _AGAINST, _NEUTRAL = (0, 200, 80), (235, 60, 50), (150, 150, 150)
_DIM, _BOLD, _RESET = "\x1b[2m", "\x1b[1m", "\x1b[0m"

Mode = Literal["truecolor", "256"]


def colours(stream: TextIO, environ: Mapping[str, str]) -> Mode | None:
    """The colours to paint with: none when `stream` is not a terminal, NO_COLOR is set
    (no-color.org) or TERM is dumb; 24-bit only where COLORTERM says the terminal has it,
    else the 256 of xterm."""
    if not stream.isatty() or environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return None
    return "truecolor" if environ.get("COLORTERM") in ("truecolor", "24bit") else "256"


def _ink(strength: float, positive: bool, mode: Mode) -> str:
    """Foreground colour from grey (weak) to full green or red (strongest in the text):
    readable on dark and light backgrounds alike."""
    end = _FOR if positive else _AGAINST
    r, g, b = (round(n + (e - n) * strength) for n, e in zip(_NEUTRAL, end))
    if mode == "truecolor":
        return f"\x1b[38;2;{r};{g};{b}m"
    # The xterm 256-colour cube: 16 + 36r + 6g + b, each in 0..5.
    return f"\x1b[38;5;{16 + 36 * round(r / 51) + 6 * round(g / 51) + round(b / 51)}m"


def paint(e: Explanation, mode: Mode | None, top: int = 5) -> str:
    """The explanation as lines for a terminal; `mode` from `colours` (None: plain text)."""
    head = f"{e.label}  p={e.probability:.3f}" + ("" if e.label == e.predicted else f"  (predicted: {e.predicted})")
    largest = max((abs(w.score) for w in e.words if w.read), default=0.0) or 1.0
    body, at = [], 0
    for w in e.words:
        gap, word = e.text[at : w.start], e.text[w.start : w.end]
        at = w.end
        if mode is None:
            body.append(gap + word)
        elif not w.read:
            body.append(f"{gap}{_DIM}{word}{_RESET}")
        else:
            strength = abs(w.score) / largest
            bold = _BOLD if strength > 0.6 else ""
            body.append(f"{gap}{bold}{_ink(strength, w.score > 0, mode)}{word}{_RESET}")
    body.append(e.text[at:])
    ranked = e.top(len(e.words))
    lines = [
        head,
        "".join(body),
        "  for:     " + ", ".join(f"{w.text.strip()} {w.score:+.3f}" for w in ranked[:top] if w.score > 0),
        "  against: " + ", ".join(f"{w.text.strip()} {w.score:+.3f}" for w in ranked[::-1][:top] if w.score < 0),
    ]
    unread = sum(not w.read for w in e.words)
    if unread:
        lines.append(f"  {unread} words past the model's token limit were not read")
    return "\n".join(lines)


def to_json(explanations: Sequence[Explanation]) -> str:
    return json.dumps([{"text": e.text, **e.to_dict()} for e in explanations], ensure_ascii=False, indent=2)
