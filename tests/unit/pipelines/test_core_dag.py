"""The DAG as DVC reads it: which stage makes an input."""

from pipelines.core import dag


def test_the_stage_that_makes_an_input_is_read_from_the_graph():
    made = {"data/split/train.parquet": "split", "models/onnx": "export", "models/teacher": "finetune"}
    assert dag.producer_of("data/split", made) == "split"  # a folder of outputs
    assert dag.producer_of("models/onnx/tokenizer.json", made) == "export"  # a file inside one
    assert dag.producer_of("models/teacher", made) == "finetune"
    assert dag.producer_of("data/external", made) is None
