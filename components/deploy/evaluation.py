"""Scoring every model variant the same way: quality on the test split, latency and
throughput at fixed batch sizes, size; and the plots."""

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from components.deploy.config import EvaluateConfig


def quality(truth: Sequence[int], predicted: Sequence[int], labels: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        # Over the labels that occur in the truth or the predictions: a label a small split
        # lacks and the model never predicts says nothing about the model. Lightning's
        # torchmetrics and the bootstrap in stats.py average the same way.
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(truth, predicted, labels=ids).tolist(),
    }


def latency(
    predictors: dict[str, Callable[[list[str]], object]], texts: list[str], cfg: EvaluateConfig, batched: bool = True
) -> dict[str, dict[str, float]]:
    """p50/p95 milliseconds per call at batch 1 and batch 32, and texts/s at batch 32, for
    each predictor: the same texts in the same order, after `cfg.warmup` untimed calls,
    in `cfg.rounds` rounds that take turns, so a change in the machine's load falls on
    every variant alike instead of on whichever ran during it. Without `batched`, batch 1
    alone (the batch-32 figures are then left out)."""
    singles = [[texts[i % len(texts)]] for i in range(cfg.latency_texts)]
    batches = [[texts[(b * 32 + i) % len(texts)] for i in range(32)] for b in range(cfg.batches if batched else 0)]
    one: dict[str, list[float]] = {name: [] for name in predictors}
    many: dict[str, list[float]] = {name: [] for name in predictors}
    for predict in predictors.values():
        for call in singles[: cfg.warmup] + batches[:1]:
            predict(call)
    for _ in range(cfg.rounds):
        for name, predict in predictors.items():
            one[name] += _timed(predict, singles)
            many[name] += _timed(predict, batches)
    found = {
        name: {
            "latency_ms_p50_b1": float(np.percentile(one[name], 50)),
            "latency_ms_p95_b1": float(np.percentile(one[name], 95)),
        }
        for name in predictors
    }
    if batched:
        for name, timed in found.items():
            timed |= {
                "latency_ms_p50_b32": float(np.percentile(many[name], 50)),
                "latency_ms_p95_b32": float(np.percentile(many[name], 95)),
                "throughput_b32": float(32 * len(many[name]) / (sum(many[name]) / 1000)),
            }
    return found


def _timed(predict: Callable[[list[str]], object], calls: list[list[str]]) -> list[float]:
    out = []
    for call in calls:
        start = time.perf_counter()
        predict(call)
        out.append((time.perf_counter() - start) * 1000)
    return out


def onnx_params(path: Path) -> int:
    """Values stored in an ONNX file's initializers (weights, INT8 or not)."""
    import onnx

    return int(sum(np.prod(init.dims) for init in onnx.load(str(path)).graph.initializer))


def size_mb(paths: Sequence[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def ratios(variants: dict[str, dict]) -> dict[str, dict[str, float]]:
    """INT8 against the teacher as it would be served, its FP32 ONNX file (size, speed,
    macro-F1 kept), and against FP32 (speed-up)."""
    teacher = variants.get("onnx_teacher", variants["teacher"])
    int8, fp32 = variants["onnx_int8"], variants["onnx_fp32"]
    return {
        "int8_vs_teacher": {
            "size_ratio": teacher["size_mb"] / int8["size_mb"],
            "latency_ratio_p50_b1": teacher["latency_ms_p50_b1"] / int8["latency_ms_p50_b1"],
            "macro_f1_retention": int8["macro_f1"] / teacher["macro_f1"] if teacher["macro_f1"] else 0.0,
        },
        "int8_vs_fp32": {
            "speedup_p50_b1": fp32["latency_ms_p50_b1"] / int8["latency_ms_p50_b1"],
            "speedup_p50_b32": fp32["latency_ms_p50_b32"] / int8["latency_ms_p50_b32"],
        },
    }


def plot_confusion(matrix: list[list[int]], labels: list[str], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here or in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(np.array(matrix), cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for (i, j), count in np.ndenumerate(np.array(matrix)):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_pareto(variants: dict[str, dict], selected: str, out: Path) -> None:
    """Macro-F1 (with its 95 % interval) against batch-1 p50 latency and against size,
    one point per variant, named in a legend (variants often sit on one another, where
    labels beside the points would collide); the selected one is a larger star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.get_cmap("tab10")
    for ax, key, label in (
        (axes[0], "latency_ms_p50_b1", "p50 latency at batch 1 (ms, log scale)"),
        (axes[1], "size_mb", "size (MB, log scale)"),
    ):
        for i, (name, v) in enumerate(variants.items()):
            low, high = v["macro_f1_ci95"]
            chosen = name == selected
            # The 95 % interval: two variants whose bars overlap are not told apart by this split.
            ax.errorbar(
                v[key],
                v["macro_f1"],
                yerr=[[v["macro_f1"] - low], [high - v["macro_f1"]]],
                fmt="*" if chosen else "o",
                markersize=14 if chosen else 6,
                color=colours(i % 10),
                capsize=3,
                label=f"{name} (selected)" if chosen else name,
            )
        ax.set_xscale("log")
        # Plain numbers at 1, 2 and 5 of each decade: no 10^x labels, no crowded minor ones.
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_xlabel(label)
        ax.set_ylabel("test macro-F1")
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.savefig(out, dpi=100)
    plt.close(fig)


def markdown(variants: dict[str, dict]) -> str:
    """The evaluation as a table a person reads."""
    rows = [
        "| variant | macro-F1 | 95 % interval | accuracy | p50 b1 ms | p95 b1 ms | p50 b32 ms | texts/s b32 | MB "
        "| params |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, v in variants.items():
        # A model timed at batch 1 alone (the PyTorch ones) has no batch-32 figures.
        b32 = f"{v['latency_ms_p50_b32']:.1f} | {v['throughput_b32']:.0f}" if "throughput_b32" in v else "- | -"
        rows.append(
            f"| {name} | {v['macro_f1']:.4f} | [{v['macro_f1_ci95'][0]:.4f}, {v['macro_f1_ci95'][1]:.4f}] "
            f"| {v['accuracy']:.4f} | {v['latency_ms_p50_b1']:.2f} | {v['latency_ms_p95_b1']:.2f} | {b32} | "
            f"{v['size_mb']:.2f} | {v['params']:,} |"
        )
    return "\n".join(rows) + "\n"
