"""The classical family: TF-IDF n-grams and a linear model, chosen on val and served from
one ONNX file, as a candidate beside the transformer chain."""
