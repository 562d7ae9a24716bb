"""evaluate: every variant of both families on the same test split (on every core), the
same way: quality with 95 % bootstrap intervals, latency at batch 1 and 32 on
evaluate.threads, throughput, size and parameters; the selected candidate compared, text by
text, with its baseline (`Selection.baseline`: the classical model, or for a classical model
the best transformer) and the teacher; a JSON report, a Markdown table and plots. A file
select left out (a refused INT8) is measured too, and the report says why."""

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from components import stats
from components.deploy import evaluation as ev
from components.deploy.config import EvaluateConfig
from components.deploy.parity import TorchClassifier
from components.errors import KilnError
from components.runtime.loader import load_classifier
from components.runtime.transformer import OnnxClassifier
from components.text.classifier import MeanPoolClassifier
from components.text.model import count_parameters
from pipelines.core.io import atomic, write_json
from pipelines.core.records import Selection
from pipelines.core.reports import Baseline, Evaluation, Paired
from pipelines.stagekit import explaining
from pipelines.stagekit.contract import StageContext, StageResult
from pipelines.stagekit.training import load_model

# PyTorch variants, by the params path each is read from.
TORCH = ("teacher", "student", "pruned")
SCALARS = {"macro_f1": "test_macro_f1", "accuracy": "test_accuracy"} | {
    key: key
    for key in ("latency_ms_p50_b1", "latency_ms_p95_b1", "latency_ms_p50_b32", "latency_ms_p95_b32")
    + ("throughput_b32", "size_mb", "params")
}


class Variant(NamedTuple):
    """Logits on every core (whole splits), logits on `evaluate.threads` (timing), MB, parameters."""

    logits: Callable
    timed: Callable
    size_mb: float
    params: int


def _runtimes(ctx: StageContext, labels: list[str], selection: Selection) -> dict[str, Variant]:
    """Every variant, and the selected candidate and its baseline if of the search's front."""
    cfg, paths = ctx.params.evaluate, ctx.params.paths
    found: dict[str, Variant] = {}
    for name in TORCH:
        folder = getattr(paths, name)
        model, _, card = load_model(ctx, folder, MeanPoolClassifier)
        logits = TorchClassifier(model, ctx.path(folder) / "tokenizer.json", card.label_list).logits
        size = ev.size_mb([ctx.path(folder) / "model.safetensors"])
        found[name] = Variant(logits, logits, size, count_parameters(model))  # torch's threads: set around timing
    files = {
        "onnx_fp32": (ctx.input(f"{paths.onnx}/pruned.onnx", "ONNX model"), paths.onnx_tokenizer("pruned")),
        "onnx_int8": (ctx.input(paths.quantized, "ONNX model"), paths.onnx_tokenizer("pruned")),
        "onnx_teacher": (ctx.input(f"{paths.onnx}/teacher.onnx", "ONNX model"), paths.onnx_tokenizer("teacher")),
        "classical": (ctx.input(f"{paths.classical}/model.onnx", "classical model"), None),
    }
    for name in sorted({selection.selected, selection.baseline()[0]} - found.keys() - files.keys()):  # the front's
        chosen = selection.candidates[name]
        files[name] = (ctx.input(chosen.file, "candidate model"), chosen.tokenizer)
    for name, (file, tokenizer) in files.items():
        where = (file, ctx.input(tokenizer, "tokenizer") if tokenizer else None)
        runtime = load_classifier(*where)
        if runtime.labels != labels:
            raise KilnError(f"evaluate: {name}'s labels {runtime.labels} differ from {labels}")
        # A classical file keeps its weights in node attributes: the count comes from its metadata.
        classical = runtime.metadata.get("family") == "classical"
        count = int(runtime.metadata["grid_point"]["params"]) if classical else ev.onnx_params(file)
        timed = load_classifier(*where, threads=cfg.threads).logits
        found[name] = Variant(runtime.logits, timed, ev.size_mb([file]), count)
    return found


def _quality(
    runtimes: dict[str, Variant], texts: list[str], truth: list[int], labels: list[str], cfg: EvaluateConfig
) -> tuple[dict[str, list[int]], dict[str, dict]]:
    """Each variant's predicted label ids, and its quality with 95 % intervals, size and parameters."""
    predicted: dict[str, list[int]] = {}
    variants: dict[str, dict] = {}
    for name, (logits, _, size, params) in runtimes.items():
        predicted[name] = logits(texts).argmax(-1).tolist()
        ci = stats.bootstrap(truth, predicted[name], cfg.resamples, cfg.bootstrap_seed)
        variants[name] = {
            **ev.quality(truth, predicted[name], labels),
            "size_mb": size,
            "params": params,
            "macro_f1_ci95": [ci["macro_f1"].low, ci["macro_f1"].high],
            "accuracy_ci95": [ci["accuracy"].low, ci["accuracy"].high],
        }
    return predicted, variants


def _timing(runtimes: dict[str, Variant], texts: list[str], cfg: EvaluateConfig) -> dict[str, dict[str, float]]:
    """Each variant's latency on evaluate.threads: at batch 1, and at batch 32 with the
    throughput for all but the PyTorch models."""
    found = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        # The PyTorch models are not served: batch 1 places them beside their ONNX files,
        # and their batches of 32 would be most of this stage's time with a MiniLM teacher.
        for torch_models in (False, True):
            timed = {n: r.timed for n, r in runtimes.items() if (n in TORCH) == torch_models}
            found |= ev.latency(timed, texts, cfg, batched=not torch_models)
    finally:
        torch.set_num_threads(threads)
    return found


