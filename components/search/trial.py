"""One trial of the search: a candidate model made, checked and measured from a sampled
point of the space, in whatever process runs it (a local worker or a Dask worker).

A transformer trial distils a student of the sampled size from the teacher's logits
(computed once for every trial), prunes it and recovers, exports it to ONNX through the
parity gate, quantizes it through the agreement gate, and measures the INT8 file. A
classical trial fits one point of the TF-IDF + logistic-regression grid and exports it.
Every trial is measured the same way: val macro-F1 of the servable file, its p50 latency
at batch 1 on `evaluate.threads` threads, and its size. Test is never read.
"""

import shutil
import time

from components.deploy.records import Parity, QuantizeReport
from components.search.spec import MODEL_FILE, Evidence, TrialResult, TrialSpec, student_config
from components.text.config import LoopConfig


def run_trial(spec: TrialSpec) -> TrialResult:
    import torch

    start = time.time()
    threads = torch.get_num_threads()
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    try:
        spec.folder.mkdir(parents=True, exist_ok=True)
        result = _transformer(spec) if spec.family == "transformer" else _classical(spec)
    finally:
        torch.set_num_threads(threads)
    result.seconds = time.time() - start
    return result


def _frames(spec: TrialSpec):
    import pandas as pd

    return pd.read_parquet(spec.train), pd.read_parquet(spec.val)


def _minutes_left(spec: TrialSpec, reserve_s: float) -> float:
    """Training time left before the deadline, keeping `reserve_s` for export and timing."""
    return max((spec.deadline - time.time() - reserve_s) / 60, 0.05)


def _fit(spec: TrialSpec, module, data, name: str, loop: LoopConfig):
    from components.text.training import best_state, budgeted, build_trainer

    hardware = spec.hardware.model_copy(update={"devices": 1, "strategy": "auto", "num_nodes": 1})
    loop = budgeted(loop, len(data.sets["train"])).model_copy(update={"max_minutes": _minutes_left(spec, 30)})
    trainer = build_trainer(
        f"search trial {spec.number} {name}", hardware, loop, spec.folder / "checkpoints" / name, [], "val/macro_f1"
    )
    trainer.fit(module, datamodule=data)
    if (state := best_state(trainer)) is not None:
        module.load_state_dict(state)
    return trainer


def _transformer(spec: TrialSpec) -> TrialResult:
    """Distil a student of the sampled size, prune it, export and quantize it through the
    gates, and measure the INT8 file."""
    import lightning as L

    from components.runtime.transformer import OnnxClassifier
    from components.text.classifier import MeanPoolClassifier
    from components.text.data import load_tokenizer
    from components.text.distill import sized_config
    from components.text.model import count_parameters

    L.seed_everything(spec.seed + spec.number, workers=True, verbose=False)
    train, val = _frames(spec)
    tokenizer = load_tokenizer(spec.tokenizer, "search")
    config = sized_config(spec.encoder, student_config(spec), tokenizer)
    data = _data(spec, train, val, tokenizer, config.max_position_embeddings)
    student = MeanPoolClassifier(config)
    steps, before = _distil_and_prune(spec, student, data, train)
    # The PyTorch model stays beside its ONNX files: it is what explains the shipped file.
    student.save_pretrained(spec.folder)
    tokenizer.save_pretrained(spec.folder)
    texts, truth = val["text"].tolist(), [spec.labels[v] for v in val["label"]]
    exported, quantized = _ship(spec, student, tokenizer, texts, truth)
    runtime = OnnxClassifier(spec.folder / MODEL_FILE, spec.folder / "tokenizer.json", threads=spec.evaluate.threads)
    return TrialResult(
        **_measure(spec, runtime, texts, truth),
        evidence=Evidence(export=exported, quantize=quantized),
        details={
            "train/steps": steps,
            "model/params_non_embedding_before": before,
            "model/params_non_embedding": count_parameters(student, embeddings=False),
        },
    )


def _data(spec: TrialSpec, train, val, tokenizer, length: int):
    """Train and val texts for the student, the train texts with the teacher's logits."""
    import numpy as np

    from components.text.data import ClassificationData

    return ClassificationData(
        {"train": train, "val": val},
        spec.labels,
        tokenizer,
        length,
        spec.loop.batch_size,
        spec.seed,
        teacher_logits={"train": np.load(spec.teacher_logits)},
        val_texts=spec.loop.val_texts,
    )


