"""The split adapter, in process: duplicates and conflicting labels dropped and counted, then
three splits that share no text, and their sizes as metrics."""

import json

import pandas as pd

from components.data.schema import normalise
from pipelines.core.io import write_parquet
from pipelines.tracking import metrics
from tests.support.data import dataset, tiny_frame
from tests.support.stages import run_stage, stage_repo


def test_split_writes_three_splits_that_share_no_text_and_counts_what_it_dropped(tmp_path):
    root = stage_repo(tmp_path / "kiln")
    frame = tiny_frame()
    twice = frame.iloc[[3]]  # the same text and label again
    conflicting = pd.DataFrame({"text": ["A story both ways.", "a story  BOTH ways."], "label": ["tech", "sports"]})
    write_parquet(dataset(pd.concat([frame, twice, conflicting])), root / "data/validated/dataset.parquet")
    _, result = run_stage(root, "split")

    splits = {name: pd.read_parquet(root / f"data/split/{name}.parquet") for name in ("train", "val", "test")}
    assert sum(len(part) for part in splits.values()) == len(frame)
    keys = [{normalise(text) for text in part["text"]} for part in splits.values()]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert result.metrics == {
        **{f"split/{name}_rows": len(part) for name, part in splits.items()},
        "data/duplicates_dropped": 1,
        "data/conflicts_dropped": 2,
    }
    assert not metrics.unknown(result.metrics)
    report = json.loads((root / "reports/split_classes.json").read_text())
    assert result.artifacts == {"split": root / "reports/split_classes.json"}
    assert {name: report[name]["rows"] for name in splits} == {name: len(part) for name, part in splits.items()}
