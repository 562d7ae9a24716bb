"""quantize: the exported student as INT8 ONNX (dynamic by default, static with val-split
calibration as an option), through a parity gate against the FP32 file. The gate's
measurements travel inside the INT8 file's metadata."""

from components.deploy.metadata import read_metadata, stamp
from components.deploy.onnx import quantize_dynamic, quantize_static
from components.deploy.parity import agreement_gate
from components.deploy.runtime import OnnxClassifier
from components.errors import KilnError
from pipelines.contract import StageContext, StageResult
from pipelines.io import atomic
from pipelines.records import QuantizeReport

REPORT_KEY = "kiln.quantize"


def run(ctx: StageContext) -> StageResult:
    cfg, paths = ctx.params.quantize, ctx.params.paths
    source = ctx.input(f"{paths.onnx}/pruned.onnx", "ONNX model")
    tokenizer = ctx.input(paths.onnx_tokenizer("pruned"), "tokenizer")
    split = ctx.read_split("val", "test")
    fp32 = OnnxClassifier(source, tokenizer)
    test = split["test"]
    unknown = sorted(set(test["label"]) - set(fp32.labels))
    if unknown:
        raise KilnError(f"quantize: test labels {unknown} are not in the model's label map {fp32.labels}")
    truth = [fp32.labels.index(label) for label in test["label"]]
    target = ctx.path(paths.quantized)
    with atomic(target) as tmp:
        if cfg.mode == "static":
            val = split["val"]["text"].tolist()[: cfg.calibration_texts]
            quantize_static(source, tmp, (fp32.encode(val[i : i + 16]) for i in range(0, len(val), 16)))
        else:
            quantize_dynamic(source, tmp)
        metadata = {**read_metadata(source), "quantization": cfg.mode}
        stamp(tmp, metadata)
        found = agreement_gate(
            fp32, OnnxClassifier(tmp, tokenizer), test["text"].tolist(), truth, cfg.min_agreement, cfg.max_f1_drop
        )
        report = QuantizeReport(
            mode=cfg.mode,
            agreement=found.agreement,
            fp32_macro_f1=found.fp32_macro_f1,
            int8_macro_f1=found.int8_macro_f1,
            min_agreement=cfg.min_agreement,
            max_f1_drop=cfg.max_f1_drop,
        )
        stamp(tmp, {**metadata, REPORT_KEY: report.model_dump()})
    fp32_mb, int8_mb = source.stat().st_size / 1e6, target.stat().st_size / 1e6
    return StageResult(
        metrics={
            "onnx_int8/agreement": found.agreement,
            "onnx_int8/macro_f1_drop": found.fp32_macro_f1 - found.int8_macro_f1,
            "onnx_fp32/test_macro_f1": found.fp32_macro_f1,
            "onnx_int8/test_macro_f1": found.int8_macro_f1,
            "onnx_int8/size_mb": int8_mb,
            "onnx_fp32/size_mb": fp32_mb,
            "onnx_int8/size_ratio": fp32_mb / int8_mb,
        }
    )
