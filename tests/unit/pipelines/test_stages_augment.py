"""The augment adapter, in process: copies of the train split alone, each operation counted."""

import pandas as pd

from pipelines.core.io import write_parquet
from pipelines.tracking import metrics
from tests.support.data import dataset
from tests.support.stages import run_stage, stage_repo


def test_augment_copies_train_rows_only_and_counts_each_operation(tmp_path):
    root = stage_repo(tmp_path / "kiln")
    write_parquet(dataset(), root / "data/validated/dataset.parquet")
    run_stage(root, "split")
    _, result = run_stage(root, "augment")

    train = pd.read_parquet(root / "data/split/train.parquet")
    copies = pd.read_parquet(root / "data/augmented/train.parquet")
    assert len(copies) == len(train)  # augment.factor 1, and every tiny text is long enough
    assert set(copies["origin_id"]) == set(train["id"]) and set(copies["source"]) == {"augment"}
    assert (copies["label"] == copies["origin_id"].map(train.set_index("id")["label"])).all()
    assert result.metrics["augment/rows"] == len(copies) and result.metrics["augment/skipped"] == 0
    counts = {key: n for key, n in result.metrics.items() if key not in ("augment/rows", "augment/skipped")}
    ops = {key.removeprefix("augment/"): n for key, n in counts.items()}
    assert ops == copies["op"].value_counts().to_dict() and set(ops) <= {"delete", "swap", "insert", "mask"}
    assert not metrics.unknown(result.metrics) and result.summary == []
