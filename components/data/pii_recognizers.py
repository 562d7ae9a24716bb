"""The recognizers PII masking runs: Presidio's, with patterns that also work in text
without spaces, and Kiln's own for mainland-China resident IDs and users' patterns and
deny lists.

Presidio's patterns mark their edges with `\\b` and `\\w`, and a Han character is a word
character: in "邮箱是zhang.san@example.com谢谢" there is no word boundary around the address
and Presidio's e-mail, card and IP patterns miss it. Those recognizers keep Presidio's
validation (public suffix, Luhn, `ipaddress`) but get patterns whose edges are "no ASCII
letter or digit" (or, for letters, no letter of a script that spaces its words). Presidio's
URL patterns also match any "word.tld" ("said.It", "Plus.net": 117 spans in the BBC
corpus), so a URL here needs a scheme or "www.".

Phone numbers are phonenumbers' (through Presidio's PhoneRecognizer), at its VALID
leniency, which keeps the UK's "07700 900123" that stricter grouping loses; tennis scores
("7-6 (7-5) 4-6 6-3") also parse as valid numbers, so a match with more than two
one-digit groups is dropped.
"""

import datetime
import functools
from collections.abc import Callable
from typing import Any

import regex

from components.data.pii_config import PiiConfig

# The analyzer files recognizers under a language code; these read none. "xx" is spaCy's
# code for "any language".
LANG = "xx"
# Scripts written without spaces between words, or (Hangul) with particles glued on: a
# letter of theirs next to an address or a deny-list term does not extend it.
_GLUED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
_SPACED = rf"[^\W{_GLUED}]"  # a letter, digit or '_' of a script that spaces its words
_LABEL = rf"[^\W_{_GLUED}]"
_LOCAL = rf"(?:{_SPACED}|[!#$%&'*+/=?^`{{|}}~-])"
_EMAIL = (
    rf"(?<!{_LOCAL}|\.){_LOCAL}+(?:\.{_LOCAL}+)*@(?:{_LABEL}+(?:-+{_LABEL}+)*\.)+{_LABEL}+"
    rf"(?!{_SPACED}|-)"
)
# A URL runs to a space, a quote, an angle bracket, a glued-script letter or CJK and
# full-width punctuation, and does not end in the punctuation of the sentence around it.
_URL_CHAR = rf"[^\s<>\"'{_GLUED}\u3000-\u303f\uff00-\uffef]"
_URL_END = rf"[^\s<>\"'{_GLUED}\u3000-\u303f\uff00-\uffef.,;:!?)\]}}]"
_URL_SCHEME = rf"(?<![A-Za-z0-9+.-])(?:https?|ftp)://{_URL_CHAR}*{_URL_END}"
_URL_WWW = rf"(?<![A-Za-z0-9.@/-])www\d{{0,3}}\.{_URL_CHAR}*{_URL_END}"
# Presidio's card pattern (not a 13-digit number starting with 1: a millisecond
# timestamp) with ASCII edges, 2221-2720 (Mastercard's too) and a fifth group of three for
# 19-digit UnionPay cards (6212 3456 7890 1234 569).
_CARD = (
    r"(?<![0-9A-Za-z])(?!1\d{12}(?!\d))(?:4\d{3}|5[0-5]\d{2}|2[2-7]\d{2}|6\d{3}|1\d{3}|3\d{3})"
    r"(?:[- ]?\d{3,4}){2}[- ]?\d{3,5}(?:[- ]?\d{3})?(?![0-9A-Za-z])"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"(?<![0-9A-Za-z.]){_OCTET}(?:\.{_OCTET}){{3}}(?:/[0-9]{{1,2}})?(?![0-9A-Za-z]|\.[0-9])"
# Any run of hex groups and colons with a hex digit in it; `ipaddress` then decides, so
# "10:30:45" and "3:2:1" are dropped.
_IPV6 = (
    r"(?<![0-9A-Za-z:.])(?=[0-9A-Fa-f:]*[0-9A-Fa-f])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?(?:/[0-9]{1,3})?(?![0-9A-Za-z:])"
)
# Mainland-China resident ID (GB 11643-1999): 6-digit area, birth date YYYYMMDD, 3-digit
# sequence, check character; the date and the check are verified in `cn_id_valid`.
_CN_ID = (
    r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
    r"(?![0-9A-Za-z])"
)
# ISO 7064 MOD 11-2: digit i (from the left) weighs 2^(17-i) mod 11; the weighted sum
# mod 11 picks the check character from this string.
_CN_ID_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]
_CN_ID_CHECK = "10X98765432"

# phonenumbers reads a run of digits with at most three other non-letter characters
# between them ("(+86) 138-1234-5678"), and a few characters around it: a '+', a '(', or
# a letter that rules the run out. A personal number has 7 digits or more once its area
# or country code is counted, so shorter runs (years, "2,225", "£15.8m") never reach it;
# on the BBC corpus the phone recognizer takes 0.4 s instead of 5.9 s.
_DIGIT_RUN = regex.compile(r"\d(?:[^\p{L}\d\n]{0,3}\d)*")
_PHONE_MIN_DIGITS = 7
_PHONE_MARGIN = 8
_LONE_DIGIT = regex.compile(r"(?<!\d)\d(?!\d)")

