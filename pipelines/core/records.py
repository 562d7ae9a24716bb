"""Typed records that stages hand to later stages: a model's own account of itself
(`kiln.json`), the parity measurements of export and quantize (their records are the
components' own, which the search's trials make too), the registration and the promotion
decision. Each is written and read through its model, so a field a reader expects and a
writer forgot is an error where it happens, not a KeyError three stages on.
"""

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from components.deploy.records import Parity
from components.errors import KilnError
from pipelines.core.io import atomic

Record = TypeVar("Record", bound=BaseModel)


def write_record(record: BaseModel, path: Path) -> None:
    with atomic(path) as tmp:
        tmp.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_record(cls: type[Record], path: Path, stage: str, maker: str) -> Record:
    try:
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as err:
        raise KilnError(
            f"{stage}: {path} is not a valid {cls.__name__} ({str(err).splitlines()[0]}); rerun the {maker} stage"
        ) from None


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def write(self, path: Path) -> None:
        write_record(self, path)

    @classmethod
    def read(cls: type[Record], path: Path, stage: str, maker: str) -> Record:
        return read_record(cls, path, stage, maker)


class ModelCard(Record):
    """`kiln.json` beside a model's weights: where it came from and how it scored."""

    stage: Literal["pretrain", "finetune", "distill", "prune", "search"]
    labels: dict[str, int] = {}  # label -> output index; empty for the masked-LM encoder
    tokenizer: str  # sha256 of the tokenizer.json it was trained with, or the model it came from
    start: str | None = None  # the pretrained checkpoint its encoder started from; None: from scratch
    params: dict[str, Any]  # every params section the stage read, as it read them
    data: dict[str, str]  # DVC's hash of each input
    metrics: dict[str, float]
    parents: dict[str, dict[str, float]] = {}  # metrics of the models it was made from, by role
    # Tokens per text it reads: its position table's size, as `save_model` finds it. None
    # only on a card an earlier Kiln wrote; `load_model` fills it from the model's config.
    max_length: int | None = None

    @property
    def label_list(self) -> list[str]:
        return [label for label, _ in sorted(self.labels.items(), key=lambda item: item[1])]


class ExportReport(Record):
    models: dict[str, Parity]  # by exported file: pruned (the one shipped), teacher
    max_abs_diff: float  # the bound the gate held them to


class FrontMember(Record):
    """A model of the search's Pareto front: a candidate of the select stage."""

    trial: int
    family: Literal["transformer", "classical"]
    file: str  # the servable ONNX file, relative to the repository
    tokenizer: str | None
    source: str  # what explains it: its PyTorch model folder, or the classical explainer.json
    params: dict[str, Any]
    val_macro_f1: float
    latency_ms_p50_b1: float
    size_mb: float
    # Its parity with the model it was made from (export) and INT8 against FP32 (quantize),
    # on val texts: what the promotion gate holds to today's bounds.
    evidence: dict[str, Any]


class Front(Record):
    study: str | None  # None: the search is off
    storage: str | None
    members: dict[str, FrontMember]  # by candidate name, search_<trial>


class Candidate(Record):
    """One servable file as the select stage measured it on val."""

    family: Literal["transformer", "classical"]
    file: str  # relative to the repository
    tokenizer: str | None  # the transformer's tokenizer.json; a classical file needs none
    val_macro_f1: float
    val_macro_f1_ci95: tuple[float, float]
    val_accuracy: float
    latency_ms_p95_b1: float
    size_mb: float
    within_budgets: bool
    tied_with_best: bool


class Selection(Record):
    family: Literal["any", "transformer", "classical"]  # select.family
    selected: str
    reason: str
    val_texts: int
    budgets: dict[str, float]
    candidates: dict[str, Candidate]
    excluded: dict[str, str] = {}  # files left out of the candidates, and why

    @property
    def chosen(self) -> Candidate:
        return self.candidates[self.selected]

    @property
    def baseline_family(self) -> str:
        """The other family: the baseline's, whether or not select kept the baseline."""
        return "transformer" if self.chosen.family == "classical" else "classical"

    def baseline(self) -> tuple[str, str]:
        """(candidate, why): what the selected model is compared with and its floor is
        drawn from. A transformer is held to the classical model; a classical one to the
        other family's best on val, since its own family's best is usually itself, or to the
        FP32 student when select left out every transformer (evaluate measures it anyway)."""
        if self.chosen.family == "transformer":
            return "classical", "the selected model is a transformer, so the baseline is the classical model"
        others = {name: c.val_macro_f1 for name, c in self.candidates.items() if c.family == "transformer"}
        if not others:
            return "onnx_fp32", (
                "the selected model is classical and no transformer candidate learned anything, so the baseline "
                "is the FP32 student"
            )
        return max(others, key=others.__getitem__), (
            "the selected model is classical, so the baseline is the best transformer candidate on val"
        )


class Registration(Record):
    model_name: str
    version: str
    run_id: str | None
    model_uri: str
    reused: bool  # an earlier version already held these exact files
    tags: dict[str, str]


class Promotion(Record):
    model_name: str
    version: str
    promoted: bool
    champion: str | None
    reasons: list[str]
    metrics: dict[str, float]
    # Set when the test split is too small to tell a loss of promote.tolerance from noise.
    resolution: str | None = None
    already: bool = False  # the version was champion before this decision

    def headline(self) -> str:
        """One line for the end of a run: what happened to the new version, and why."""
        if self.already:
            return f"version {self.version} of '{self.model_name}' is the champion already"
        if self.promoted:
            return f"version {self.version} of '{self.model_name}' promoted to champion"
        failed = [r.removeprefix("FAIL ") for r in self.reasons if r.startswith("FAIL")]
        kept = f"champion stays version {self.champion}" if self.champion else "no champion yet"
        return f"version {self.version} of '{self.model_name}' registered, not promoted ({kept}): " + "; ".join(failed)
