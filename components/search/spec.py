"""What a trial of the search is given and what it returns: plain data, so that it
pickles to whichever process runs the trial (a local worker or a Dask worker)."""

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from components.classical.config import ClassicalConfig
from components.deploy.config import EvaluateConfig, ExportConfig, QuantizeConfig
from components.deploy.records import Parity, QuantizeReport
from components.text.config import ClassifierLoop, ClassWeight, HardwareConfig, OptimConfig, StudentConfig

# What each family's servable file is called inside a trial's folder.
MODEL_FILE = "model.onnx"


class TrialSpec(BaseModel):
    """Everything a worker needs for one trial: plain data, so it pickles to any process."""

    model_config = ConfigDict(extra="forbid")

    number: int
    family: Literal["transformer", "classical"]
    params: dict[str, Any]
    folder: Path  # where the trial writes its files
    train: Path  # parquet files of the split stage
    val: Path
    teacher_logits: Path  # .npy, a row per train text, in the train file's order
    tokenizer: Path  # the tokenize stage's tokenizer.json
    labels: dict[str, int]
    encoder: dict[str, Any]  # the teacher's BERT config: what the student keeps of it
    seed: int
    threads: int | None  # torch threads; None: those the worker has (a Dask worker's)
    deadline: float  # time.time() by which the trial must have stopped training
    hardware: HardwareConfig
    loop: ClassifierLoop
    optim: OptimConfig
    class_weight: ClassWeight  # distill's, so that trials compete with distill's and prune's students on equal terms
    recovery_epochs: int
    importance_batches: int
    export: ExportConfig
    quantize: QuantizeConfig
    classical: ClassicalConfig
    evaluate: EvaluateConfig


class Evidence(BaseModel):
    """The gates' records of a trial's servable file, on val texts: its parity with the
    model it was made from and, for a transformer, INT8 against FP32."""

    model_config = ConfigDict(extra="forbid")

    export: Parity
    quantize: QuantizeReport | None = None


class TrialResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    val_macro_f1: float
    latency_ms_p50_b1: float
    size_mb: float
    seconds: float = 0.0
    evidence: Evidence
    details: dict[str, float] = {}


def student_config(spec: TrialSpec) -> StudentConfig:
    """The sampled sizes, with the largest head count at most the sampled one that divides
    the width (64 wide with 3 heads would not split evenly)."""
    p = spec.params
    heads = max(h for h in range(1, p["heads"] + 1) if p["hidden"] % h == 0)
    return StudentConfig(layers=p["layers"], hidden=p["hidden"], heads=heads, intermediate=p["intermediate"])
