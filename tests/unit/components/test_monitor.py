"""The production loop's parts: the inference log's writer and reader, the watch over a
window of traffic, and the labelling queue."""

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tokenizers import Tokenizer

from components.data.drift import profile
from components.errors import KilnError
from components.monitor import inference, labelling
from components.monitor.watch import watch
from components.text.tokenizer import train_tokenizer
from tests.support.data import LABELS, drifted_batch, good_batch, tiny_frame
from tests.support.params import shipped


def answers(texts: list[str], label: str = "tech", top: float = 0.6) -> pd.DataFrame:
    """What the served model answers: a label and a probability column per label."""
    rest = (1 - top) / (len(LABELS) - 1)
    return pd.DataFrame([{"label": label, **{k: top if k == label else rest for k in LABELS}} for _ in texts])


def served(folder: Path, log_text: str = "masked", mask=None, **cfg) -> inference.InferenceLog:
    config = shipped("serve", log_text=log_text, **cfg)
    if log_text == "masked" and mask is None:
        mask = lambda texts: [t.replace("jane@example.com", "<EMAIL>") for t in texts]  # noqa: E731
    return inference.InferenceLog(folder, "kiln-test", "3", config, mask)


def test_the_log_keeps_each_text_masked_with_its_answer_and_writes_nothing_until_a_batch_is_due(tmp_path):
    log = served(tmp_path, flush_rows=3, flush_s=60)
    log.record(["mail jane@example.com today", "second"], answers(["a", "b"]), 4.5)
    time.sleep(0.2)
    assert not list(tmp_path.rglob("*.parquet")), "two texts of three: no batch yet"
    log.record(["third"], answers(["c"], label="sports", top=0.9), 1.0)
    log.close()
    rows = inference.read(tmp_path)
    assert rows["text"].tolist() == ["mail <EMAIL> today", "second", "third"]
    assert rows["length"].tolist() == [27, 6, 5] and rows["sha256"].isna().all()
    assert rows["label"].tolist() == ["tech", "tech", "sports"] and rows["version"].unique().tolist() == ["3"]
    assert rows["confidence"].round(4).tolist() == [0.6, 0.6, 0.9]
    assert rows["margin"].round(4).tolist() == [0.5, 0.5, 0.875]
    assert rows["latency_ms"].tolist() == [4.5, 4.5, 1.0] and rows["request"].nunique() == 2
    assert json.loads(rows["probabilities"][2])["sports"] == 0.9
    assert "jane@example.com" not in b"".join(p.read_bytes() for p in tmp_path.rglob("*.parquet")).decode("latin-1")
    # A batch a day folder of UTC, under its final name only.
    (day,) = tmp_path.iterdir()
    assert day.name == datetime.now(UTC).strftime("%Y-%m-%d") and [f.suffix for f in day.iterdir()] == [".parquet"]


