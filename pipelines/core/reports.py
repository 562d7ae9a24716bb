"""The reports a stage writes for people, DVC and later stages alike: the validate
stage's `validation.json` and the evaluate stage's `evaluation.json`. Written and read
through these records, like those of records.py; their keys are also what `dvc metrics`,
`dvc plots`, the README and the lineage of versions registered earlier know, so a key is
renamed here only with all of them.
"""

from typing import Any, Literal

from pydantic import model_serializer, model_validator

from pipelines.core.records import Record


class Duplicates(Record):
    rows: int  # rows that repeat an earlier text
    groups: int
    examples: list[list[str]]  # the ids of the first 20 groups, first occurrence first


class Validation(Record):
    """The expectation suite's verdict on the raw dataset (components.data.validation)."""

    success: bool
    rows: int
    rows_valid: int  # 0 when the suite failed
    rows_quarantined: int
    policy: Literal["fail", "quarantine"]
    min_chars: int  # validate.min_chars as resolved for where the rows came from
    duplicates: Duplicates
    class_shares: dict[str, float]
    expectations: list[dict[str, Any]]  # one entry per expectation, as the suite words it
    failures: list[str]  # one line per failed expectation


class ClassScores(Record):
    precision: float
    recall: float
    f1: float
    support: int


class VariantScores(Record):
    """One variant on the test split."""

    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]
    size_mb: float
    params: int
    macro_f1_ci95: tuple[float, float]
    accuracy_ci95: tuple[float, float]
    latency_ms_p50_b1: float
    latency_ms_p95_b1: float
    # None for the PyTorch variants, timed at batch 1 alone: they are not served.
    latency_ms_p50_b32: float | None = None
    latency_ms_p95_b32: float | None = None
    throughput_b32: float | None = None

    @model_serializer(mode="wrap")
    def _timed_only(self, handler) -> dict[str, Any]:
        # Left out rather than null, as the report has always had them.
        return {key: value for key, value in handler(self).items() if value is not None}


class Baseline(Record):
    name: str  # a candidate of the selection: `Selection.baseline`
    family: Literal["transformer", "classical"]
    why: str


class Paired(Record):
    """`model` against `other` on the same test texts."""

    model: str
    other: str
    delta_macro_f1: float  # model minus other
    ci95: tuple[float, float]
    p_value: float  # exact McNemar
    n_discordant: int  # texts only one of the two labels right


class FaithfulnessScores(Record):
    """AOPC of one family's attributions: deleting the top-k words against k random ones."""

    aopc_top: float
    aopc_random: float
    k: list[int]
    top: list[float]
    random: list[float]
    difference_ci95: tuple[float, float]
    texts: int


class Explained(Record):
    """The selected model's explanations and calibration (stagekit.explaining)."""

    explained: str  # the candidate explained: the selected one
    aopc_top: float
    aopc_random: float
    families: dict[str, FaithfulnessScores]
    ece: float
    ece_scaled: float
    val_ece: float
    val_ece_scaled: float
    fitted_temperature: float
    temperature: float  # what serving divides the logits by
    mean_abs_delta: float


class Evaluation(Record):
    """Every variant on the same test split, the selected model against its baseline and
    the teacher, and the explanations of the selected model."""

    test_texts: int
    threads: int  # evaluate.threads, the latencies'
    selected: str
    selected_family: Literal["transformer", "classical"]
    baseline: Baseline  # what the selected model is compared with, and promote's `baseline` floor
    excluded: dict[str, str]  # files select left out, and why: measured all the same
    variants: dict[str, VariantScores]
    comparisons: dict[str, Paired]
    ratios: dict[str, dict[str, float]]
    explain: Explained

    @model_validator(mode="after")
    def _measured(self) -> "Evaluation":
        # Register reads the selected model's scores and promote the baseline's interval.
        if missing := sorted({self.selected, self.baseline.name} - self.variants.keys()):
            raise ValueError(f"no scores for {', '.join(missing)}")
        return self

    def selected_figures(self) -> dict[str, float]:
        """The selected model's test figures under the names a pipeline run shows them."""
        chosen = self.variants[self.selected]
        return {
            "selected/test_macro_f1": chosen.macro_f1,
            "selected/test_macro_f1_lo": chosen.macro_f1_ci95[0],
            "selected/test_macro_f1_hi": chosen.macro_f1_ci95[1],
            "selected/size_mb": chosen.size_mb,
            "selected/latency_ms_p50_b1": chosen.latency_ms_p50_b1,
        }

    def markdown(self, reason: str, table: str) -> str:
        """evaluation.md: `reason` is why select chose the model, `table` the variants' as
        components.deploy.evaluation.markdown writes it."""
        baseline, explained = self.baseline, self.explain
        lines = [
            f"# Evaluation on {self.test_texts} test texts ({self.threads} thread(s))",
            "",
            f"Selected on val: {reason}.",
            *[f"\nNot a candidate, measured here only: {name}, {why}." for name, why in self.excluded.items()],
            "",
            f"Baseline: {baseline.name}, {baseline.why}; promote.min_macro_f1 `baseline` is its lower bound.",
            "",
            table,
            "## Paired comparisons",
            "",
            "| comparison | macro-F1 difference | 95 % interval | McNemar p | discordant texts |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {name} ({c.model} vs {c.other}) | {c.delta_macro_f1:+.4f} "
            f"| [{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] | {c.p_value:.3g} | {c.n_discordant} |"
            for name, c in self.comparisons.items()
        ]
        lines += [
            "",
            "An interval that holds 0 means this test split cannot tell the two apart.",
            "",
            "## Explanations",
            "",
            f"Which words drive each prediction of {explained.explained}, every misclassified test text and the "
            f"calibration: [explanations.html](explanations.html). Deleting a text's top-k attributed words lowers "
            f"the predicted label's probability by {explained.aopc_top:.4f} on average (AOPC, k = 1..5), "
            f"deleting k random words by {explained.aopc_random:.4f}. Expected calibration error on test: "
            f"{explained.ece:.4f}; temperature served: {explained.temperature:.3f}.",
        ]
        return "\n".join(lines) + "\n"
