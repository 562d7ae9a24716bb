"""Params of the search stage: its budgets, where trials run, and the space they sample.
Plain pydantic, so reading params.yaml never imports Optuna or torch."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.text.config import MonitoredLoop, OptimConfig


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatRange(_Config):
    low: float
    high: float
    log: bool

    @model_validator(mode="after")
    def _ordered(self) -> "FloatRange":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range must start above 0, got {self.low}")
        return self


class TransformerSpace(_Config):
    """The student's sizes, how it is distilled, pruned and quantized. Heads must divide
    the width; a sampled pair where they do not takes the largest count that does."""

    layers: list[int] = Field(min_length=1)
    hidden: list[int] = Field(min_length=1)
    heads: list[int] = Field(min_length=1)
    intermediate: list[int] = Field(min_length=1)
    prune_ratio: FloatRange
    temperature: FloatRange
    alpha: FloatRange
    quantization: list[Literal["dynamic", "static"]] = Field(min_length=1)

    @model_validator(mode="after")
    def _sizes(self) -> "TransformerSpace":
        # The bounds of a student's sizes (StudentConfig), checked before any trial runs.
        for name, low, high in (("layers", 1, 48), ("hidden", 8, 8192), ("heads", 1, 128), ("intermediate", 8, None)):
            if any(v < low or (high is not None and v > high) for v in getattr(self, name)):
                raise ValueError(f"{name} must lie in [{low}, {high or 'any'}], got {getattr(self, name)}")
        if self.prune_ratio.low < 0 or self.prune_ratio.high >= 1:
            raise ValueError("prune_ratio must lie in [0, 1)")
        if self.alpha.low < 0 or self.alpha.high > 1:
            raise ValueError("alpha must lie in [0, 1]")
        if self.temperature.low <= 0:
            raise ValueError("temperature must be above 0")
        return self


class ClassicalSpace(_Config):
    """The classical family's grid, as ranges: analyzer, regularisation and vocabulary."""

    analyzers: list[Literal["word", "char"]] = Field(min_length=1)
    c: FloatRange
    max_features: FloatRange


class SearchSpace(_Config):
    transformer: TransformerSpace
    classical: ClassicalSpace


class SearchConfig(_Config):
    enabled: bool = Field(description="off: the stage writes an empty front and costs nothing")
    n_trials: int = Field(ge=1, description="trials the study ends with (a resumed search counts its earlier ones)")
    timeout_s: float = Field(gt=0, description="wall-clock budget: no trial starts or trains beyond it")
    workers: int | Literal["auto"] = Field(description="trials at a time; auto: one per core")
    scheduler: str | None = Field(
        description="a Dask scheduler (tcp://host:8786): trials run on that cluster instead of local processes"
    )
    storage: str = Field(
        description="the Optuna study's database; auto: beside the tracking database (mlflow/search.db, or "
        "KILN_DB_URL's PostgreSQL server, database <name>_search)",
    )
    seed: int
    families: list[Literal["transformer", "classical"]] = Field(min_length=1)
    space: SearchSpace
    # One trial's training: distillation from the cached teacher logits, then, when it
    # prunes, a recovery of `recovery_epochs`.
    loop: MonitoredLoop
    recovery_epochs: int = Field(ge=0)
    optim: OptimConfig

    @model_validator(mode="after")
    def _workers(self) -> "SearchConfig":
        if self.workers != "auto" and self.workers < 1:
            raise ValueError(f"workers must be auto or at least 1, got {self.workers}")
        if len(set(self.families)) != len(self.families):
            raise ValueError("families lists a family twice")
        return self
