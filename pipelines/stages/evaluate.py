"""evaluate: every variant on the same test split, the same way: quality, latency at
batch 1 and 32 with a fixed thread count, throughput, size and parameters; a TF-IDF
baseline beside them; a JSON report (DVC metrics), a Markdown table and plots."""

import io
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from components.deploy import evaluation as ev
from components.deploy.parity import TorchClassifier
from components.deploy.runtime import OnnxClassifier
from components.errors import KilnError
from components.text.classifier import MeanPoolClassifier
from components.text.model import count_parameters
from pipelines.contract import StageContext, StageResult
from pipelines.io import atomic, write_json
from pipelines.training import load_model

# PyTorch variants, by the params path each is read from.
TORCH = ("teacher", "student", "pruned")
SCALARS = {
    "macro_f1": "test_macro_f1",
    "accuracy": "test_accuracy",
    "latency_ms_p50_b1": "latency_ms_p50_b1",
    "latency_ms_p95_b1": "latency_ms_p95_b1",
    "latency_ms_p50_b32": "latency_ms_p50_b32",
    "latency_ms_p95_b32": "latency_ms_p95_b32",
    "throughput_b32": "throughput_b32",
    "size_mb": "size_mb",
    "params": "params",
}


def _onnx_params(path: Path) -> int:
    """Values stored in the file's initializers (weights, INT8 or not)."""
    import onnx

    return int(sum(np.prod(init.dims) for init in onnx.load(str(path)).graph.initializer))


def _comparisons(variants: dict[str, dict]) -> dict[str, dict[str, float]]:
    teacher, int8, fp32 = variants["teacher"], variants["onnx_int8"], variants["onnx_fp32"]
    return {
        "int8_vs_teacher": {
            "size_ratio": teacher["size_mb"] / int8["size_mb"],
            "latency_ratio_p50_b1": teacher["latency_ms_p50_b1"] / int8["latency_ms_p50_b1"],
            "macro_f1_retention": int8["macro_f1"] / teacher["macro_f1"],
        },
        "int8_vs_fp32": {
            "speedup_p50_b1": fp32["latency_ms_p50_b1"] / int8["latency_ms_p50_b1"],
            "speedup_p50_b32": fp32["latency_ms_p50_b32"] / int8["latency_ms_p50_b32"],
        },
    }


def run(ctx: StageContext) -> StageResult:
    cfg, paths = ctx.params.evaluate, ctx.params.paths
    split = ctx.read_split("train", "test")
    test = split["test"]
    texts = test["text"].tolist()
    tokenizer = ctx.input(f"{paths.onnx}/tokenizer.json", "tokenizer")
    fp32_file, int8_file = ctx.input(f"{paths.onnx}/pruned.onnx"), ctx.input(paths.quantized)
    fp32 = OnnxClassifier(fp32_file, tokenizer, threads=cfg.threads)
    labels = fp32.labels
    unknown = sorted(set(test["label"]) - set(labels))
    if unknown:
        raise KilnError(f"evaluate: test labels {unknown} are not in the model's label map {labels}")
    truth = [labels.index(label) for label in test["label"]]

    variants: dict[str, dict] = {}
    predictors: dict[str, Callable[[list[str]], object]] = {}
    for name in TORCH:
        folder = getattr(paths, name)
        model, _, card = load_model(ctx, folder, MeanPoolClassifier)
        runtime = TorchClassifier(model, ctx.path(folder) / "tokenizer.json", card.label_list)
        predictors[name] = runtime.logits
        variants[name] = {
            **ev.quality(truth, runtime.logits(texts).argmax(-1).tolist(), labels),
            "size_mb": ev.size_mb([ctx.path(folder) / "model.safetensors"]),
            "params": count_parameters(model),
        }
    int8 = OnnxClassifier(int8_file, tokenizer, threads=cfg.threads)
    for name, runtime, file in (("onnx_fp32", fp32, fp32_file), ("onnx_int8", int8, int8_file)):
        predictors[name] = runtime.logits
        variants[name] = {
            **ev.quality(truth, runtime.logits(texts).argmax(-1).tolist(), labels),
            "size_mb": ev.size_mb([file]),
            "params": _onnx_params(file),
        }

    train = split["train"][split["train"]["label"].isin(labels)]
    baseline = ev.baseline(train["text"].tolist(), [labels.index(v) for v in train["label"]], ctx.params.hardware.seed)
    # Its size is that of its fitted state serialised in memory; nothing is written.
    buffer = io.BytesIO()
    pickle.dump(baseline, buffer)
    classifier = baseline[-1]
    predictors["baseline"] = baseline.predict
    variants["baseline"] = {
        **ev.quality(truth, baseline.predict(texts).tolist(), labels),
        "size_mb": buffer.tell() / 1e6,
        "params": int(classifier.coef_.size + classifier.intercept_.size),
    }

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        for name, timing in ev.latency(predictors, texts, cfg).items():
            variants[name].update(timing)
    finally:
        torch.set_num_threads(threads)

    comparisons = _comparisons(variants)
    reports = ctx.path(paths.reports)
    figures = reports / "evaluation"
    with atomic(figures) as tmp:
        tmp.mkdir(parents=True)
        for name, v in variants.items():
            ev.plot_confusion(
                v["confusion_matrix"],
                labels,
                f"{name}: test macro-F1 {v['macro_f1']:.3f}",
                tmp / f"confusion_{name}.png",
            )
        ev.plot_pareto(variants, tmp / "pareto.png")
    write_json(
        {"test_texts": len(texts), "threads": cfg.threads, "variants": variants, "comparisons": comparisons},
        reports / "evaluation.json",
    )
    write_json(
        [
            {
                "variant": name,
                "macro_f1": v["macro_f1"],
                "latency_ms_p50_b1": v["latency_ms_p50_b1"],
                "size_mb": v["size_mb"],
            }
            for name, v in variants.items()
        ],
        reports / "pareto.json",
    )
    with atomic(reports / "evaluation.md") as tmp:
        tmp.write_text(f"# Evaluation on {len(texts)} test texts ({cfg.threads} thread(s))\n\n" + ev.markdown(variants))
    metrics = {f"{name}/{logged}": float(v[key]) for name, v in variants.items() for key, logged in SCALARS.items()}
    metrics.update({f"{group}/{key}": value for group, values in comparisons.items() for key, value in values.items()})
    return StageResult(
        metrics=metrics,
        artifacts={
            "evaluation": reports / "evaluation.md",
            "evaluation/report": reports / "evaluation.json",
            "evaluation/figures": figures,
        },
    )
