"""PII masking at ingest: personal data in the text is found and replaced by a typed
placeholder (<EMAIL>, <PHONE>, ...) before anything downstream is written.

Microsoft Presidio does the work: its AnalyzerEngine runs the recognizers, its
AnonymizerEngine replaces what they find and settles overlaps. Kiln runs offline, where no
NER model can be downloaded, so the analyzer gets Presidio's NoOpNlpEngine (no spaCy model,
no tokens) and pattern recognizers only. Names, places and organisations are therefore NOT
found; list the ones you know under `deny_list`.

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
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import regex
from pydantic import BaseModel

from components.data.pii_config import PiiConfig
from components.errors import KilnError

# The analyzer files recognizers under a language code; these read none. "xx" is spaCy's
# code for "any language".
_LANG = "xx"
# Scripts written without spaces between words, or (Hangul) with particles glued on: a
# letter of theirs next to an address or a deny-list term does not extend it.
_GLUED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
_SPACED = rf"[^\W{_GLUED}]"  # a letter, digit or '_' of a script that spaces its words
_LABEL = rf"[^\W_{_GLUED}]"
_LOCAL = rf"(?:{_SPACED}|[!#$%&'*+/=?^`{{|}}~-])"
_EMAIL = (rf"(?<!{_LOCAL}|\.){_LOCAL}+(?:\.{_LOCAL}+)*@(?:{_LABEL}+(?:-+{_LABEL}+)*\.)+{_LABEL}+"
          rf"(?!{_SPACED}|-)")
# A URL runs to a space, a quote, an angle bracket, a glued-script letter or CJK and
# full-width punctuation, and does not end in the punctuation of the sentence around it.
_URL_CHAR = rf"[^\s<>\"'{_GLUED}\u3000-\u303f\uff00-\uffef]"
_URL_END = rf"[^\s<>\"'{_GLUED}\u3000-\u303f\uff00-\uffef.,;:!?)\]}}]"
_URL_SCHEME = rf"(?<![A-Za-z0-9+.-])(?:https?|ftp)://{_URL_CHAR}*{_URL_END}"
_URL_WWW = rf"(?<![A-Za-z0-9.@/-])www\d{{0,3}}\.{_URL_CHAR}*{_URL_END}"
# Presidio's card pattern (not a 13-digit number starting with 1: a millisecond
# timestamp) with ASCII edges, 2221-2720 (Mastercard's too) and a fifth group of three for
# 19-digit UnionPay cards (6212 3456 7890 1234 569).
_CARD = (r"(?<![0-9A-Za-z])(?!1\d{12}(?!\d))(?:4\d{3}|5[0-5]\d{2}|2[2-7]\d{2}|6\d{3}|1\d{3}|3\d{3})"
         r"(?:[- ]?\d{3,4}){2}[- ]?\d{3,5}(?:[- ]?\d{3})?(?![0-9A-Za-z])")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"(?<![0-9A-Za-z.]){_OCTET}(?:\.{_OCTET}){{3}}(?:/[0-9]{{1,2}})?(?![0-9A-Za-z]|\.[0-9])"
# Any run of hex groups and colons with a hex digit in it; `ipaddress` then decides, so
# "10:30:45" and "3:2:1" are dropped.
_IPV6 = (r"(?<![0-9A-Za-z:.])(?=[0-9A-Fa-f:]*[0-9A-Fa-f])(?:[0-9A-Fa-f]{0,4}:){2,7}"
         r"(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?(?:/[0-9]{1,3})?(?![0-9A-Za-z:])")
# Mainland-China resident ID (GB 11643-1999): 6-digit area, birth date YYYYMMDD, 3-digit
# sequence, check character; the date and the check are verified in `cn_id_valid`.
_CN_ID = (r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
          r"(?![0-9A-Za-z])")
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
_TRIGGERS = {
    "EMAIL": "@", "PHONE": r"\d", "CREDIT_CARD": r"\d", "IBAN": r"\d", "CN_RESIDENT_ID": r"\d",
    "IP_ADDRESS": r"\d|:[0-9A-Fa-f]{0,4}:", "URL": r"://|(?i:www)",
}


class PiiReport(BaseModel):
    """What a scan found, as counts: never a value, so it can go to reports/pii.json and
    MLflow. Every entity the config detects has a count, zero included, unless the policy
    is off and nothing was scanned."""

    policy: Literal["mask", "drop", "fail", "off"]
    columns: list[str]
    rows: int
    rows_with_pii: int = 0
    rows_dropped: int = 0
    findings: dict[str, int] = {}
    rows_by_entity: dict[str, int] = {}
    findings_by_column: dict[str, dict[str, int]] = {}

    def metrics(self) -> dict[str, float]:
        """Flat metric names for MLflow: pii/rows_with_pii, pii/EMAIL, pii/text/EMAIL."""
        out = {"pii/rows_with_pii": float(self.rows_with_pii), "pii/rows_dropped": float(self.rows_dropped)}
        out.update({f"pii/{entity}": float(n) for entity, n in self.findings.items()})
        out.update({f"pii/{column}/{entity}": float(n)
                    for column, counts in self.findings_by_column.items() for entity, n in counts.items()})
        return out


@dataclass
class PiiResult:
    frame: pd.DataFrame
    report: PiiReport


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


def _deny_regex(terms: list[str]) -> str:
    """One alternation of the terms, longest first. A term's edge that is a letter of a
    spaced script must not touch another such letter ("Ann" is not in "Annual"); a Han
    edge may touch anything, for Chinese has no spaces to look for."""
    parts = []
    for term in sorted(set(terms), key=len, reverse=True):
        before = rf"(?<!{_SPACED})" if regex.match(_SPACED, term[0]) else ""
        after = rf"(?!{_SPACED})" if regex.match(_SPACED, term[-1]) else ""
        parts.append(before + regex.escape(term) + after)
    return "|".join(parts)


@contextmanager
def _hidden(*modules: str) -> Iterator[None]:
    """Imports inside see `modules` as not installed, unless they are loaded already.

    Presidio and spaCy's thinc import transformers and torch when they can, for engines
    Kiln does not use: 6 of the 8 seconds that importing Presidio takes. The modules are
    visible again afterwards; only Presidio's and thinc's own "is torch here" flags stay
    off, which matters to NER engines that Kiln never builds."""
    hidden = [name for name in modules if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))
    try:
        yield
    finally:
        for name in hidden:
            sys.modules.pop(name, None)


@functools.cache
def _public_suffixes():
    import tldextract

    # The suffix list bundled with tldextract: its default downloads one from
    # publicsuffix.org (offline: tracebacks and a timeout) and caches it under ~/.cache.
    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())


def _recognizers(cfg: PiiConfig) -> list:
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                                          IpRecognizer, PhoneRecognizer, UrlRecognizer)

    class Email(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return _public_suffixes()(pattern_text).fqdn != ""

    class Card(CreditCardRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            # Card numbers have 13 to 19 digits; 1 in 10 resident IDs passes Luhn too, and
            # those are IDs.
            digits = sum(char.isdigit() for char in pattern_text)
            return (13 <= digits <= 19 and bool(super().validate_result(pattern_text))
                    and not cn_id_valid(pattern_text))

    class CnId(PatternRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return cn_id_valid(pattern_text)

    class Phone(PhoneRecognizer):
        def analyze(self, text, entities, nlp_artifacts=None):
            found = []
            for start, end in _phone_windows(text):
                for result in super().analyze(text[start:end], entities, nlp_artifacts):
                    result.start, result.end = result.start + start, result.end + start
                    if len(_LONE_DIGIT.findall(text[result.start:result.end])) <= 2:
                        found.append(result)
            return found

    def pattern(name: str, *regexes: str, score: float = 0.5) -> list:
        return [Pattern(f"{name} {i}", r, score) for i, r in enumerate(regexes)]

    built = {
        "EMAIL": lambda e: Email(patterns=pattern(e, _EMAIL), supported_entity=e, supported_language=_LANG),
        "PHONE": lambda e: Phone(supported_entity=e, supported_language=_LANG,
                                 supported_regions=tuple(cfg.phone_regions), leniency=1),
        "CREDIT_CARD": lambda e: Card(patterns=pattern(e, _CARD, score=0.3), supported_entity=e,
                                      supported_language=_LANG),
        "IBAN": lambda e: IbanRecognizer(supported_entity=e, supported_language=_LANG),
        "IP_ADDRESS": lambda e: IpRecognizer(patterns=pattern(e, _IPV4, _IPV6, score=0.6), supported_entity=e,
                                             supported_language=_LANG),
        "URL": lambda e: UrlRecognizer(patterns=pattern(e, _URL_SCHEME, _URL_WWW, score=0.6), supported_entity=e,
                                       supported_language=_LANG),
        "CN_RESIDENT_ID": lambda e: CnId(e, patterns=pattern(e, _CN_ID), supported_language=_LANG),
    }
    recognizers = [built[entity](entity) for entity in cfg.entities]
    # Users' regexes run as written: case-sensitive, `.` stops at a newline.
    recognizers += [PatternRecognizer(name, patterns=[Pattern(name, p.regex, p.score)], supported_language=_LANG,
                                      global_regex_flags=0) for name, p in cfg.patterns.items()]
    recognizers += [PatternRecognizer(name, patterns=[Pattern(name, _deny_regex(terms), 1.0)],
                                      supported_language=_LANG) for name, terms in cfg.deny_list.items()]
    return recognizers


class _Engine:
    """Presidio's analyzer and anonymizer, built once per detection config."""

    def __init__(self, cfg: PiiConfig):
        with _hidden("torch", "transformers"):
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
            from presidio_analyzer.nlp_engine import NoOpNlpEngine
            from presidio_anonymizer import AnonymizerEngine
            from presidio_anonymizer.entities import ConflictResolutionStrategy

        registry = RecognizerRegistry(supported_languages=[_LANG])
        for recognizer in _recognizers(cfg):
            registry.add_recognizer(recognizer)
        self.analyzer = AnalyzerEngine(registry=registry, supported_languages=[_LANG],
                                       nlp_engine=NoOpNlpEngine(models=[{"lang_code": _LANG, "model_name": "none"}]))
        self.anonymizer = AnonymizerEngine()
        # Overlaps of different types are cut so the higher score keeps the characters: no
        # character is replaced twice and none is left in between.
        self.overlaps = ConflictResolutionStrategy.REMOVE_INTERSECTIONS
        self.triggers = [regex.compile(pattern) for pattern in dict.fromkeys(_TRIGGERS[e] for e in cfg.entities)]
        self.triggers += [regex.compile(p.regex) for p in cfg.patterns.values()]
        self.triggers += [regex.compile(_deny_regex(terms), regex.IGNORECASE) for terms in cfg.deny_list.values()]

    def mask(self, text: str) -> tuple[str, list[str]]:
        """`text` with every finding replaced by <ENTITY>, and the entity of each finding;
        `text` itself when there is none."""
        if not any(trigger.search(text) for trigger in self.triggers):
            return text, []
        found = self.analyzer.analyze(text, language=_LANG)
        if not found:
            return text, []
        # Two phone numbers one space apart stay two findings.
        result = self.anonymizer.anonymize(text, found, conflict_resolution=self.overlaps,
                                           merge_entities_with_spaces=False)
        return result.text, [item.entity_type for item in result.items]


