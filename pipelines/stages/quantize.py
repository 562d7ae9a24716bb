"""quantize: the exported student as INT8 ONNX (dynamic by default, static with val-split
calibration as an option), through a parity gate against the FP32 file on the whole val
split (test is for the report). The gate's verdict travels inside the INT8 file's
metadata. A refused file is still written, as DVC expects, but marked refused: select
leaves it out and the run goes on with the other candidates."""

from pydantic import ValidationError

from components.deploy.metadata import read_metadata, stamp
from components.deploy.onnx import quantize_dynamic, quantize_static
from components.deploy.parity import agreement
from components.deploy.runtime import OnnxClassifier
from components.errors import KilnError
from pipelines.core.io import atomic
from pipelines.core.records import QuantizeReport
from pipelines.stagekit.contract import StageContext, StageResult

REPORT_KEY = "kiln.quantize"
REFUSED_TAG = "kiln.quantize.refused"


def run(ctx: StageContext) -> StageResult:
    cfg, paths = ctx.params.quantize, ctx.params.paths
    source = ctx.input(f"{paths.onnx}/pruned.onnx", "ONNX model")
    tokenizer = ctx.input(paths.onnx_tokenizer("pruned"), "tokenizer")
    val = ctx.read_split("val")["val"]
    fp32 = OnnxClassifier(source, tokenizer)
    unknown = sorted(set(val["label"]) - set(fp32.labels))
    if unknown:
        raise KilnError(f"quantize: val labels {unknown} are not in the model's label map {fp32.labels}")
    texts = val["text"].tolist()
    truth = [fp32.labels.index(label) for label in val["label"]]
    target = ctx.path(paths.quantized)
    with atomic(target) as tmp:
        if cfg.mode == "static":
            calibration = texts[: cfg.calibration_texts]
            quantize_static(source, tmp, (fp32.encode(calibration[i : i + 16]) for i in range(0, len(calibration), 16)))
        else:
            quantize_dynamic(source, tmp)
        metadata = {**read_metadata(source), "quantization": cfg.mode}
        stamp(tmp, metadata)
        found = agreement(fp32, OnnxClassifier(tmp, tokenizer), texts, truth, cfg)
        report = QuantizeReport(
            mode=cfg.mode,
            texts=found.texts,
            agreement=found.agreement,
            fp32_macro_f1=found.fp32_macro_f1,
            int8_macro_f1=found.int8_macro_f1,
            one_text_f1=found.one_text_f1,
            min_agreement=cfg.min_agreement,
            max_f1_drop=cfg.max_f1_drop,
            allowed_disagreements=found.tolerance.disagreements,
            allowed_f1_drop=found.tolerance.f1_drop,
            passed=found.passed,
            verdict=found.verdict("val"),
        )
        stamp(tmp, {**metadata, REPORT_KEY: report.model_dump()})
    summary = []
    if not report.passed:
        ctx.run.set_tags({REFUSED_TAG: report.verdict})
        summary = [f"INT8 refused, not a candidate of select: {report.verdict}"]
    fp32_mb, int8_mb = source.stat().st_size / 1e6, target.stat().st_size / 1e6
    return StageResult(
        metrics={
            "onnx_int8/passed": float(report.passed),
            "onnx_int8/val_agreement": report.agreement,
            "onnx_int8/val_macro_f1_drop": report.fp32_macro_f1 - report.int8_macro_f1,
            "onnx_int8/val_allowed_f1_drop": report.allowed_f1_drop,
            "onnx_int8/val_allowed_disagreements": float(report.allowed_disagreements),
            "onnx_fp32/val_macro_f1": report.fp32_macro_f1,
            "onnx_int8/val_macro_f1": report.int8_macro_f1,
            "onnx_int8/size_mb": int8_mb,
            "onnx_fp32/size_mb": fp32_mb,
            "onnx_int8/size_ratio": fp32_mb / int8_mb,
        },
        summary=summary,
    )


def report(ctx: StageContext) -> QuantizeReport:
    """The verdict quantize stamped into the INT8 file."""
    path = ctx.input(ctx.params.paths.quantized, "INT8 model")
    try:
        return QuantizeReport.model_validate(read_metadata(path).get(REPORT_KEY))
    except ValidationError as err:
        raise KilnError(
            f"{ctx.name}: {path} carries no valid quantize report ({str(err).splitlines()[0]}); "
            "rerun the quantize stage"
        ) from None