def test_a_batch_is_written_flush_s_after_the_last_even_if_small(tmp_path):
    log = served(tmp_path, flush_rows=1000, flush_s=0.2)
    log.record(["one"], answers(["one"]), 1.0)
    deadline = time.monotonic() + 10
    while not list(tmp_path.rglob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(inference.read(tmp_path)) == 1, "written while the log stays open"
    log.close()


def test_hash_keeps_only_a_digest_and_off_only_the_length(tmp_path):
    import hashlib

    for mode in ("hash", "off"):
        log = served(tmp_path / mode, log_text=mode)
        log.record(["private words"], answers(["x"]), 1.0)
        log.close()
        row = inference.read(tmp_path / mode).iloc[0]
        assert row["text"] is None and row["length"] == 13
        digest = hashlib.sha256(b"private words").hexdigest()
        assert row["sha256"] == (digest if mode == "hash" else None)


def test_a_log_that_cannot_write_drops_the_batch_and_never_raises(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    log = served(blocked, log_text="off", flush_rows=1)
    log.record(["a"], answers(["a"]), 1.0)
    log.close()
    assert log.dropped == 1 and log.written == 0


def test_retention_deletes_old_days_then_the_oldest_files_beyond_the_size_bound(tmp_path):
    now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    for days in (0, 1, 2, 40):
        day = tmp_path / (now - timedelta(days=days)).strftime("%Y-%m-%d")
        day.mkdir()
        (day / "a.parquet").write_bytes(b"x" * 400_000)
    inference.prune(tmp_path, shipped("serve", retention_days=30, max_mb=1.0), now)
    assert sorted(p.parent.name for p in tmp_path.glob("*/*.parquet")) == ["2026-12-03", "2026-12-04"]
    assert not (tmp_path / "2026-10-25").exists()


def test_read_takes_the_window_only(tmp_path):
    log = served(tmp_path, log_text="off", flush_rows=1)
    log.record(["a"], answers(["a"]), 1.0)
    log.close()
    now = datetime.now(UTC)
    assert len(inference.read(tmp_path, since=now - timedelta(hours=1))) == 1
    assert inference.read(tmp_path, since=now + timedelta(seconds=1)).empty
    assert inference.read(tmp_path / "never", since=now).columns.tolist() == inference.COLUMNS


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer(tiny_frame()["text"], shipped("tokenize", vocab_size=300, min_frequency=1))


def traffic(frame: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Log rows of `frame`'s texts, each answered with its own label."""
    return pd.DataFrame(
        {
            "text": frame["text"],
            "length": frame["text"].str.len(),
            "label": frame["label"],
            "confidence": confidence,
        }
    )


def test_watch_passes_traffic_like_training_and_flags_another_domain(tokenizer):
    reference = profile(tiny_frame(), tokenizer)
    reference.confidence = 0.8
    cfg = shipped("monitor", min_requests=10)
    start, end = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 4, tzinfo=UTC)
    same = watch(traffic(good_batch(), 0.78), reference, tokenizer, cfg, "m", "1", start, end)
    assert [c.name for c in same.checks] == ["predictions", "length", "vocabulary", "confidence"]
    assert not same.failed and "no drift in m v1, 20 texts" in same.headline
    other = watch(traffic(drifted_batch(), 0.4), reference, tokenizer, cfg, "m", "1", start, end)
    assert {c.name for c in other.failed} == {"predictions", "length", "vocabulary", "confidence"}
    assert other.headline.startswith("drift in m v1")


def test_watch_gives_no_verdict_on_too_little_traffic_and_says_what_a_hashed_log_cannot_check(tokenizer):
    reference = profile(tiny_frame(), tokenizer)
    start, end = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 4, tzinfo=UTC)
    few = watch(traffic(good_batch(), 0.8), reference, tokenizer, shipped("monitor"), "m", "1", start, end)
    assert few.skipped and "fewer than monitor.min_requests (100)" in few.skipped and not few.checks
    hashed = traffic(good_batch(), 0.8).assign(text=None)
    blind = watch(hashed, reference, tokenizer, shipped("monitor", min_requests=10), "m", "1", start, end)
    assert [c.name for c in blind.checks] == ["predictions", "length"]
    assert any("serve.log_text is hash or off" in n for n in blind.notes)
    assert any("no val confidence" in n for n in blind.notes)


def test_candidates_are_distinct_and_never_a_known_text():
    texts = pd.Series(["Buy now", "buy  NOW", "Known one", None, "fresh", "fresh"])
    pool = labelling.candidates(texts, ["known ONE"])
    assert pool["text"].tolist() == ["Buy now", "fresh"] and pool["asked"].tolist() == [2, 2]


def test_the_queue_takes_the_least_sure_spread_over_labels_and_clusters():
    # Two labels, each with two kinds of text; within each kind, the model unsure of some.
    rows, probabilities = [], []
    for label, other in (("sports", "tech"), ("tech", "sports")):
        for kind in ("football match goal", "tennis racket serve" if label == "sports" else "chip silicon wafer"):
            for i in range(20):
                rows.append(f"{kind} {label} story {i}")
                sure = 0.55 if i < 3 else 0.95
                probabilities.append({label: sure, other: 1 - sure})
    pool = labelling.candidates(pd.Series(rows), [])
    matrix = np.array([[p["sports"], p["tech"]] for p in probabilities])
    queue = labelling.choose(pool, matrix, ["sports", "tech"], n=8, clusters=4, seed=0)
    assert len(queue) == 8 and queue["guess"].value_counts().to_dict() == {"sports": 4, "tech": 4}
    assert queue["cluster"].nunique() == 4, "each kind of text gets its turn"
    assert (queue["margin"].round(2) == 0.1).all(), "the unsure ones first"
    assert len(labelling.choose(pool, matrix, ["sports", "tech"], n=500, clusters=4, seed=0)) == len(pool)


def test_labels_are_read_from_the_queue_csv_and_from_label_studio_exports(tmp_path):
    csv = tmp_path / "queue.csv"
    pd.DataFrame({"id": ["e-0001", "e-0002"], "text": ["a", "b"], "label": ["tech", ""]}).to_csv(csv, index=False)
    assert labelling.read_labels(csv)[["id", "label"]].values.tolist() == [["e-0001", "tech"], ["e-0002", ""]]
    full = [
        {
            "id": 7,
            "data": {"text": "a", "kiln_id": "e-0001"},
            "annotations": [
                {"result": [{"value": {"choices": ["sports"]}}], "completed_by": {"email": "rita@example.com"}},
                {"result": [{"value": {"choices": ["tech"]}}], "was_cancelled": True},
            ],
        },
        {"id": 8, "data": {"text": "b", "kiln_id": "e-0002"}, "annotations": []},
    ]
    (tmp_path / "full.json").write_text(json.dumps(full))
    read = labelling.read_labels(tmp_path / "full.json")
    assert read.values.tolist() == [["e-0001", "sports", "rita@example.com"], ["e-0002", "", ""]]
    minimal = [{"kiln_id": "e-0001", "text": "a", "label": "politics", "annotator": 3}]
    (tmp_path / "min.json").write_text(json.dumps(minimal))
    assert labelling.read_labels(tmp_path / "min.json").values.tolist() == [["e-0001", "politics", "3"]]
    (tmp_path / "other.json").write_text(json.dumps([{"data": {"text": "a"}}]))
    with pytest.raises(KilnError, match="task 1 has no kiln_id"):
        labelling.read_labels(tmp_path / "other.json")


def test_labels_are_checked_against_the_export_and_the_known_labels(tmp_path):
    exported, known, path = {"e-0001": "a", "e-0002": "b"}, {"tech", "sports"}, tmp_path / "f.csv"

    def rows(*pairs):
        return pd.DataFrame({"id": [p[0] for p in pairs], "label": [p[1] for p in pairs], "labelled_by": ""})

    done = labelling.check_labels(rows(("e-0001", "tech"), ("e-0002", "")), exported, known, path)
    assert done["id"].tolist() == ["e-0001"]
    with pytest.raises(KilnError, match="1 id\\(s\\) this export did not hand out, e.g. x-1"):
        labelling.check_labels(rows(("x-1", "tech")), exported, known, path)
    with pytest.raises(KilnError, match="unknown label\\(s\\) 'astrology'; the model knows sports, tech"):
        labelling.check_labels(rows(("e-0001", "astrology")), exported, known, path)
    with pytest.raises(KilnError, match="no row has a label"):
        labelling.check_labels(rows(("e-0001", "")), exported, known, path)
    with pytest.raises(KilnError, match="more than once: e-0001"):
        labelling.check_labels(rows(("e-0001", "tech"), ("e-0001", "sports")), exported, known, path)


def test_the_label_studio_files_hold_kiln_ids_guesses_and_each_label_once():
    queue = pd.DataFrame({"id": ["e-0001"], "text": ["a <b>"], "guess": ["tech"], "confidence": [0.51234]})
    (task,) = labelling.label_studio_tasks(queue, "kiln-test v3")
    assert task["data"] == {"text": "a <b>", "kiln_id": "e-0001"}
    assert task["predictions"][0]["result"][0]["value"] == {"choices": ["tech"]}
    assert task["predictions"][0]["model_version"] == "kiln-test v3" and task["predictions"][0]["score"] == 0.5123
    config = labelling.label_studio_config(["tech", 'say "hi"'])
    assert '<Choice value="tech"/>' in config and "<Choice value='say \"hi\"'/>" in config
