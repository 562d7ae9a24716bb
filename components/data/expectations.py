"""The expectations of the dataset's suite (Great Expectations 1.x), each with the words
a failure is explained in: what broke, and the params key or the fix that mends it."""

from typing import TYPE_CHECKING, Any

from components.data.schema import COLUMNS

if TYPE_CHECKING:
    from components.data.validation import ValidateConfig

# U+FFFD is what a lossy decode leaves behind; C0 controls other than tab, newline and
# carriage return never occur in real text and mark binary junk or a wrong encoding.
UNDECODABLE = r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f]"


def _meta(
    fix: str, what: str | None = None, row: bool = False, explain: str | None = None, **params: Any
) -> dict[str, Any]:
    """What a failure line says beyond the expectation: `fix` (the bound, the params key
    and what to do), `params` (the validate.* keys and values it checks), `explain` (a
    detail computed from the data: "labels", "duplicates" or "shares")."""
    meta: dict[str, Any] = {"fix": fix, "params": {f"validate.{k}": v for k, v in params.items()}}
    if what:
        meta["what"] = what
    if row:
        meta["level"] = "row"
    if explain:
        meta["explain"] = explain
    return meta


def suites(cfg: "ValidateConfig") -> tuple[list, list, list]:
    """(row-level, table-level, class-share) expectations for a config whose `min_chars`
    is a number. Built on call, not at import: importing great_expectations takes seconds."""
    import great_expectations.expectations as gxe

    # What a failure line says of the rows that broke a row-level expectation.
    fix_rows = (
        "fix these rows, or set validate.policy: quarantine to set them aside"
        if cfg.policy == "fail"
        else "fix these rows (the quarantine takes at most validate.max_quarantine_share of them)"
    )
    rows = _texts(gxe, cfg, fix_rows) + _labels(gxe, cfg, fix_rows)
    return rows, _table(gxe, cfg), _shares(gxe, cfg)


def _texts(gxe, cfg: "ValidateConfig", fix_rows: str) -> list:
    """Expectations of a row's id and text: present, within the length bounds, decodable."""
    lo, hi = cfg.min_chars, cfg.max_chars
    return [
        gxe.ExpectColumnValuesToNotBeNull(
            column="id",
            meta=_meta(
                "rows without an id: fill in the file's ingest.file.id_column in these rows, or set "
                "ingest.file.id_column: null to number rows by file and line",
                row=True,
            ),
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="text", meta=_meta(f"rows without a text: {fix_rows}", row=True)),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="text",
            regex=r"^\s*$",
            meta=_meta(f"texts that are only whitespace: {fix_rows}", "empty text", row=True),
        ),
        # Two expectations, not one with both bounds, so each failure names the bound it broke.
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="text",
            min_value=lo,
            meta=_meta(
                f"texts shorter than validate.min_chars={lo} characters: lower validate.min_chars "
                f"(1 accepts any non-empty text), {fix_rows}",
                "too short",
                row=True,
                min_chars=lo,
            ),
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="text",
            max_value=hi,
            meta=_meta(
                f"texts longer than validate.max_chars={hi} characters: raise validate.max_chars, {fix_rows}",
                "too long",
                row=True,
                max_chars=hi,
            ),
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="text",
            regex=UNDECODABLE,
            meta=_meta(
                f"texts with U+FFFD or control characters, the marks of a wrong encoding: check "
                f"ingest.file.encoding, or {fix_rows}",
                "undecodable text",
                row=True,
            ),
        ),
    ]


def _labels(gxe, cfg: "ValidateConfig", fix_rows: str) -> list:
    """Expectations of a row's label: present, and one of validate.labels."""
    labels = ", ".join(cfg.labels)
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="label", meta=_meta(f"rows without a label: {fix_rows}", row=True)),
        gxe.ExpectColumnValuesToBeInSet(
            column="label",
            value_set=cfg.labels,
            meta=_meta(
                f"add them to validate.labels (now [{labels}]), {fix_rows}",
                row=True,
                explain="labels",
                labels=cfg.labels,
            ),
        ),
    ]


def _table(gxe, cfg: "ValidateConfig") -> list:
    """Expectations of the table as a whole: its columns, unique ids, the duplicate rate."""
    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(COLUMNS),
            exact_match=True,
            meta=_meta(
                f"the dataset must have exactly the columns {', '.join(COLUMNS)}, as ingest writes them: rerun ingest"
            ),
        ),
        *(
            gxe.ExpectColumnValuesToBeOfType(
                column=column,
                type_="str",
                meta=_meta(f"the {column} column must hold text: make these values text in the source file"),
            )
            for column in ("id", "text", "label", "source")
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="id",
            meta=_meta(
                "ids must be unique: fix or drop the rows with duplicate ids in the file's ingest.file.id_column, "
                "or set ingest.file.id_column: null to number rows by file and line"
            ),
        ),
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
            column="text",
            min_value=1 - cfg.max_duplicate_rate,
            meta=_meta(
                f"validate.max_duplicate_rate={cfg.max_duplicate_rate} allows at most that share of repeated texts: "
                f"remove the duplicates or raise validate.max_duplicate_rate",
                "duplicate-text rate",
                explain="duplicates",
                max_duplicate_rate=cfg.max_duplicate_rate,
            ),
        ),
    ]


def _shares(gxe, cfg: "ValidateConfig") -> list:
    """The class balance, checked on a table of label shares."""
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="share",
            min_value=cfg.min_class_share,
            max_value=cfg.max_class_share,
            meta=_meta(
                "add rows of the labels that are too rare (or drop some of those too common), or change "
                "validate.min_class_share / validate.max_class_share",
                "class balance",
                explain="shares",
                min_class_share=cfg.min_class_share,
                max_class_share=cfg.max_class_share,
            ),
        )
    ]