def _distil_and_prune(spec: TrialSpec, student, data, train) -> tuple[int, int]:
    """Distil `student` from the teacher's logits and, at the sampled ratio, prune it and
    recover; (the optimizer steps taken, its non-embedding parameters before pruning)."""
    from components.text.distill import Distiller, KdLoss
    from components.text.model import count_parameters
    from components.text.modules import class_weights
    from components.text.prune import importance, prune

    p = spec.params
    # From the teacher's logits alone: no hidden states to match.
    recipe = KdLoss(p["alpha"], p["temperature"], hidden_weight=0.0)
    described = {"search_trial": spec.number, "params": p}
    weights = class_weights(spec.class_weight, [spec.labels[v] for v in train["label"]], len(spec.labels))
    module = Distiller(student, None, recipe, spec.optim, described, len(spec.labels), weights)
    steps = _fit(spec, module, data, "distill", spec.loop).global_step
    before = count_parameters(student, embeddings=False)
    if p["prune_ratio"] > 0:
        heads, neurons = importance(student, data.train_dataloader(), spec.importance_batches)
        prune(student, heads, neurons, p["prune_ratio"], p["prune_ratio"])
        if spec.recovery_epochs:
            loop = spec.loop.model_copy(update={"max_epochs": spec.recovery_epochs})
            module = Distiller(student, None, recipe, spec.optim, described, len(spec.labels), weights)
            steps += _fit(spec, module, data, "recovery", loop).global_step
    shutil.rmtree(spec.folder / "checkpoints", ignore_errors=True)
    student.eval()
    return steps, before


def _ship(spec: TrialSpec, student, tokenizer, texts: list[str], truth: list[int]) -> tuple[Parity, QuantizeReport]:
    """The student as ONNX through the parity gate, then as INT8 (the sampled mode) through
    the agreement gate on val, which fails the trial where it refuses the file."""
    from components.deploy.gated import export_with_parity, metadata_of, quantize_with_agreement
    from components.deploy.metadata import SearchTrial

    tokens, fp32 = spec.folder / "tokenizer.json", spec.folder / "model.fp32.onnx"
    made = SearchTrial(trial=spec.number, params=spec.params)
    metadata = metadata_of(student, f"search_{spec.number}", spec.labels, "search", search=made)
    name, parity_texts = f"search trial {spec.number}", texts[: spec.export.parity_texts]
    exported = export_with_parity(name, student, tokenizer, tokens, fp32, metadata, parity_texts, spec.export)
    cfg = spec.quantize.model_copy(update={"mode": spec.params["quantization"]})
    quantized = quantize_with_agreement(
        fp32, spec.folder / MODEL_FILE, tokens, metadata, texts, truth, cfg, refuse=True
    )
    fp32.unlink()
    return exported, quantized


def _classical(spec: TrialSpec) -> TrialResult:
    import json

    from components.classical.model import count_parameters, export, parity_gate, select
    from components.explain.linear import LinearExplainer
    from components.runtime.classical import ClassicalClassifier

    p = spec.params
    train, val = _frames(spec)
    cfg = spec.classical.model_copy(
        update={"analyzers": [p["analyzer"]], "c": [p["c"]], "max_features": int(p["max_features"])}
    )
    chosen = select(
        train["text"].tolist(), train["label"].tolist(), val["text"].tolist(), val["label"].tolist(), cfg, spec.seed
    )
    model = spec.folder / MODEL_FILE
    export(chosen, model, {"made_by": "search", "search": {"trial": spec.number, "params": p}})
    texts = val["text"].tolist()
    found = parity_gate(chosen.pipeline, ClassicalClassifier(model), texts[: cfg.parity_texts], cfg.max_abs_diff)
    explainer = LinearExplainer.from_pipeline(chosen.pipeline, chosen.labels).to_dict()
    (spec.folder / "explainer.json").write_text(json.dumps(explainer), encoding="utf-8")
    runtime = ClassicalClassifier(model, threads=spec.evaluate.threads)
    truth = [runtime.labels.index(v) for v in val["label"]]
    return TrialResult(
        **_measure(spec, runtime, texts, truth),
        evidence=Evidence(export=found),
        details={"classical/features": chosen.best.features, "classical/params": count_parameters(chosen.pipeline)},
    )


def _measure(spec: TrialSpec, runtime, texts: list[str], truth: list[int]) -> dict[str, float]:
    """The three objectives of the servable file, measured as select and evaluate do."""
    from components.deploy import evaluation as ev

    predicted = runtime.logits(texts).argmax(-1).tolist()
    timing = ev.latency({"trial": runtime.logits}, texts, spec.evaluate, batched=False)["trial"]
    return {
        "val_macro_f1": ev.quality(truth, predicted, runtime.labels)["macro_f1"],
        "latency_ms_p50_b1": timing["latency_ms_p50_b1"],
        "size_mb": ev.size_mb([spec.folder / MODEL_FILE]),
    }
