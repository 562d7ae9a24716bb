"""Inference with Kiln's exported ONNX files: the session and request checks every family
shares (session), the transformer's runtime (transformer), the classical family's
(classical), and the one loader that picks by the file's metadata (loader)."""
