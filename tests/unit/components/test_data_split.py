import pandas as pd

from components.data.bbc import read_bbc
from components.data.schema import normalise
from components.data.split import split, split_report
from tests.support.params import shipped


def test_bbc_split_has_no_text_in_two_splits():
    result = split(read_bbc(), shipped("split"))
    seen: dict[str, str] = {}
    for name, frame in result.frames().items():
        for text in frame["text"]:
            key = normalise(text)
            assert seen.setdefault(key, name) == name, f"text in {seen[key]} and {name}"
    assert result.duplicates_dropped == 101
    assert sum(len(f) for f in result.frames().values()) == 2225 - 101


def test_split_is_stratified_and_sized():
    report = split_report(split(read_bbc(), shipped("split")))
    for name, expected in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(report[name]["share"] - expected) < 0.03
    totals = pd.DataFrame({n: report[n]["classes"] for n in ("train", "val", "test")})
    shares = totals.div(totals.sum(axis=1), axis=0)
    assert (shares["train"].between(0.72, 0.88)).all(), shares


def test_old_texts_keep_their_split_when_data_arrives():
    bbc = read_bbc()
    old = split(bbc.iloc[:1500], shipped("split"))
    new = split(bbc, shipped("split"))
    for name in ("train", "val", "test"):
        assert set(old.frames()[name]["id"]) <= set(new.frames()[name]["id"]), name


def test_conflicting_labels_are_dropped():
    frame = pd.DataFrame(
        {"id": ["a", "b", "c"], "text": ["Same text", "same  TEXT", "other"], "label": ["x", "y", "x"], "source": "t"}
    )
    result = split(frame, shipped("split"))
    assert result.conflicts_dropped == 2
    assert sum(len(f) for f in result.frames().values()) == 1


def test_salt_reshuffles():
    bbc = read_bbc()
    a = split(bbc, shipped("split")).test["id"]
    b = split(bbc, shipped("split", salt="other")).test["id"]
    assert set(a) != set(b)


def test_a_transfer_set_holds_no_text_of_any_split_and_each_text_once():
    from components.data.split import transfer_set

    splits = [
        pd.DataFrame({"text": ["Markets rose today."]}),  # train
        pd.DataFrame({"text": ["The minister resigned."]}),  # val
        pd.DataFrame({"text": ["A late goal won it."]}),  # test
    ]
    unlabeled = pd.DataFrame(
        {
            "id": [f"u.jsonl:{i}" for i in range(8)],
            "text": [
                "the  MINISTER resigned.",  # val's text, in other case and spacing
                "A late goal won it.",  # test's
                "Markets rose today.",  # train's
                "Rain is forecast.",
                "rain is  forecast.",  # the same text again
                "   ",
                None,
                "x" * 200,  # longer than max_chars
            ],
        }
    )
    found = transfer_set(unlabeled, splits, min_chars=1, max_chars=100)
    assert found.frame.to_dict("records") == [{"id": "u.jsonl:3", "text": "Rain is forecast."}]
    assert (found.in_splits_dropped, found.duplicates_dropped, found.invalid_dropped) == (3, 1, 3)
    empty = transfer_set(unlabeled.iloc[:0], splits, 1, 100)
    assert empty.frame.empty and list(empty.frame.columns) == ["id", "text"]
