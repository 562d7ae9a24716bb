"""What the text stages' params are made of: encoder and student sizes, hardware, training
loops, optimisers, class weights (each stage's section is in components.text.sections).
Plain pydantic and nothing else, so that reading `params.yaml` (which every `kiln`
command does) never pays for importing torch or Lightning."""

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from components.errors import KilnError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# balanced: each label's loss weighs train rows / (labels * its rows), scikit-learn's
# "balanced", so a 65 % majority does not drown the macro-F1 of the rest; none: plain
# cross-entropy. On balanced data the weights are about 1 either way.
ClassWeight = Literal["balanced", "none"]
CLASS_WEIGHT_HELP = "balanced: cross-entropy weighted by inverse train label frequency (for macro-F1 on skewed labels)"


class StudentConfig(Strict):
    """The sizes of a BERT encoder."""

    layers: int = Field(ge=1, le=48)
    hidden: int = Field(ge=8, le=8192)
    heads: int = Field(ge=1, le=128)
    intermediate: int = Field(ge=8)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "StudentConfig":
        if self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden})")
        return self


class EncoderConfig(StudentConfig):
    """The teacher's encoder: its sizes, and the sequence length and dropout every model
    made from it keeps."""

    layers: int = Field(ge=1, le=48)
    hidden: int = Field(ge=8, le=8192)
    heads: int = Field(ge=1, le=128)
    intermediate: int = Field(ge=8)
    max_length: int | Literal["auto"] = Field(
        description="tokens per sequence, [CLS] and [SEP] included; auto: from the train texts' lengths"
    )
    length_percentile: float = Field(gt=0, le=100, description="auto: share of train texts that fit whole")
    length_cap: int = Field(ge=16, le=4096, description="auto: the longest sequence chosen (a compute budget)")
    dropout: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _length(self) -> "EncoderConfig":
        if self.max_length != "auto" and not 16 <= self.max_length <= 4096:
            raise ValueError(f"max_length must be auto or 16..4096, got {self.max_length}")
        return self


class HardwareConfig(Strict):
    accelerator: str
    devices: int | str
    strategy: str
    precision: str = Field(description="auto: bf16-mixed where the hardware runs bf16 natively, else 32-true")
    num_nodes: int = Field(ge=1)
    loader_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        description="processes that tokenize and mask batches beside training; auto: on a GPU, half of each "
        "GPU's share of the CPU cores, up to 8 (batches pinned for asynchronous copies); on a CPU none, since its "
        "cores train"
    )
    seed: int


class LoopConfig(Strict):
    """How long one stage trains and how it checks itself."""

    max_epochs: int = Field(ge=1)
    max_steps: int = Field(ge=-1, description="-1: no step limit")
    min_steps: int = Field(
        ge=0,
        description="as many more epochs as make at least this many steps, for small data (a few hundred rows "
        "are a handful of steps an epoch, too few to leave the majority class); max_steps still caps them",
    )
    batch_size: int = Field(ge=1)
    val_every_steps: int | None = Field(ge=1, description="None: validate at each epoch's end")
    checkpoint_every: int = Field(ge=1, description="steps between resumable checkpoints")
    log_every: int = Field(ge=1)
    full_epochs_rows: int | None = Field(
        ge=1,
        description="training rows up to which every epoch runs; beyond, the steps grow as a power of the rows "
        "(steps_growth); None: every epoch at any size",
    )
    steps_growth: float = Field(
        ge=0,
        le=1,
        description="beyond full_epochs_rows, steps grow as (rows / full_epochs_rows) ** steps_growth: 0.33 gives "
        "ten times the rows about twice the steps, 1/2 about three times, 1 every epoch",
    )
    max_minutes: float | None = Field(
        gt=0, description="wall-clock budget of the fit: it stops there, with its best weights so far"
    )


def _validates(loop: LoopConfig) -> LoopConfig:
    """Refuse a loop that max_steps ends before its first validation (0 trains nothing,
    so needs none). Where validation is at each epoch's end, how many steps an epoch has
    depends on the data: that case is checked when the fit starts."""
    if loop.val_every_steps is not None and 0 < loop.max_steps < loop.val_every_steps:
        raise ValueError(
            f"val_every_steps ({loop.val_every_steps}) is more than max_steps ({loop.max_steps}): training "
            f"would end before its first validation, which early stopping and the best checkpoint need; "
            f"set val_every_steps to at most {loop.max_steps}"
        )
    return loop


class ClassifierLoop(LoopConfig):
    """The loop of a classifier's fit, which scores val texts at each check."""

    val_texts: int | None = Field(
        ge=1,
        description="val texts each check while training scores: beyond, a seeded sample keeping each label's "
        "share (at 100 times BBC's rows, checks on the whole split cost more than the steps); the stage's final "
        "scores read the whole split; None: all of them",
    )


# The loop of a classifier that early-stops on a val metric or keeps its best checkpoint by one.
MonitoredLoop = Annotated[ClassifierLoop, AfterValidator(_validates)]


def check_validates(stage: str, loop: LoopConfig, bounded: LoopConfig, epoch_steps: int) -> None:
    """Refuse, before it starts, a fit of `stage` with `epoch_steps` batches an epoch that
    would end before its first validation: `loop` as params give it, `bounded` as its
    budget for the data sets it (see training.budgeted, which counts steps as on one
    device). Lightning validates every `val_every_steps` steps, else at each epoch's end."""
    epochs = bounded.max_epochs * epoch_steps
    last = epochs if bounded.max_steps < 0 else min(bounded.max_steps, epochs)
    first = bounded.val_every_steps or epoch_steps
    if not 0 < last < first:
        return
    budget = f", {last} by the budget for rows beyond full_epochs_rows" if bounded.max_steps != loop.max_steps else ""
    at = f"val_every_steps {first}" if loop.val_every_steps else f"val_every_steps null: an epoch's end, step {first}"
    raise KilnError(
        f"{stage}.loop: training ends at step {last} (max_steps {loop.max_steps}{budget}; {loop.max_epochs} "
        f"epochs of {epoch_steps} steps), before its first validation ({at}), which early stopping and the best "
        f"checkpoint need; set {stage}.loop.val_every_steps to at most {last}"
    )


class OptimConfig(Strict):
    lr: float = Field(gt=0, le=1)
    weight_decay: float = Field(ge=0)
    warmup: float = Field(ge=0, lt=1, description="share of steps with a linear warm-up")
