"""Params of PII masking at ingest (`ingest.pii`). Plain pydantic and the `regex` module,
so reading params.yaml never imports Presidio or spaCy; phonenumbers (a 0.1 s import) only
checks `phone_regions` where params.yaml sets them."""

from typing import Any, Literal, get_args

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Entity = Literal["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "URL", "CN_RESIDENT_ID"]
BUILT_IN: tuple[Entity, ...] = get_args(Entity)
# A user's entity name becomes its placeholder (<EMPLOYEE_ID>) and a report key.
_ENTITY_NAME = regex.compile(r"[A-Z][A-Z0-9_]{0,39}")


def _entity_name(name: str) -> None:
    if not _ENTITY_NAME.fullmatch(name):
        raise ValueError(
            f"'{name}' is not an entity name: use capitals, digits and '_', starting with a "
            f"capital (e.g. EMPLOYEE_ID); it becomes the placeholder <{name}>"
        )


def _no_repeats(values: list[str]) -> list[str]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"lists {', '.join(repeated)} more than once")
    return values


class PiiPattern(BaseModel):
    model_config = ConfigDict(extra="forbid")

    regex: str = Field(description="a Python regular expression, case-sensitive unless it says (?i)")
    score: float = Field(
        1.0,
        gt=0,
        le=1,
        description="where two findings overlap, the higher score keeps "
        "the characters; the built-in checksummed ones score 1",
    )


class PiiConfig(BaseModel):
    """What counts as personal data and what happens to a row that holds some.

    `ingest.pii: off` (or mask, drop, fail) is short for `ingest.pii: {policy: off}`."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["mask", "drop", "fail", "off"] = Field(
        "mask",
        description="mask: replace each finding with <ENTITY>; drop: remove rows holding any; "
        "fail: stop ingest, naming counts and row ids; off: no scan",
    )
    entities: list[Entity] = Field(
        default_factory=lambda: list(BUILT_IN), description="the built-in recognizers to run"
    )
    phone_regions: list[str] = Field(
        default_factory=lambda: ["CN", "GB", "US"],
        description="regions (ISO 3166 codes) whose national formats count as phone numbers; numbers "
        "written with a country code (+44 ..., 0086 ...) are found whatever is listed",
    )
    patterns: dict[str, PiiPattern] = Field(
        default_factory=dict, description="entity name -> regex (or {regex, score}), e.g. EMPLOYEE_ID: 'EMP-\\d{6}'"
    )
    deny_list: dict[str, list[str]] = Field(
        default_factory=dict,
        description="entity name -> terms always masked (case-insensitive, whole "
        "words in spaced scripts); a bare list means entity DENY_LIST",
    )
    columns: list[str] = Field(
        default_factory=lambda: ["text"], min_length=1, description="the frame columns scanned (their text cells)"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"policy": data} if isinstance(data, (str, bool)) else data

    @field_validator("policy", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 (PyYAML's safe_load) reads a bare `off` as false.
        return "off" if value is False else value

    @field_validator("entities", "columns")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        return _no_repeats(values)

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, values: list[str]) -> list[str]:
        import phonenumbers  # light (no Presidio, no spaCy), and only when regions are set

        unknown = [v for v in values if v not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(
                f"{', '.join(map(repr, unknown))}: not a region phonenumbers knows; use "
                f"ISO 3166 codes in capitals such as CN, GB, US, DE, IN"
            )
        return _no_repeats(values)

    @field_validator("patterns", mode="before")
    @classmethod
    def _bare_regex(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: {"regex": p} if isinstance(p, str) else p for name, p in value.items()}
        return value

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: dict[str, PiiPattern]) -> dict[str, PiiPattern]:
        for name, pattern in value.items():
            _entity_name(name)
            try:
                compiled = regex.compile(pattern.regex)
            except regex.error as err:
                raise ValueError(f"{name}: '{pattern.regex}' is not a valid regex: {err}") from None
            if compiled.match(""):
                raise ValueError(
                    f"{name}: '{pattern.regex}' matches the empty string, so it would "
                    f"mask nothing or everything; make it match at least one character"
                )
        return value

    @field_validator("deny_list", mode="before")
    @classmethod
    def _bare_list(cls, value: Any) -> Any:
        return {"DENY_LIST": value} if isinstance(value, list) else value

    @field_validator("deny_list")
    @classmethod
    def _terms(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, terms in value.items():
            _entity_name(name)
            if not terms or any(not term.strip() for term in terms):
                raise ValueError(f"{name}: give at least one term, none of them blank")
        return value

    @property
    def detects(self) -> list[str]:
        """Every entity type a scan can report, built-in ones first."""
        return list(dict.fromkeys([*self.entities, *self.patterns, *self.deny_list]))
