"""The two gated steps between a trained transformer and the file that ships it, as the
export and quantize stages and every search trial take them: ONNX export through the
parity gate against PyTorch, and INT8 quantization through the agreement gate against
FP32. Each stamps its file with the model's `OnnxMetadata` and returns the gate's record."""

from functools import partial
from pathlib import Path

from torch import nn

from components.deploy.config import ExportConfig, QuantizeConfig
from components.deploy.metadata import OnnxMetadata, SearchTrial
from components.deploy.onnx import export, optimize, quantize_dynamic, quantize_static
from components.deploy.parity import Agreement, TorchClassifier, agreement, agreement_gate, parity_gate
from components.deploy.records import Parity, QuantizeReport
from components.runtime.transformer import OnnxClassifier

# The encoder's sizes a file records; a pruned model adds the shapes of its sliced layers.
SIZES = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "kiln_layer_shapes",
)


def metadata_of(
    model: nn.Module,
    name: str,
    labels: dict[str, int],
    made_by: str,
    git_commit: str | None = None,
    git_dirty: bool | None = None,
    data: dict[str, str] | None = None,
    search: SearchTrial | None = None,
) -> OnnxMetadata:
    """The metadata of `model`'s file, candidate `name`, made by the stage `made_by`."""
    config = model.config
    return OnnxMetadata(
        model=name,
        labels=labels,
        max_length=config.max_position_embeddings,
        config={key: getattr(config, key) for key in SIZES if hasattr(config, key)},
        made_by=made_by,
        git_commit=git_commit,
        git_dirty=git_dirty,
        data=data,
        search=search,
    )


def export_with_parity(
    name: str,
    model: nn.Module,
    tokenizer,
    tokens: Path,
    target: Path,
    metadata: OnnxMetadata,
    texts: list[str],
    cfg: ExportConfig,
) -> Parity:
    """`model` as the ONNX file `target` (with ONNX Runtime's fusions where `cfg.optimize`),
    stamped with `metadata`, and its parity with PyTorch on `texts`; a KilnError naming
    `name` where they differ by more than `cfg` allows. `tokenizer` (transformers') makes
    the sample the export traces; `tokens`, its tokenizer.json, feeds both sides of the gate."""
    model.eval()
    length = model.config.max_position_embeddings
    sample = tokenizer(texts[:2], padding=True, truncation=True, max_length=length, return_tensors="pt")
    raw = target.with_name(f"{target.stem}.raw.onnx")
    export(model, dict(sample), raw, cfg.opset)
    if cfg.optimize:
        optimize(raw, target)
        raw.unlink()
    else:
        raw.rename(target)
    metadata.stamp(target)
    torch_side = TorchClassifier(model, tokens, metadata.label_list)
    found = parity_gate(name, torch_side, OnnxClassifier(target, tokens), texts, cfg.max_abs_diff)
    return found.model_copy(update={"size_mb": target.stat().st_size / 1e6})


def quantize_with_agreement(
    source: Path,
    target: Path,
    tokens: Path,
    metadata: OnnxMetadata,
    texts: list[str],
    truth: list[int],
    cfg: QuantizeConfig,
    refuse: bool = False,
) -> QuantizeReport:
    """The FP32 file `source` as INT8 in `target` (`cfg.mode`: dynamic, or static with
    activation ranges calibrated on the first `cfg.calibration_texts` of `texts`), stamped
    with `metadata`, its mode and the agreement gate's report: INT8 against FP32 on all of
    `texts`, the val split, labelled `truth`. A file the gate refuses is reported as such
    (quantize writes it, marked, and select leaves it out), or with `refuse`, a KilnError."""
    fp32 = OnnxClassifier(source, tokens)
    if cfg.mode == "static":
        calibration = texts[: cfg.calibration_texts]
        quantize_static(source, target, (fp32.encode(calibration[i : i + 16]) for i in range(0, len(calibration), 16)))
    else:
        quantize_dynamic(source, target)
    metadata = metadata.model_copy(update={"quantization": cfg.mode})
    metadata.stamp(target)
    measure = partial(agreement_gate, split="val") if refuse else agreement
    report = _report(measure(fp32, OnnxClassifier(target, tokens), texts, truth, cfg), cfg)
    metadata.model_copy(update={"quantize": report}).stamp(target)
    return report


def _report(found: Agreement, cfg: QuantizeConfig) -> QuantizeReport:
    return QuantizeReport(
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
