"""Knowledge distillation: a smaller student learns from the teacher's soft targets.

loss = alpha * CE(labels, class weights) + (1 - alpha) * T^2 * KL(teacher || student at temperature T)
(Hinton et al., 2015), plus, with `hidden_weight`, the MSE between student hidden states
and the teacher's at evenly spaced layers, through a learned projection when the widths
differ (TinyBERT, Jiao et al., 2020).

A teacher with a vocabulary of its own (a pretrained checkpoint's) reads each text in its
own tokens (the batch's `teacher_input_ids`); the soft targets are per text, so they
transfer as they are, but tokens no longer pair up, so hidden states are then matched as
their masked means over each text.

Without a teacher model, the batch carries the teacher's logits (`teacher_logits`,
computed once and reused: the search stage trains many students from one teacher).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig

from components.text.classifier import MeanPoolClassifier
from components.text.config import OptimConfig, StudentConfig
from components.text.data import UNLABELED
from components.text.modules import Classifier


@dataclass(frozen=True)
class KdLoss:
    """The distillation loss's knobs, which distill, prune's recovery and the search's
    trials each take from their own params: `alpha` weighs the hard-label term, the
    soft targets are at `temperature`, and `hidden_weight` > 0 adds hidden-state matching."""

    alpha: float
    temperature: float
    hidden_weight: float


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    # The weights are the labels', so they weigh only the hard-label term, which leaves out
    # the texts without a label (UNLABELED): a batch of those alone has none.
    # The weighted mean over the labelled texts, summed and divided here: cross-entropy's
    # own mean is 0 / 0 for none, and asking whether there are any waits for a GPU.
    labelled = (labels != UNLABELED).float()
    weights = labelled if weight is None else weight[labels.clamp(min=0)] * labelled
    summed = F.cross_entropy(student, labels, weight=weight, ignore_index=UNLABELED, reduction="sum")
    hard = summed / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny)
    # KL(teacher || student) = sum p_t (log p_t - log p_s); batchmean makes it per example.
    soft = F.kl_div(
        F.log_softmax(student / temperature, -1), F.softmax(teacher / temperature, -1), reduction="batchmean"
    )
    return alpha * hard + (1 - alpha) * temperature**2 * soft


def sized_config(teacher: dict[str, Any], size: StudentConfig, tokenizer) -> BertConfig:
    """A student's config: its teacher's (`teacher`, as a dict), at the widths and depth of
    `size`, reading `tokenizer`'s vocabulary."""
    return BertConfig.from_dict(
        {
            **teacher,
            "num_hidden_layers": size.layers,
            "hidden_size": size.hidden,
            "num_attention_heads": size.heads,
            "intermediate_size": size.intermediate,
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
        }
    )


def inherited_student(teacher: MeanPoolClassifier, keep: Sequence[int], every: int = 2) -> MeanPoolClassifier:
    """A student that starts as its teacher, DistilBERT-style (Sanh et al., 2019): the
    same width, every `every`-th layer from the first, the classifier layer as it is, and
    the token embeddings cut to the rows `keep` names (its token i is the teacher's
    keep[i]; see tokenizer.cut_vocabulary). In a small model the embedding table is most
    of the size, and a vocabulary of 30,000 pieces holds many a dataset never uses."""
    layers = list(range(0, teacher.config.num_hidden_layers, every))
    renumbered = {old: new for new, old in enumerate(keep)}
    config = teacher.config.__class__.from_dict(
        {
            **teacher.config.to_dict(),
            "num_hidden_layers": len(layers),
            "vocab_size": len(keep),
            "pad_token_id": renumbered.get(teacher.config.pad_token_id, 0),
        }
    )
    student = MeanPoolClassifier(config)
    weights = {}
    for key, value in teacher.state_dict().items():
        if key == "bert.embeddings.word_embeddings.weight":
            value = value[torch.tensor(list(keep))]
        elif key.startswith("bert.encoder.layer."):
            index = int(key.split(".")[3])
            if index not in layers:
                continue
            key = key.replace(f"bert.encoder.layer.{index}.", f"bert.encoder.layer.{layers.index(index)}.", 1)
        weights[key] = value.clone()
    student.load_state_dict(weights)
    return student


def layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) hidden-state indices to match: embeddings to embeddings, then
    each student layer to the teacher layer at the same relative depth."""
    return [(0, 0)] + [(s, round(s * teacher_layers / student_layers)) for s in range(1, student_layers + 1)]


def mean_over(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each text's mean token state under its attention mask (batch, tokens, 1)."""
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class Distiller(Classifier):
    """Trains `model` (the student) against a frozen teacher, or against the teacher's
    logits in each batch when `teacher` is None, with the loss `cfg`; `class_weight`
    weighs the hard-label term; evaluates like a Classifier."""

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module | None,
        cfg: KdLoss,
        optim: OptimConfig,
        describe: dict[str, Any],
        num_labels: int,
        class_weight: torch.Tensor | None = None,
    ):
        super().__init__(model, optim, describe, num_labels, class_weight)
        self.cfg = cfg
        if teacher is None:
            if cfg.hidden_weight > 0:
                raise ValueError("hidden-state matching needs the teacher model, not only its logits")
            self.teacher, self.pairs, self.projections = None, [], nn.ModuleList()
            return
        self.teacher = teacher.eval().requires_grad_(False)
        self.pairs = layer_map(model.config.num_hidden_layers, teacher.config.num_hidden_layers)
        width_s, width_t = model.config.hidden_size, teacher.config.hidden_size
        self.projections = (
            nn.ModuleList(nn.Linear(width_s, width_t) for _ in self.pairs) if cfg.hidden_weight > 0 else nn.ModuleList()
        )

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher's dropout stays off
        return self

    def training_step(self, batch: dict, _index: int) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        cfg = self.cfg
        if self.teacher is None:
            student = self.model(**inputs)
            loss = kd_loss(
                student.logits, batch["teacher_logits"], batch["labels"], cfg.alpha, cfg.temperature, self.class_weight
            )
            self.log("train/loss", loss, batch_size=batch["labels"].shape[0])
            return loss
        own_tokens = "teacher_input_ids" not in batch
        if own_tokens and self.teacher.config.vocab_size != self.model.config.vocab_size:
            # The student's ids would index the wrong rows of the teacher's embeddings.
            raise ValueError("the teacher has a vocabulary of its own: the batch must hold its teacher_input_ids")
        theirs = (
            inputs
            if own_tokens
            else {"input_ids": batch["teacher_input_ids"], "attention_mask": batch["teacher_attention_mask"]}
        )
        matching = self.cfg.hidden_weight > 0
        with torch.no_grad():
            teacher = self.teacher(**theirs, output_hidden_states=matching)
        student = self.model(**inputs, output_hidden_states=matching)
        loss = kd_loss(student.logits, teacher.logits, batch["labels"], cfg.alpha, cfg.temperature, self.class_weight)
        if matching:
            mask = inputs["attention_mask"].unsqueeze(-1).to(student.logits.dtype)
            if own_tokens:
                hidden = sum(
                    (((proj(student.hidden_states[s]) - teacher.hidden_states[t]) ** 2) * mask).sum() / mask.sum()
                    for proj, (s, t) in zip(self.projections, self.pairs)
                ) / len(self.pairs)
            else:
                mask_t = theirs["attention_mask"].unsqueeze(-1).to(student.logits.dtype)
                hidden = sum(
                    (
                        (proj(mean_over(student.hidden_states[s], mask)) - mean_over(teacher.hidden_states[t], mask_t))
                        ** 2
                    )
                    .sum(-1)
                    .mean()
                    for proj, (s, t) in zip(self.projections, self.pairs)
                ) / len(self.pairs)
            self.log("train/hidden_loss", hidden, batch_size=batch["labels"].shape[0])
            loss = loss + self.cfg.hidden_weight * hidden
        self.log("train/loss", loss, batch_size=batch["labels"].shape[0])
        return loss

    def trained_parameters(self) -> list[nn.Parameter]:
        return super().trained_parameters() + list(self.projections.parameters())
