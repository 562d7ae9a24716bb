"""quantize: the exported student as INT8 ONNX (dynamic by default, static with val-split
calibration as an option), through a parity gate against the FP32 file."""

from components.deploy.evaluation import quality
from components.deploy.onnx import quantize_dynamic, quantize_static, read_metadata, stamp
from components.deploy.runtime import OnnxClassifier
from components.errors import KilnError
from pipelines.io import atomic
from pipelines.stages import StageContext, StageResult
from pipelines.training import read_split


def agreement_gate(fp32: OnnxClassifier, int8: OnnxClassifier, texts: list[str], truth: list[int],
                   min_agreement: float, max_f1_drop: float) -> dict[str, float]:
    """INT8 against FP32 on the whole test split; a KilnError if predictions agree on
    fewer than `min_agreement` of the texts or macro-F1 drops by more than `max_f1_drop`."""
    before = fp32.logits(texts).argmax(-1)
    after = int8.logits(texts).argmax(-1)
    agreement = float((before == after).mean())
    f1_fp32 = quality(truth, before.tolist(), fp32.labels)["macro_f1"]
    f1_int8 = quality(truth, after.tolist(), int8.labels)["macro_f1"]
    drop = f1_fp32 - f1_int8
    if agreement < min_agreement or drop > max_f1_drop:
        raise KilnError(f"quantize: parity gate failed: INT8 agrees with FP32 on {agreement:.1%} of {len(texts)} "
                        f"test texts (needs {min_agreement:.1%}) and loses {drop * 100:.2f} macro-F1 points "
                        f"(allowed {max_f1_drop * 100:.2f}); nothing is written")
    return {"int8/agreement": agreement, "int8/macro_f1_drop": drop,
            "fp32/test_macro_f1": f1_fp32, "int8/test_macro_f1": f1_int8}


def run(ctx: StageContext) -> StageResult:
    cfg, paths = ctx.params.quantize, ctx.params.paths
    source = ctx.path(paths.onnx) / "pruned.onnx"
    tokenizer = ctx.path(paths.onnx) / "tokenizer.json"
    if not source.is_file():
        raise KilnError(f"quantize: {source} is missing; the export stage makes it (kiln stage export)")
    metadata = read_metadata(source)
    split = read_split(ctx, "val", "test")
    fp32 = OnnxClassifier(source, tokenizer)
    target = ctx.path(paths.quantized)
    with atomic(target) as tmp:
        if cfg.mode == "static":
            val = split["val"]["text"].tolist()[: cfg.calibration_texts]
            quantize_static(source, tmp, (fp32.encode(val[i : i + 16]) for i in range(0, len(val), 16)))
        else:
            quantize_dynamic(source, tmp)
        stamp(tmp, {**metadata, "quantization": cfg.mode})
        int8 = OnnxClassifier(tmp, tokenizer)
        test = split["test"]
        truth = [fp32.labels.index(label) if label in fp32.labels else -1 for label in test["label"]]
        if min(truth) < 0:
            raise KilnError(f"quantize: test labels {sorted(set(test['label']) - set(fp32.labels))} are not "
                            f"in the model's label map")
        metrics = agreement_gate(fp32, int8, test["text"].tolist(), truth, cfg.min_agreement, cfg.max_f1_drop)
    metrics["int8/size_mb"] = target.stat().st_size / 1e6
    metrics["fp32/size_mb"] = source.stat().st_size / 1e6
    metrics["int8/size_ratio"] = metrics["fp32/size_mb"] / metrics["int8/size_mb"]
    return StageResult(metrics=metrics)

