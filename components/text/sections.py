"""params.yaml's sections of the transformer chain: pretrain, finetune, distill and prune,
each a recipe's knobs over the parts in components.text.config."""

from pydantic import Field

from components.text.config import (
    CLASS_WEIGHT_HELP,
    ClassWeight,
    LoopConfig,
    MonitoredLoop,
    OptimConfig,
    Strict,
    StudentConfig,
)


class AutoStart(Strict):
    """`pretrain.init: auto`: start from `checkpoint` when its vocabulary fits the train
    texts, else from scratch. The figures are over the words of the train texts (runs of
    letters and digits): English news under MiniLM's English vocabulary is about 1.07
    pieces a word and no [UNK]; Chinese without spaces about 18 pieces a run."""

    checkpoint: str
    max_unknown_share: float = Field(ge=0, le=1, description="largest share of [UNK] among the word pieces")
    max_pieces_per_word: float = Field(ge=1, description="most word pieces a word, on average")


class PretrainConfig(Strict):
    init: str | None = Field(
        description="auto (the checkpoint of `auto` when its vocabulary fits the train texts, else from scratch), "
        "all-MiniLM-L6-v2 (shipped), a local path or a hub name to start from; None: from scratch",
    )
    auto: AutoStart
    mask_prob: float = Field(gt=0, lt=1)
    unigram_ratio: float = Field(
        gt=0,
        le=1,
        description="an encoder whose val perplexity is above this share of what token frequencies alone score is "
        "reported as having learned little about context",
    )
    val_windows: int = Field(
        ge=1, description="val windows scored at each check; a fixed sample of them when there are more"
    )
    adapt_steps: int = Field(
        ge=0,
        description="domain-adaptive masked-LM steps on the train texts from a pretrained checkpoint (loop.max_steps "
        "is for an encoder trained from scratch); 0 uses the checkpoint as it is",
    )
    max_texts: int | None = Field(
        ge=1,
        description="train texts cut into windows: beyond, a seeded sample (the steps read a fraction of them, and "
        "tokenizing all of them cost more than the training at 100 times BBC's rows); None: all of them",
    )
    loop: LoopConfig
    optim: OptimConfig


class FinetuneConfig(Strict):
    label_fraction: float = Field(gt=0, le=1, description="stratified share of train labels used")
    ablation: bool = Field(description="also train the same classifier from scratch and log the gain")
    augmented: bool = Field(description="also train on the augmented copies of the train rows used")
    patience: int = Field(ge=1, description="epochs without a better val/macro_f1 before stopping")
    class_weight: ClassWeight = Field(description=CLASS_WEIGHT_HELP)
    pretrained_lr: float = Field(
        gt=0,
        le=1,
        description="learning rate of a teacher whose encoder started from a pretrained checkpoint "
        "(optim.lr is for one trained here): a pretrained encoder is finetuned gently",
    )
    pretrained_epochs: int = Field(
        ge=1, description="loop.max_epochs of a teacher whose encoder started from a pretrained checkpoint"
    )
    pretrained_min_steps: int = Field(
        ge=0, description="loop.min_steps of a teacher whose encoder started from a pretrained checkpoint"
    )
    pretrained_batch_size: int = Field(
        ge=1, description="loop.batch_size of a teacher whose encoder started from a pretrained checkpoint"
    )
    pretrained_frozen_layers: int = Field(
        ge=0,
        description="a teacher whose encoder started from a pretrained checkpoint keeps its embeddings and this "
        "many lowest layers as they are (their backward pass and optimizer steps are saved); 0 trains them all",
    )
    loop: MonitoredLoop
    optim: OptimConfig

    def pretrained(self) -> tuple[LoopConfig, OptimConfig]:
        """(loop, optim) of a teacher whose encoder starts from a pretrained checkpoint."""
        loop = self.loop.model_copy(
            update={
                "max_epochs": self.pretrained_epochs,
                "min_steps": self.pretrained_min_steps,
                "batch_size": self.pretrained_batch_size,
            }
        )
        return loop, self.optim.model_copy(update={"lr": self.pretrained_lr})


class DistillConfig(Strict):
    student: StudentConfig
    inherit: bool = Field(
        description="start the student from every other layer of its teacher, at the teacher's width, with the "
        "teacher's vocabulary cut to the tokens the train texts use (`student` sizes are then not used)",
    )
    alpha: float = Field(ge=0, le=1, description="weight of the hard-label loss")
    temperature: float = Field(gt=0)
    class_weight: ClassWeight = Field(description=f"{CLASS_WEIGHT_HELP}, in the hard-label loss")
    hidden_weight: float = Field(ge=0, description="weight of hidden-state matching; 0 turns it off")
    augmented: bool = Field(description="transfer set: train plus the augmented copies")
    max_rows: int | None = Field(
        ge=1,
        description="labelled train rows in the transfer set (with their copies, when augmented): beyond, a "
        "sample drawn with hardware.seed keeping each label's share. The teacher's answers are computed once for "
        "every transfer text and the fit's steps are bounded, so more rows cost time and memory and teach little: "
        "at 100 times BBC's rows the teacher's answers on all of them took 43 times the 1x stage and 11 GB; "
        "None: every row",
    )
    unlabeled_max: int = Field(
        ge=0,
        description="unlabelled texts (the unlabeled stage's) added to the transfer set, with the teacher's "
        "answers and no label; a seeded sample beyond; 0: none",
    )
    loop: MonitoredLoop
    optim: OptimConfig


class PruneConfig(Strict):
    head_ratio: float = Field(ge=0, lt=1, description="share of attention heads removed")
    ffn_ratio: float = Field(ge=0, lt=1, description="share of FFN neurons removed")
    importance_batches: int = Field(ge=1, description="train batches that score the heads")
    curve: list[float] = Field(
        description="ratios of the sparsity-quality curve (before recovery)",
    )
    alpha: float = Field(ge=0, le=1, description="recovery: weight of the hard-label loss")
    temperature: float = Field(gt=0)
    class_weight: ClassWeight = Field(description=f"recovery: {CLASS_WEIGHT_HELP}, in the hard-label loss")
    augmented: bool = Field(description="recovery also reads the augmented copies of the train rows")
    loop: MonitoredLoop
    optim: OptimConfig
