"""Params of the delivery stages: export, quantize, evaluate and the promotion gate.
Plain pydantic, so reading params.yaml never imports torch, ONNX or scikit-learn."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    opset: int = Field(ge=14, le=21)
    optimize: bool = Field(description="ONNX Runtime's transformer fusions (LayerNorm, GELU, attention)")
    parity_texts: int = Field(ge=1, description="test texts the parity gate compares on")
    max_abs_diff: float = Field(gt=0, description="largest |logit difference| from PyTorch allowed")


class QuantizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["dynamic", "static"]
    calibration_texts: int = Field(ge=1, description="static: val texts that calibrate activations")
    # On the whole val split; never finer than one text of it (the gate widens them to that).
    min_agreement: float = Field(ge=0, le=1, description="share of val predictions equal to FP32's")
    max_f1_drop: float = Field(ge=0, le=1, description="largest val macro-F1 loss against FP32")


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threads: int = Field(ge=1, description="intra-op threads of every runtime while timing")
    latency_texts: int = Field(ge=10, description="single texts timed per round for batch-1 latency")
    batches: int = Field(ge=2, description="batches of 32 timed per round for batch-32 latency and throughput")
    rounds: int = Field(ge=1, description="rounds in which the variants take turns")
    warmup: int = Field(ge=0, description="untimed calls before timing")
    resamples: int = Field(ge=100, description="bootstrap resamples of every interval (seeded)")
    bootstrap_seed: int


class SelectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family: Literal["any", "transformer", "classical"] = Field(
        description="the family the shipped model must come from; any: the best on val"
    )
    max_texts: int | None = Field(
        ge=1,
        description="val texts every candidate is scored on: beyond, a sample drawn with `seed` keeping each "
        "label's share (the paired intervals are then about a point wide); None: all of them",
    )
    seed: int


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(
        ge=0, le=1, description="macro-F1 the challenger may lose against the champion, at 95 % confidence"
    )
    min_macro_f1: float | Literal["baseline"] = Field(
        description="floor on test macro-F1: a number, or baseline: the lower end of the baseline's 95 % interval "
        "on the same test split (the classical model; for a classical model, the best transformer on val)",
    )
    max_latency_ms_p95_b1: float = Field(gt=0, description="budget for p95 latency at batch 1")
    max_size_mb: float = Field(gt=0, description="budget for the model file")

    @field_validator("min_macro_f1")
    @classmethod
    def _share(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not 0 <= value <= 1:
            raise ValueError(f"min_macro_f1 must be baseline or between 0 and 1, got {value}")
        return value
