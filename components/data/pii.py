"""PII masking at ingest: personal data in the text is found and replaced by a typed
placeholder (<EMAIL>, <PHONE>, ...) before anything downstream is written.

Microsoft Presidio does the work: its AnalyzerEngine runs the recognizers, its
AnonymizerEngine replaces what they find and settles overlaps. Kiln runs offline, where no
NER model can be downloaded, so the analyzer gets Presidio's NoOpNlpEngine (no spaCy model,
no tokens) and pattern recognizers only (components.data.pii_recognizers). Names, places
and organisations are therefore NOT found; list the ones you know under `deny_list`.
"""

import functools
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import regex
from pydantic import BaseModel

from components.data.pii_config import PiiConfig
from components.data.pii_recognizers import LANG, TRIGGERS, deny_regex, recognizers
from components.errors import KilnError


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
        out.update(
            {
                f"pii/{column}/{entity}": float(n)
                for column, counts in self.findings_by_column.items()
                for entity, n in counts.items()
            }
        )
        return out


@dataclass
class PiiResult:
    frame: pd.DataFrame
    report: PiiReport


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


class _Engine:
    """Presidio's analyzer and anonymizer, built once per detection config."""

    def __init__(self, cfg: PiiConfig):
        with _hidden("torch", "transformers"):
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
            from presidio_analyzer.nlp_engine import NoOpNlpEngine
            from presidio_anonymizer import AnonymizerEngine
            from presidio_anonymizer.entities import ConflictResolutionStrategy

        registry = RecognizerRegistry(supported_languages=[LANG])
        for recognizer in recognizers(cfg):
            registry.add_recognizer(recognizer)
        self.analyzer = AnalyzerEngine(
            registry=registry,
            supported_languages=[LANG],
            nlp_engine=NoOpNlpEngine(models=[{"lang_code": LANG, "model_name": "none"}]),
        )
        self.anonymizer = AnonymizerEngine()
        # Overlaps of different types are cut so the higher score keeps the characters: no
        # character is replaced twice and none is left in between.
        self.overlaps = ConflictResolutionStrategy.REMOVE_INTERSECTIONS
        self.triggers = [regex.compile(pattern) for pattern in dict.fromkeys(TRIGGERS[e] for e in cfg.entities)]
        self.triggers += [regex.compile(p.regex) for p in cfg.patterns.values()]
        self.triggers += [regex.compile(deny_regex(terms), regex.IGNORECASE) for terms in cfg.deny_list.values()]

    def mask(self, text: str) -> tuple[str, list[str]]:
        """`text` with every finding replaced by <ENTITY>, and the entity of each finding;
        `text` itself when there is none."""
        if not any(trigger.search(text) for trigger in self.triggers):
            return text, []
        found = self.analyzer.analyze(text, language=LANG)
        if not found:
            return text, []
        # Two phone numbers one space apart stay two findings.
        result = self.anonymizer.anonymize(
            text, found, conflict_resolution=self.overlaps, merge_entities_with_spaces=False
        )
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


# From this many cells of a column, the scan is shared by one process a core: Presidio's
# analyzer takes about 0.2 ms a text that holds a digit (49.6 of ingest's 74 s at 100
# times BBC's rows), and a worker's start (Presidio's import) costs seconds.
PARALLEL_MIN = 20_000


def _mask_all(values: list, detection: str) -> list[tuple[object, list[str]]]:
    """(masked text, entities found) of each value; a value that is not a string as it is."""
    engine = _engine(detection)
    return [engine.mask(value) if isinstance(value, str) else (value, []) for value in values]


def _masked(values: list, detection: str) -> list[tuple[object, list[str]]]:
    """`_mask_all` of `values`, in one process a core when there are PARALLEL_MIN or more:
    the same results in the same order either way."""
    from components.runtime.session import cores

    workers = cores()
    if len(values) < PARALLEL_MIN or workers < 2:
        return _mask_all(values, detection)
    import multiprocessing

    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    size = -(-len(values) // workers)
    try:
        parts = Parallel(n_jobs=workers)(
            delayed(_mask_all)(values[i : i + size], detection) for i in range(0, len(values), size)
        )
    finally:
        # As for the classical grid: a process that multiprocessing started (a flow run of
        # `kiln serve`) would wait at its end for joblib's idle workers.
        if multiprocessing.parent_process() is not None:
            get_reusable_executor().shutdown(wait=True)
    return [item for part in parts for item in part]


def scan(frame: pd.DataFrame, cfg: PiiConfig) -> PiiResult:
    """Find personal data in the string cells of `cfg.columns` and apply `cfg.policy`:
    mask replaces each finding with <ENTITY>, drop removes the rows that hold any, fail
    raises a KilnError with counts and row ids, off returns `frame` unscanned. Cells
    without a finding come back unchanged, byte for byte."""
    if cfg.policy == "off":
        return PiiResult(frame, PiiReport(policy="off", columns=cfg.columns, rows=len(frame)))
    missing = [column for column in cfg.columns if column not in frame.columns]
    if missing:
        raise KilnError(
            f"ingest.pii.columns: {', '.join(missing)} not in the data, whose columns are "
            f"{', '.join(map(str, frame.columns))}"
        )
    detection = _detection(cfg)
    by_column = {column: Counter(dict.fromkeys(cfg.detects, 0)) for column in cfg.columns}
    row_entities: list[set[str]] = [set() for _ in range(len(frame))]
    masked: dict[str, list] = {}  # the columns that changed
    for column in cfg.columns:
        values = frame[column].tolist()
        for i, (text, entities) in enumerate(_masked(values, detection)):
            if entities:
                values[i] = text
                by_column[column].update(entities)
                row_entities[i].update(entities)
                masked[column] = values
    flagged = [i for i, entities in enumerate(row_entities) if entities]
    report = PiiReport(
        policy=cfg.policy,
        columns=cfg.columns,
        rows=len(frame),
        rows_with_pii=len(flagged),
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


def masker(cfg: PiiConfig) -> Callable[[list[str]], list[str]]:
    """A function masking each text as `scan` does under the mask policy, whatever
    `cfg.policy` says: what the inference log keeps of a served text. Presidio loads here,
    not on the first call."""
    engine = _engine(_detection(cfg))
    return lambda texts: [engine.mask(text)[0] for text in texts]