# What each built-in entity cannot be found without: a text with none of them is not analysed.
TRIGGERS = {
    "EMAIL": "@",
    "PHONE": r"\d",
    "CREDIT_CARD": r"\d",
    "IBAN": r"\d",
    "CN_RESIDENT_ID": r"\d",
    "IP_ADDRESS": r"\d|:[0-9A-Fa-f]{0,4}:",
    "URL": r"://|(?i:www)",
}


def cn_id_valid(text: str) -> bool:
    """Whether an 18-character mainland-China resident ID has a real birth date and the
    right check character."""
    if len(text) != 18 or not text[:17].isdigit():
        return False
    try:
        datetime.date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        return False
    total = sum(int(digit) * weight for digit, weight in zip(text[:17], _CN_ID_WEIGHTS))
    return text[17].upper() == _CN_ID_CHECK[total % 11]


def _phone_windows(text: str) -> list[tuple[int, int]]:
    """The stretches of `text` that could hold a phone number, merged where they touch."""
    windows: list[tuple[int, int]] = []
    for run in _DIGIT_RUN.finditer(text):
        if sum(char.isdigit() for char in run.group()) < _PHONE_MIN_DIGITS:
            continue
        start, end = max(0, run.start() - _PHONE_MARGIN), min(len(text), run.end() + _PHONE_MARGIN)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


def deny_regex(terms: list[str]) -> str:
    """One alternation of the terms, longest first. A term's edge that is a letter of a
    spaced script must not touch another such letter ("Ann" is not in "Annual"); a Han
    edge may touch anything, for Chinese has no spaces to look for."""
    parts = []
    for term in sorted(set(terms), key=len, reverse=True):
        before = rf"(?<!{_SPACED})" if regex.match(_SPACED, term[0]) else ""
        after = rf"(?!{_SPACED})" if regex.match(_SPACED, term[-1]) else ""
        parts.append(before + regex.escape(term) + after)
    return "|".join(parts)


@functools.cache
def _public_suffixes():
    import tldextract

    # The suffix list bundled with tldextract: its default downloads one from
    # publicsuffix.org (offline: tracebacks and a timeout) and caches it under ~/.cache.
    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())


def recognizers(cfg: PiiConfig) -> list:
    """The recognizers of what `cfg` detects: the built-in entities it names, then its own
    patterns, then its deny lists."""
    from presidio_analyzer import Pattern, PatternRecognizer

    built = _built_in(cfg)
    found = [built[entity](entity) for entity in cfg.entities]
    # Users' regexes run as written: case-sensitive, `.` stops at a newline.
    found += [
        PatternRecognizer(
            name, patterns=[Pattern(name, p.regex, p.score)], supported_language=LANG, global_regex_flags=0
        )
        for name, p in cfg.patterns.items()
    ]
    found += [
        PatternRecognizer(name, patterns=[Pattern(name, deny_regex(terms), 1.0)], supported_language=LANG)
        for name, terms in cfg.deny_list.items()
    ]
    return found


def _built_in(cfg: PiiConfig) -> dict[str, Callable[[str], Any]]:
    """The recognizer of each built-in entity, made for the entity's name: Presidio's, with
    the patterns and checks above."""
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UrlRecognizer,
    )

    class Email(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return _public_suffixes()(pattern_text).fqdn != ""

    class Card(CreditCardRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            # Card numbers have 13 to 19 digits; 1 in 10 resident IDs passes Luhn too, and
            # those are IDs.
            digits = sum(char.isdigit() for char in pattern_text)
            return 13 <= digits <= 19 and bool(super().validate_result(pattern_text)) and not cn_id_valid(pattern_text)

    class CnId(PatternRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return cn_id_valid(pattern_text)

    class Phone(PhoneRecognizer):
        def analyze(self, text, entities, nlp_artifacts=None):
            found = []
            for start, end in _phone_windows(text):
                for result in super().analyze(text[start:end], entities, nlp_artifacts):
                    result.start, result.end = result.start + start, result.end + start
                    if len(_LONE_DIGIT.findall(text[result.start : result.end])) <= 2:
                        found.append(result)
            return found

    def pattern(name: str, *regexes: str, score: float = 0.5) -> list:
        return [Pattern(f"{name} {i}", r, score) for i, r in enumerate(regexes)]

    return {
        "EMAIL": lambda e: Email(patterns=pattern(e, _EMAIL), supported_entity=e, supported_language=LANG),
        "PHONE": lambda e: Phone(
            supported_entity=e, supported_language=LANG, supported_regions=tuple(cfg.phone_regions), leniency=1
        ),
        "CREDIT_CARD": lambda e: Card(
            patterns=pattern(e, _CARD, score=0.3), supported_entity=e, supported_language=LANG
        ),
        "IBAN": lambda e: IbanRecognizer(supported_entity=e, supported_language=LANG),
        "IP_ADDRESS": lambda e: IpRecognizer(
            patterns=pattern(e, _IPV4, _IPV6, score=0.6), supported_entity=e, supported_language=LANG
        ),
        "URL": lambda e: UrlRecognizer(
            patterns=pattern(e, _URL_SCHEME, _URL_WWW, score=0.6), supported_entity=e, supported_language=LANG
        ),
        "CN_RESIDENT_ID": lambda e: CnId(e, patterns=pattern(e, _CN_ID), supported_language=LANG),
    }