def _comparisons(
    selection: Selection, truth: list[int], predicted: dict[str, list[int]], cfg: EvaluateConfig
) -> dict[str, Paired]:
    """The selected model against its baseline and the teacher, text by text."""
    base = selection.baseline()[0]
    pairs = [
        (f"selected_vs_{selection.baseline_family}", selection.selected, base),
        ("selected_vs_teacher", selection.selected, "teacher"),
    ]
    if "onnx_int8" in predicted:  # what compression cost: the shipped INT8 student against its teacher
        pairs.append(("int8_vs_teacher", "onnx_int8", "teacher"))
    comparisons = {}
    for group, model, other in pairs:
        found = stats.paired(truth, predicted[model], predicted[other], cfg.resamples, cfg.bootstrap_seed)
        d = found.macro_f1_difference
        comparisons[group] = Paired(
            model=model,
            other=other,
            delta_macro_f1=d.estimate,
            ci95=(d.low, d.high),
            p_value=found.mcnemar_p,
            n_discordant=found.discordant,
        )
    return comparisons


def run(ctx: StageContext) -> StageResult:
    cfg, paths = ctx.params.evaluate, ctx.params.paths
    split = ctx.read_split("val", "test")
    test = split["test"]
    texts = test["text"].tolist()
    selection = Selection.read(ctx.input(f"{paths.reports}/selection.json", "selection"), ctx.name, "select")
    labels = OnnxClassifier(ctx.input(paths.quantized), ctx.input(paths.onnx_tokenizer("pruned"))).labels
    if unknown := sorted(set(test["label"]) - set(labels)):
        raise KilnError(f"evaluate: test labels {unknown} are not in the model's label map {labels}")
    truth = [labels.index(label) for label in test["label"]]
    runtimes = _runtimes(ctx, labels, selection)
    predicted, variants = _quality(runtimes, texts, truth, labels, cfg)
    for name, timing in _timing(runtimes, texts, cfg).items():
        variants[name] |= timing
    comparisons = _comparisons(selection, truth, predicted, cfg)
    bulk = {n: r.logits for n, r in runtimes.items()}
    explained, html = explaining.run(ctx, selection, labels, bulk, split["val"], test)
    base, why = selection.baseline()
    report = Evaluation(
        test_texts=len(texts),
        threads=cfg.threads,
        selected=selection.selected,
        selected_family=selection.chosen.family,
        baseline=Baseline(name=base, family=selection.baseline_family, why=why),
        excluded=selection.excluded,
        variants=variants,
        comparisons=comparisons,
        ratios=ev.ratios(variants),
        explain=explained,
    )
    reports = ctx.path(paths.reports)
    figures = _write(report, selection.reason, labels, reports)
    # DVC's confusion template reads it: `dvc plots diff` compares two experiments' matrices.
    chosen = predicted[selection.selected]
    write_json(
        [{"actual": labels[t], "predicted": labels[p]} for t, p in zip(truth, chosen, strict=True)],
        reports / "predictions.json",
    )
    return StageResult(
        metrics=_metrics(report),
        artifacts={
            "evaluation": reports / "evaluation.md",
            "evaluation/report": reports / "evaluation.json",
            "evaluation/figures": figures,
            "evaluation/explanations": html,
        },
    )


def _write(report: Evaluation, reason: str, labels: list[str], reports: Path) -> Path:
    """The figures, evaluation.json, DVC's Pareto plot data and evaluation.md; returns the figures' folder."""
    variants = {name: v.model_dump() for name, v in report.variants.items()}  # as components.deploy reads them
    figures = reports / "evaluation"
    with atomic(figures) as tmp:
        tmp.mkdir(parents=True)
        for name, v in report.variants.items():
            title = f"{name}: test macro-F1 {v.macro_f1:.3f}"
            ev.plot_confusion(v.confusion_matrix, labels, title, tmp / f"confusion_{name}.png")
        ev.plot_pareto(variants, report.selected, tmp / "pareto.png")
    report.write(reports / "evaluation.json")
    write_json(
        [
            {
                "variant": name,
                "macro_f1": v.macro_f1,
                "macro_f1_low": v.macro_f1_ci95[0],
                "macro_f1_high": v.macro_f1_ci95[1],
                "latency_ms_p50_b1": v.latency_ms_p50_b1,
                "size_mb": v.size_mb,
            }
            for name, v in report.variants.items()
        ],
        reports / "pareto.json",
    )
    with atomic(reports / "evaluation.md") as tmp:
        tmp.write_text(report.markdown(reason, ev.markdown(variants)))
    return figures


def _metrics(report: Evaluation) -> dict[str, float]:
    """The report's numbers under metrics.py's names, to log to MLflow."""
    variants = {name: v.model_dump() for name, v in report.variants.items()}
    metrics = {f"{n}/{to}": float(v[key]) for n, v in variants.items() for key, to in SCALARS.items() if key in v}
    for name, v in report.variants.items():
        metrics |= {f"{name}/test_macro_f1_lo": v.macro_f1_ci95[0], f"{name}/test_macro_f1_hi": v.macro_f1_ci95[1]}
    for group, c in report.comparisons.items():
        found = {"delta_macro_f1": c.delta_macro_f1, "ci_lo": c.ci95[0], "ci_hi": c.ci95[1]}
        found |= {"p_value": c.p_value, "discordant": c.n_discordant}
        metrics |= {f"{group}/{key}": value for key, value in found.items()}
    metrics |= {f"{group}/{key}": value for group, values in report.ratios.items() for key, value in values.items()}
    metrics |= report.selected_figures()
    e = report.explain
    return metrics | {
        "explain/aopc_top": e.aopc_top,
        "explain/aopc_random": e.aopc_random,
        "explain/ece": e.ece,
        "explain/temperature": e.temperature,
    }
