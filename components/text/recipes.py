"""Params of each training stage: how long, how fast, and the recipe's own knobs."""

from pydantic import BaseModel, ConfigDict, Field

from components.text.modules import OptimConfig
from components.text.training import LoopConfig


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    init: str | None = Field(None, description="local path or hub name of a checkpoint to adapt; None: from scratch")
    mask_prob: float = Field(0.15, gt=0, lt=1)
    loop: LoopConfig = LoopConfig(max_epochs=1, max_steps=120, val_every_steps=60)
    optim: OptimConfig = OptimConfig(lr=5e-4)


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label_fraction: float = Field(1.0, gt=0, le=1, description="stratified share of train labels used")
    ablation: bool = Field(False, description="also train the same classifier from scratch and log the gain")
    augmented: bool = Field(True, description="also train on the augmented copies of the train rows used")
    patience: int = Field(2, ge=1, description="epochs without a better val/macro_f1 before stopping")
    loop: LoopConfig = LoopConfig(max_epochs=3)
    optim: OptimConfig = OptimConfig(lr=5e-4)