@functools.lru_cache(maxsize=4)
def _engine(detection: str) -> _Engine:
    return _Engine(PiiConfig.model_validate_json(detection))


def _detection(cfg: PiiConfig) -> str:
    """The part of the config that shapes the engine, as a cache key."""
    return cfg.model_dump_json(include={"entities", "phone_regions", "patterns", "deny_list"})


def _sample(frame: pd.DataFrame, rows: list[int], cfg: PiiConfig, n: int = 5) -> str:
    """A few flagged rows by id, or by position where the ids are scanned themselves (an
    id may be the very e-mail address that was found)."""
    if "id" in frame.columns and "id" not in cfg.columns:
        return ", ".join(str(frame["id"].iat[i]) for i in rows[:n])
    return ", ".join(f"row {i}" for i in rows[:n])


def scan(frame: pd.DataFrame, cfg: PiiConfig) -> PiiResult:
    """Find personal data in the string cells of `cfg.columns` and apply `cfg.policy`:
    mask replaces each finding with <ENTITY>, drop removes the rows that hold any, fail
    raises a KilnError with counts and row ids, off returns `frame` unscanned. Cells
    without a finding come back unchanged, byte for byte."""
    if cfg.policy == "off":
        return PiiResult(frame, PiiReport(policy="off", columns=cfg.columns, rows=len(frame)))
    missing = [column for column in cfg.columns if column not in frame.columns]
    if missing:
        raise KilnError(f"ingest.pii.columns: {', '.join(missing)} not in the data, whose columns are "
                        f"{', '.join(map(str, frame.columns))}")
    engine = _engine(_detection(cfg))
    by_column = {column: Counter(dict.fromkeys(cfg.detects, 0)) for column in cfg.columns}
    row_entities: list[set[str]] = [set() for _ in range(len(frame))]
    masked: dict[str, list] = {}  # the columns that changed
    for column in cfg.columns:
        values = frame[column].tolist()
        for i, value in enumerate(values):
            text, entities = engine.mask(value) if isinstance(value, str) else (value, [])
            if entities:
                values[i] = text
                by_column[column].update(entities)
                row_entities[i].update(entities)
                masked[column] = values
    flagged = [i for i, entities in enumerate(row_entities) if entities]
    report = PiiReport(
        policy=cfg.policy, columns=cfg.columns, rows=len(frame), rows_with_pii=len(flagged),
        findings={entity: sum(counts[entity] for counts in by_column.values()) for entity in cfg.detects},
        rows_by_entity={entity: sum(entity in entities for entities in row_entities) for entity in cfg.detects},
        findings_by_column={column: dict(counts) for column, counts in by_column.items()},
    )
    if cfg.policy == "fail" and flagged:
        kinds = ", ".join(f"{entity} in {n} row{'s' * (n != 1)}" for entity, n in report.rows_by_entity.items() if n)
        raise KilnError(
            f"ingest: personal data in {len(flagged)} of {len(frame)} rows ({kinds}), e.g. "
            f"{_sample(frame, flagged, cfg)}; set ingest.pii.policy to mask (replace it with placeholders) "
            f"or drop (remove those rows), or clean the source"
        )
    if cfg.policy == "drop":
        report.rows_dropped = len(flagged)
        return PiiResult(frame[[not entities for entities in row_entities]].reset_index(drop=True), report)
    if masked:
        frame = frame.assign(**{column: pd.Series(values, index=frame.index) for column, values in masked.items()})
    return PiiResult(frame, report)
