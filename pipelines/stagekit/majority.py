"""Did a trained model learn anything? Each training stage compares its model with the
majority-class predictor on val (`stats.against_majority`) and, when the model is no
better, says so on the terminal, in the metrics and in an MLflow tag. The stage does not
fail, since the other family may have learned; select leaves such a model out."""

from collections.abc import Sequence
from dataclasses import replace

from components.stats import against_majority, majority_label
from pipelines.stagekit.contract import StageContext, StageResult


def checked(
    ctx: StageContext,
    result: StageResult,
    model: str,
    train: Sequence[str],
    truth: Sequence[str],
    predicted: Sequence[str],
) -> StageResult:
    """`result` with `model`'s check added: its val `predicted` labels against always the
    commonest label of `train`, on the texts of `truth`. Resamples and seed are
    `evaluate`'s defaults, so a model select would leave out is flagged here too."""
    found = against_majority(truth, predicted, majority_label(train))
    d = found.difference
    metrics = {
        "val/majority_macro_f1": found.majority,
        "val/delta_macro_f1_vs_majority": d.estimate,
        "val/delta_macro_f1_vs_majority_lo": d.low,
        "val/delta_macro_f1_vs_majority_hi": d.high,
        "val/learned": float(found.learned),
    }
    if found.learned:
        return replace(result, metrics={**result.metrics, **metrics})
    ctx.run.set_tags({"kiln.not_learned": found.reason})
    line = f"{model} not learned: {found.reason}"
    return replace(result, metrics={**result.metrics, **metrics}, summary=[line, *result.summary])
