"""LightningModules that train the plain `transformers` models; they only `self.log`
metrics named `split/metric`, and whatever logger the stage injects records them. None
goes to Lightning's progress bar: Lightning turns those values into Python numbers after
every step, and on a GPU each such number waits for the step to finish (the terminal's
progress comes from training.LineProgress, every `log_every` steps)."""

import math
from collections.abc import Iterable, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import get_linear_schedule_with_warmup

from components.text.config import ClassWeight, OptimConfig
from components.text.data import masked_positions
from components.text.model import perplexity

# The learning rate at each step, as the schedule set it (see training.build_trainer).
LR_CURVE = "train/lr_step"


def class_weights(mode: ClassWeight, labels: Sequence[int], num_labels: int) -> torch.Tensor | None:
    """The cross-entropy weight of each label id given the train rows' `labels`; None for
    "none". "balanced" is scikit-learn's: rows / (labels present * rows of the label), so
    the weight averaged over the rows is 1. A label no train row has weighs 1: the training
    loss never meets it, and the tensor stays finite."""
    if mode == "none":
        return None
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_labels).double()
    present = counts > 0
    weights = torch.ones(num_labels, dtype=torch.double)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()


class _Trained(L.LightningModule):
    def __init__(self, model: nn.Module, optim: OptimConfig, describe: dict[str, Any]):
        super().__init__()
        self.model = model
        self.optim = optim
        # What the checkpoint says about itself (config, label map, tokenizer hash...).
        self.describe = describe

    def on_fit_start(self) -> None:
        # Lightning 2 trains modules in the mode they have when fit starts, and a model from
        # from_pretrained, or one just scored, is in eval mode: dropout would stay off.
        self.train()

    def trained_parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def configure_optimizers(self):
        # Matrices get weight decay; biases and LayerNorm weights do not.
        decay = [p for p in self.trained_parameters() if p.ndim > 1]
        rest = [p for p in self.trained_parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.optim.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=self.optim.lr,
            # One kernel for every parameter's update on a GPU, as its users run AdamW there.
            fused=self.device.type == "cuda",
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = get_linear_schedule_with_warmup(optimizer, int(self.optim.warmup * total), total)
        # Lightning's LearningRateMonitor logs it under this name, a curve for each group.
        return [optimizer], [{"scheduler": schedule, "interval": "step", "name": LR_CURVE}]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        best = self.trainer.checkpoint_callback.best_model_score if self.trainer.checkpoint_callback else None
        checkpoint["kiln"] = {
            **self.describe,
            "step": self.global_step,
            "best_metric": None if best is None else float(best),
        }


def masked_lm_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """BertForMaskedLM's loss, with the vocabulary projection applied to the masked
    positions only: the same value, for about a third less compute at 15 % masking with
    an 8,000-token vocabulary (the projection is otherwise ~40 % of a small BERT's work)."""
    hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    # The masking collator's flat positions of the masked tokens; a boolean pick on a GPU
    # would wait there for the encoder to finish before the host could queue the rest.
    masked = batch.get("masked")
    if masked is None:
        masked = masked_positions(batch["labels"])
    logits = model.cls(hidden.flatten(0, 1).index_select(0, masked))
    return nn.functional.cross_entropy(logits, batch["labels"].flatten().index_select(0, masked))


def masked_lm_perplexity(model: nn.Module, batches: Iterable[dict], bf16: bool = False) -> float:
    """val/perplexity as MaskedLM's validation computes it, outside a Trainer: for a
    checkpoint before any step on these texts. `bf16`: under bf16 autocast, as a Trainer
    of bf16-mixed precision would score it."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device.type
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        found = perplexity((masked_lm_loss(model, b).item(), b["input_ids"].shape[0]) for b in batches)
    model.train(was_training)
    return found


class MaskedLM(_Trained):
    """Masked-language-model pretraining of a BertForMaskedLM. `scored` holds the last
    val check's step and val/loss (empty before the first)."""

    def __init__(self, model: nn.Module, optim: OptimConfig, describe: dict[str, Any]):
        super().__init__(model, optim, describe)
        self.scored: dict[str, float] = {}

    def training_step(self, batch: dict, _index: int) -> torch.Tensor:
        loss = masked_lm_loss(self.model, batch)
        self.log("train/loss", loss, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict, _index: int) -> None:
        loss = masked_lm_loss(self.model, batch)
        self.log("val/loss", loss, batch_size=batch["input_ids"].shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        loss = self.trainer.callback_metrics.get("val/loss")
        if loss is not None:
            self.log("val/perplexity", math.exp(min(float(loss), 50.0)), sync_dist=True)
            # The weights these figures score: a fit that ends on a val check needs no other.
            self.scored = {"step": self.global_step, "val/loss": float(loss)}


class Classifier(_Trained):
    """Sequence classification with cross-entropy, weighted by `class_weight` (see
    `class_weights`) while training; val/loss and test/loss stay plain cross-entropy, the
    same quantity whatever the weights. Macro-F1 is the metric that matters."""

    def __init__(
        self,
        model: nn.Module,
        optim: OptimConfig,
        describe: dict[str, Any],
        num_labels: int,
        class_weight: torch.Tensor | None = None,
    ):
        super().__init__(model, optim, describe)
        # A buffer follows the module to its device; not persistent: it comes from the data.
        self.register_buffer("class_weight", class_weight, persistent=False)
        self.f1 = nn.ModuleDict({s: MulticlassF1Score(num_labels, average="macro") for s in ("val", "test")})
        self.accuracy = nn.ModuleDict({s: MulticlassAccuracy(num_labels, average="micro") for s in ("val", "test")})
        # Each split's (true, predicted) label ids in its last evaluation, in batch order: a
        # stage reads its val predictions off its final scoring pass instead of a second one.
        self.seen: dict[str, tuple[list[int], list[int]]] = {}

    def loss(self, batch: dict, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return nn.functional.cross_entropy(out.logits, batch["labels"], weight=weight), out.logits

    def training_step(self, batch: dict, _index: int) -> torch.Tensor:
        loss, _ = self.loss(batch, self.class_weight)
        self.log("train/loss", loss, batch_size=batch["labels"].shape[0])
        return loss

    def _evaluate(self, split: str, batch: dict) -> None:
        loss, logits = self.loss(batch)
        preds = logits.argmax(-1)
        truth, predicted = self.seen.setdefault(split, ([], []))
        truth += batch["labels"].tolist()
        predicted += preds.tolist()
        self.f1[split].update(preds, batch["labels"])
        self.accuracy[split].update(preds, batch["labels"])
        self.log(f"{split}/loss", loss, batch_size=batch["labels"].shape[0], sync_dist=True)

    def _epoch_end(self, split: str) -> None:
        self.log(f"{split}/macro_f1", self.f1[split].compute())
        self.log(f"{split}/accuracy", self.accuracy[split].compute())
        self.f1[split].reset()
        self.accuracy[split].reset()

    def on_validation_epoch_start(self) -> None:
        self.seen["val"] = ([], [])

    def validation_step(self, batch: dict, _index: int) -> None:
        self._evaluate("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self.seen["test"] = ([], [])

    def test_step(self, batch: dict, _index: int) -> None:
        self._evaluate("test", batch)

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")
