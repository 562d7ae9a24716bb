"""ONNX export, graph optimisation and INT8 quantization of Kiln classifiers (their parity
gates are in components/deploy/parity.py).

An exported file describes itself: its metadata carries the label map, the token limit
and whatever lineage the caller stamps on it (git commit, data hash), so a runtime needs
only the file and its tokenizer.
"""

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

INPUTS = ["input_ids", "attention_mask"]


class _Logits(nn.Module):
    """The classifier as ONNX sees it: token ids and mask in, logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export(model: nn.Module, sample: dict[str, torch.Tensor], path: Path, opset: int) -> None:
    """Trace `model` on `sample` into `path` with dynamic batch and sequence axes.
    TorchScript tracing (dynamo=False): the dynamo exporter needs onnxscript."""
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    axes["logits"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            _Logits(model).eval(),
            tuple(sample[name] for name in INPUTS),
            str(path),
            input_names=INPUTS,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


def optimize(src: Path, dst: Path) -> None:
    """ONNX Runtime's BERT fusions; head count and width are read from the graph, so
    pruned layers with fewer heads are left unfused rather than fused wrongly."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=1)
    optimized.save_model_to_file(str(dst))


def quantize_dynamic(src: Path, dst: Path) -> None:
    """INT8 weights, activations quantized on the fly: needs no calibration data."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    # ORT's fused nodes (com.microsoft domain) have no ONNX shape inference; their
    # outputs are float tensors.
    ort_quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}
    )


def quantize_static(src: Path, dst: Path, calibration: Iterable[dict[str, np.ndarray]]) -> None:
    """INT8 weights and activations, activation ranges calibrated on `calibration`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self, feeds: Iterable[dict[str, np.ndarray]]):
            self.feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    # The weight-heavy ops only: the rest (LayerNorm, softmax, the pooled division) loses
    # more accuracy than it saves time, and an int32 bias needs ranges they lack.
    ort_quantize_static(
        str(src),
        str(dst),
        _Reader(calibration),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gather"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
