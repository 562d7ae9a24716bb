"""The gate's measurements: challenger and champion scored on today's test split, the
paired comparison of the two, the macro-F1 floor, and what export and quantize recorded
on the version; `components.deploy.gate.decide` turns them into a decision."""

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from components.deploy.config import EvaluateConfig, ExportConfig, GateConfig, QuantizeConfig
from components.deploy.gate import Decision, Evidence, decide
from components.errors import KilnError
from components.stats import Comparison
from pipelines.core.reports import Evaluation
from pipelines.registry.models import CHAMPION, alias
from pipelines.registry.versions import lineage

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


@dataclass
class Bounds:
    """What the gate holds a challenger to: params.yaml's promote, export and quantize, and
    the macro-F1 floor resolved (a number, or the baseline candidate's lower bound)."""

    gate: GateConfig
    evaluate: EvaluateConfig
    export: ExportConfig
    quantize: QuantizeConfig
    floor: float
    floor_source: str


def floor(gate: GateConfig, evaluation: Path) -> tuple[float, str]:
    """The macro-F1 floor: promote.min_macro_f1 as a number, or `baseline`, the lower end
    of the 95 % interval of the baseline today's evaluation compared the selected model
    with (the classical model, or for a classical model the best transformer on val)."""
    if gate.min_macro_f1 != "baseline":
        return float(gate.min_macro_f1), "promote.min_macro_f1"
    if not evaluation.is_file():
        raise KilnError(
            f"promote.min_macro_f1: baseline needs the baseline's interval in {evaluation}, which is missing; "
            "run the pipeline, or set a number"
        )
    report = Evaluation.read(evaluation, "promote", "evaluate")
    baseline = report.baseline
    low = report.variants[baseline.name].macro_f1_ci95[0]
    return low, f"baseline: lower end of {baseline.name}'s 95 % interval; {baseline.why}"


@dataclass
class Scored:
    """A registered version on today's test split: its metrics and each text's label."""

    metrics: dict[str, float]
    predicted: list[str]


def score(name: str, number: str, test: pd.DataFrame, cfg: EvaluateConfig) -> Scored:
    """A registered version measured on `test`: the data may have changed since it was
    registered, so stored metrics are not reused."""
    from components import stats
    from components.deploy import evaluation as ev
    from components.runtime.loader import load_classifier
    from pipelines.registry import versions
    from pipelines.registry.models import version
    from pipelines.tracking import runs

    with tempfile.TemporaryDirectory() as tmp:
        files = versions.artifacts(versions.fetch(version(runs.client(), name, number), Path(tmp) / "version", "gate"))
        onnx = files["model"]
        runtime = load_classifier(onnx, files.get("tokenizer"))  # the whole split on every core
        texts = test["text"].tolist()
        predicted = [runtime.labels[i] for i in runtime.logits(texts).argmax(-1)]
        truth = [runtime.labels.index(v) if v in runtime.labels else -1 for v in test["label"]]
        known = [i for i, t in enumerate(truth) if t >= 0]
        ids = [truth[i] for i in known]
        guessed = [runtime.labels.index(predicted[i]) for i in known]
        quality = ev.quality(ids, guessed, runtime.labels)
        ci = stats.bootstrap(ids, guessed, cfg.resamples, cfg.bootstrap_seed)["macro_f1"]
        timed = load_classifier(onnx, files.get("tokenizer"), threads=cfg.threads)
        timing = ev.latency({"model": timed.logits}, texts, cfg)["model"]
        metrics = {
            "test_macro_f1": quality["macro_f1"],
            "test_macro_f1_lo": ci.low,
            "test_macro_f1_hi": ci.high,
            "test_accuracy": quality["accuracy"],
            **timing,
            "size_mb": onnx.stat().st_size / 1e6,
        }
    return Scored(metrics, predicted)


def _versus(test: pd.DataFrame, champion: Scored, challenger: Scored, cfg: EvaluateConfig) -> Comparison:
    """Champion against challenger on the same texts (those of labels both know)."""
    from components import stats

    labels = sorted(set(test["label"]) | set(champion.predicted) | set(challenger.predicted))
    index = {label: i for i, label in enumerate(labels)}
    truth = [index[v] for v in test["label"]]
    return stats.paired(
        truth,
        [index[v] for v in champion.predicted],
        [index[v] for v in challenger.predicted],
        cfg.resamples,
        cfg.bootstrap_seed,
    )


def gate(
    client: "MlflowClient", name: str, challenger: "ModelVersion", test: pd.DataFrame, bounds: Bounds
) -> tuple[Decision, dict[str, float], "ModelVersion | None", str | None]:
    """Score the challenger and the current champion on the same split and decide; returns
    (decision, metrics of both sides and of their comparison, the champion the decision
    was made against, a note when the split is too small to resolve the tolerance)."""
    from components.stats import texts_needed

    champion = alias(client, name, CHAMPION)
    mine = score(name, challenger.version, test, bounds.evaluate)
    metrics = {f"challenger/{k}": v for k, v in mine.metrics.items()}
    versus, note = None, None
    if champion is not None and champion.version != challenger.version:
        theirs = score(name, champion.version, test, bounds.evaluate)
        metrics.update({f"champion/{k}": v for k, v in theirs.metrics.items()})
        versus = _versus(test, theirs, mine, bounds.evaluate)
        d = versus.macro_f1_difference
        metrics.update(
            {
                "gate/delta_macro_f1": d.estimate,
                "gate/ci_lo": d.low,
                "gate/ci_hi": d.high,
                "gate/p_value": versus.mcnemar_p,
                "gate/discordant": versus.discordant,
            }
        )
        if bounds.gate.tolerance > 0 and d.half_width > bounds.gate.tolerance:
            note = (
                f"the test split ({len(test)} texts) is too small to resolve promote.tolerance "
                f"{bounds.gate.tolerance}: the paired interval's half-width is {d.half_width:.4f}; about "
                f"{texts_needed(d.half_width, len(test), bounds.gate.tolerance):,} test texts would resolve it"
            )
    metrics["gate/floor"] = bounds.floor
    decision = decide(
        bounds.gate,
        mine.metrics,
        versus,
        bounds.floor,
        bounds.floor_source,
        Evidence.from_tags(lineage(challenger)),
        bounds.export,
        bounds.quantize,
    )
    return decision, metrics, champion, note
