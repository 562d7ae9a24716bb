"""Shipping a model: ONNX export and INT8 quantization with their parity checks,
evaluation, selection and the promotion gate."""
