"""Shipping a model: ONNX export and INT8 quantization with their parity checks,
inference through ONNX Runtime, evaluation and the promotion gate."""
