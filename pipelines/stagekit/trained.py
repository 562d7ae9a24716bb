"""The metrics block of the training stages (finetune, distill, prune): how the model a
stage trained scores, what it trained on and how large it is, and, for a model made from
another, how much of that one's test macro-F1 it keeps."""

from components.text.model import count_parameters
from pipelines.stagekit.training import Scores

# What `training.score` measured on the whole of val and test.
SCORES = ("val/macro_f1", "val/accuracy", "test/macro_f1", "test/accuracy")


def trained_metrics(
    scored: Scores, trainer, model, examples: int, parent: tuple[str, float] | None = None
) -> dict[str, float]:
    """`model`'s scores, the `examples` and steps `trainer` trained it on, its parameters;
    with `parent` (the role of the model it was made from, that model's test macro-F1),
    the parent's score and the share of it this model keeps."""
    scores = scored.metrics
    metrics = {
        **{k: scores[k] for k in SCORES},
        "train/examples": examples,
        "train/steps": trainer.global_step,
        "model/params": count_parameters(model),
        "model/params_non_embedding": count_parameters(model, embeddings=False),
    }
    if parent is not None:
        role, f1 = parent
        metrics[f"{role}/test_macro_f1"] = f1
        metrics["test/macro_f1_retention"] = scores["test/macro_f1"] / f1 if f1 else 0.0
    return metrics
