"""quantize: the exported student as INT8 ONNX (dynamic by default, static with val-split
calibration as an option), through a parity gate against the FP32 file on the whole val
split (test is for the report). The gate's verdict travels inside the INT8 file's
metadata. A refused file is still written, as DVC expects, but marked refused: select
leaves it out and the run goes on with the other candidates."""

from pydantic import ValidationError

from components.deploy.gated import quantize_with_agreement
from components.deploy.metadata import QUANTIZE_KEY, OnnxMetadata, read_metadata
from components.deploy.records import QuantizeReport
from components.errors import KilnError
from pipelines.core.io import atomic
from pipelines.stagekit.contract import StageContext, StageResult

REFUSED_TAG = "kiln.quantize.refused"


def run(ctx: StageContext) -> StageResult:
    cfg, paths = ctx.params.quantize, ctx.params.paths
    source = ctx.input(f"{paths.onnx}/pruned.onnx", "ONNX model")
    tokenizer = ctx.input(paths.onnx_tokenizer("pruned"), "tokenizer")
    val = ctx.read_split("val")["val"]
    metadata = OnnxMetadata.read(source)
    labels = metadata.label_list
    unknown = sorted(set(val["label"]) - set(labels))
    if unknown:
        raise KilnError(f"quantize: val labels {unknown} are not in the model's label map {labels}")
    texts = val["text"].tolist()
    truth = [labels.index(label) for label in val["label"]]
    target = ctx.path(paths.quantized)
    with atomic(target) as tmp:
        report = quantize_with_agreement(source, tmp, tokenizer, metadata, texts, truth, cfg)
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
        return QuantizeReport.model_validate(read_metadata(path).get(QUANTIZE_KEY))
    except ValidationError as err:
        raise KilnError(
            f"{ctx.name}: {path} carries no valid quantize report ({str(err).splitlines()[0]}); "
            "rerun the quantize stage"
        ) from None
