"""The tokenize adapter, in process: a vocabulary learned from the train split alone, and
how well it covers those texts."""

import pandas as pd
from tokenizers import Tokenizer

from pipelines.core.io import write_parquet
from pipelines.tracking import metrics
from tests.support.data import dataset, tiny_frame
from tests.support.stages import run_stage, stage_repo


def test_tokenize_learns_from_train_alone_and_measures_its_coverage(tmp_path):
    root = stage_repo(tmp_path / "kiln", tokenize={"vocab_size": 1000})  # room for every marker
    frame = tiny_frame(30)
    # A marker word a row, three times so that it clears min_frequency: where each marker
    # lands tells whether the tokenizer saw that row's split.
    frame["text"] = [f"{text} marker{i}x marker{i}x marker{i}x" for i, text in enumerate(frame["text"])]
    write_parquet(dataset(frame), root / "data/validated/dataset.parquet")
    run_stage(root, "split")
    _, result = run_stage(root, "tokenize")

    tokenizer = Tokenizer.from_file(str(root / "models/tokenizer.json"))
    vocab = set(tokenizer.get_vocab())
    splits = {name: pd.read_parquet(root / f"data/split/{name}.parquet") for name in ("train", "val", "test")}

    def markers(*names: str) -> set[str]:
        return {w for name in names for text in splits[name]["text"] for w in text.split() if w.startswith("marker")}

    assert markers("train") and markers("train") <= vocab
    assert markers("val", "test") and not markers("val", "test") & vocab
    assert result.metrics["tokenizer/vocab_size"] == tokenizer.get_vocab_size() <= 1000
    assert result.metrics["tokenizer/unk_rate"] == 0.0  # every train word is in its own vocabulary
    assert 0 < result.metrics["tokenizer/tokens_per_text"] <= result.metrics["tokenizer/tokens_p95"]
    assert not metrics.unknown(result.metrics)
