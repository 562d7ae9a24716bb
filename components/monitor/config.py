"""Params of the production loop: `serve` (the inference log), `monitor` and `label`.
Plain pydantic, so reading params.yaml imports nothing heavy."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from components.data.drift import DriftConfig


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log_text: Literal["masked", "hash", "off"] = Field(
        description="what the inference log keeps of a text: masked (personal data replaced as at ingest), "
        "hash (its SHA-256: repeats can be counted, nothing read), off (only its length)"
    )
    log_dir: str = Field(min_length=1, description="daily Parquet files of the inference log")
    flush_rows: int = Field(ge=1, description="a batch of requests is written once it holds this many")
    flush_s: float = Field(gt=0, description="or at the latest this many seconds after the last write")
    retention_days: int = Field(ge=1, description="days of log kept; older days are deleted")
    max_mb: float = Field(gt=0, description="the log's largest size; the oldest files go first")


class MonitorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str = Field(description="when the `monitor` deployment runs (cron, in retrain.timezone)")
    window_days: float = Field(gt=0, description="the logged traffic a check looks at, up to now")
    min_requests: int = Field(ge=1, description="fewer texts in the window: no verdict, and no event")
    # The label shares check compares the champion's predicted labels with its training labels.
    drift: DriftConfig
    max_confidence_drop: float = Field(
        ge=0, le=1, description="largest fall of mean top probability against the champion's on val"
    )


class LabelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: str = Field(min_length=1, description="each export's queue, Label Studio tasks and manifest")
    n: int = Field(ge=1, description="texts a queue holds unless `kiln label export --n` says")
    window_days: float = Field(gt=0, description="the logged traffic a queue picks from")
    clusters: int = Field(ge=1, description="clusters of the texts a queue is spread over")
    seed: int
