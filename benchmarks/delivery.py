"""The shipped model against the teacher, and INT8 against FP32, on this machine in one run.

Reads what the pipeline left (models/ and the test split; run `make run` first) and
prints, with the thread count of params.yaml's `evaluate` section:
  - INT8 student (ONNX Runtime) against the FP32 teacher (PyTorch): size on disk, p50
    latency at batch 1, test macro-F1 retention;
  - INT8 against FP32 ONNX of the same student: p50 latency at batch 1 and batch 32.
Latencies are taken in interleaved rounds (see components.deploy.evaluation.latency), so
load on a shared machine falls on every variant alike; compare the ratios.

    .venv/bin/python benchmarks/delivery.py [--rounds 5]
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from components.deploy import evaluation as ev
from components.deploy.parity import TorchClassifier
from components.runtime.transformer import OnnxClassifier
from components.text.classifier import MeanPoolClassifier
from pipelines.core.params import load

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    params = load(ROOT / "params.yaml")
    paths, cfg = params.paths, params.evaluate.model_copy(update={"rounds": args.rounds})
    test = pd.read_parquet(ROOT / paths.split / "test.parquet")
    texts = test["text"].tolist()

    teacher_dir = ROOT / paths.teacher
    fp32_labels = OnnxClassifier(ROOT / paths.quantized, ROOT / paths.onnx / "tokenizer.json").labels
    teacher = TorchClassifier(
        MeanPoolClassifier.from_pretrained(teacher_dir), teacher_dir / "tokenizer.json", fp32_labels
    )
    teacher_logits = teacher.logits

    tokenizer = ROOT / paths.onnx / "tokenizer.json"
    fp32 = OnnxClassifier(ROOT / paths.onnx / "pruned.onnx", tokenizer, threads=cfg.threads)
    int8 = OnnxClassifier(ROOT / paths.quantized, tokenizer, threads=cfg.threads)
    truth = [fp32.labels.index(label) for label in test["label"]]
    torch.set_num_threads(cfg.threads)
    f1 = {
        name: ev.quality(
            truth,
            np.concatenate([fn(texts[i : i + 32]) for i in range(0, len(texts), 32)]).argmax(-1).tolist(),
            fp32.labels,
        )["macro_f1"]
        for name, fn in (("teacher", teacher_logits), ("int8", int8.logits))
    }
    timing = ev.latency({"teacher": teacher_logits, "onnx_fp32": fp32.logits, "onnx_int8": int8.logits}, texts, cfg)
    size_teacher = (teacher_dir / "model.safetensors").stat().st_size / 1e6
    size_int8 = (ROOT / paths.quantized).stat().st_size / 1e6

    print(f"{len(texts)} test texts, {cfg.threads} thread(s), {cfg.rounds} rounds")
    print(f"{'variant':<10} {'p50 b1 ms':>10} {'p95 b1 ms':>10} {'p50 b32 ms':>11} {'MB':>7}")
    for name, size in (
        ("teacher", size_teacher),
        ("onnx_fp32", (ROOT / paths.onnx / "pruned.onnx").stat().st_size / 1e6),
        ("onnx_int8", size_int8),
    ):
        t = timing[name]
        print(
            f"{name:<10} {t['latency_ms_p50_b1']:>10.2f} {t['latency_ms_p95_b1']:>10.2f} "
            f"{t['latency_ms_p50_b32']:>11.1f} {size:>7.2f}"
        )
    print(
        f"INT8 student vs FP32 teacher: {size_teacher / size_int8:.1f}x smaller (goal 10x), "
        f"{timing['teacher']['latency_ms_p50_b1'] / timing['onnx_int8']['latency_ms_p50_b1']:.1f}x lower p50 "
        f"latency at batch 1 (goal 8x), macro-F1 {f1['int8']:.4f} vs {f1['teacher']:.4f} = "
        f"{f1['int8'] / f1['teacher']:.1%} (goal 98 %)"
    )
    print(
        "INT8 vs FP32 ONNX: "
        f"{timing['onnx_fp32']['latency_ms_p50_b1'] / timing['onnx_int8']['latency_ms_p50_b1']:.2f}x "
        f"at batch 1, {timing['onnx_fp32']['latency_ms_p50_b32'] / timing['onnx_int8']['latency_ms_p50_b32']:.2f}x "
        f"at batch 32 (goal: above 1)"
    )


if __name__ == "__main__":
    main()
