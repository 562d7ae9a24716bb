"""The data modules: windows over long texts, masking, and what a validation check scores."""

import pytest
import torch

from components.text.data import MaskedLMData, windows
from tests.support.data import tiny_frame
from tests.support.tiny import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_a_corrupt_tokenizer_file_is_named_with_what_to_rerun(tmp_path):
    from components.errors import KilnError
    from components.text.data import load_tokenizer

    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(KilnError, match=r"pretrain: tokenizer .*tokenizer.json is corrupt .*rerun the tokenize stage"):
        load_tokenizer(tmp_path / "tokenizer.json", "pretrain")


def test_windows_cover_the_whole_text(tokenizer):
    text = " ".join(f"word{i}" for i in range(200))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = windows([text], tokenizer, 16)
    assert all(len(w) <= 16 and w[0] == tokenizer.cls_token_id and w[-1] == tokenizer.sep_token_id for w in out)
    assert [t for w in out for t in w[1:-1]] == ids


def test_masking_is_15_percent_with_80_10_10(tokenizer):
    texts = [" ".join(f"story{i % 7} about tech and business" for i in range(60))] * 40
    data = MaskedLMData(texts, texts[:2], tokenizer, 64, 4096, 0.15, seed=0, val_windows=1024)
    batch = data.collator(data.train_rows)
    original = tokenizer.pad(data.train_rows, return_tensors="pt")["input_ids"]
    chosen = batch["labels"] != -100
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    assert not (chosen & special).any()
    share = chosen.sum().item() / (~special).sum().item()
    assert 0.14 < share < 0.16
    inputs = batch["input_ids"][chosen]
    masked = (inputs == tokenizer.mask_token_id).float().mean().item()
    kept = (inputs == original[chosen]).float().mean().item()
    assert 0.77 < masked < 0.83
    # Kept: the 10 % left as they were, plus random replacements that drew the same token.
    assert 0.08 < kept < 0.13
    assert (batch["labels"][chosen] == original[chosen]).all()


def test_val_masks_do_not_change_between_epochs(tokenizer):
    texts = tiny_frame()["text"].tolist()
    data = MaskedLMData(texts, texts, tokenizer, 32, 8, 0.15, seed=0, val_windows=1024)
    first = [b["input_ids"].clone() for b in data.val_dataloader()]
    second = [b["input_ids"] for b in data.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_a_val_check_scores_at_most_val_windows(tokenizer):
    texts = tiny_frame()["text"].tolist()
    every = windows(texts, tokenizer, 8)
    assert len(every) > 40

    def scored(cap: int) -> list[list[int]]:
        data = MaskedLMData(texts, texts, tokenizer, 8, 4, 0.15, seed=0, val_windows=cap)
        return [row.tolist() for batch in data.val_dataloader() for row in batch["labels"]]

    assert len(scored(len(every))) == len(every)  # under the cap: all of them
    assert len(scored(40)) == 40
    assert scored(40) == scored(40)  # the same sample at every check and run


def test_a_classifiers_val_check_scores_a_sample_keeping_label_shares_and_the_split_stays_whole(tokenizer):
    import pandas as pd

    from components.stats import stratified_sample
    from components.text.data import ClassificationData

    # 65 / 25 / 10 %, the skew the checks must keep: a check of 40 texts holds 26 / 10 / 4.
    labels = ["a"] * 130 + ["b"] * 50 + ["c"] * 20
    val = pd.DataFrame({"text": [f"text number {i}" for i in range(200)], "label": labels})
    data = ClassificationData({"val": val}, {"a": 0, "b": 1, "c": 2}, tokenizer, 16, 8, 0, val_texts=40)
    checked = [int(y) for batch in data.val_dataloader() for y in batch["labels"]]
    assert [checked.count(i) for i in range(3)] == [26, 10, 4]
    assert sum(len(batch["labels"]) for batch in data.loader("val")) == 200
    assert stratified_sample(labels, 40, 0) == stratified_sample(labels, 40, 0)  # the same at every check and run
    assert stratified_sample(labels, 40, 0) != stratified_sample(labels, 40, 1)
    assert stratified_sample(["a"] * 99 + ["rare"], 10, 0)[-1] == 99  # every label keeps one text
    whole = ClassificationData({"val": val}, {"a": 0, "b": 1, "c": 2}, tokenizer, 16, 8, 0, val_texts=200)
    assert sum(len(batch["labels"]) for batch in whole.val_dataloader()) == 200


def test_a_classifiers_batches_are_tokenized_as_drawn_and_match_the_tokenizer(tokenizer):
    import numpy as np
    import pandas as pd

    from components.text.data import UNLABELED, ClassificationData

    texts = [" ".join(f"word{j}" for j in range(i % 40 + 1)) for i in range(50)]
    train = pd.DataFrame({"text": texts, "label": ["a", "b", None, "a", "b"] * 10})
    logits = np.arange(100, dtype=np.float32).reshape(50, 2)
    data = ClassificationData({"train": train}, {"a": 0, "b": 1}, tokenizer, 24, 8, 0, teacher_logits={"train": logits})
    # Nothing is tokenized until a loader draws a batch: a row is its text and label id.
    assert set(data.sets["train"][0]) == {"text", "labels", "teacher_logits"}
    batches = list(data.loader("train"))
    assert [len(b["labels"]) for b in batches] == [8] * 6 + [2]
    expected = tokenizer(texts[:8], truncation=True, max_length=24, padding=True, return_tensors="pt")
    first = batches[0]
    assert torch.equal(first["input_ids"], expected["input_ids"])
    assert torch.equal(first["attention_mask"], expected["attention_mask"])
    assert first["input_ids"].shape[1] <= 24 and "token_type_ids" not in first
    assert first["labels"].tolist() == [0, 1, UNLABELED, 0, 1, 0, 1, UNLABELED]
    assert torch.equal(first["teacher_logits"], torch.from_numpy(logits[:8]))
    with pytest.raises(Exception, match=r"labels \['z'\] are not in the model's label map"):
        ClassificationData({"train": train.assign(label="z")}, {"a": 0, "b": 1}, tokenizer, 24, 8, 0)


def test_masked_batches_are_plain_dicts_holding_the_masked_positions(tokenizer):
    # A dict's tensors go to a GPU asynchronously (a BatchEncoding's `to` does not), and the
    # loss picks the masked positions by `masked` instead of a boolean mask that syncs.
    texts = tiny_frame()["text"].tolist()
    data = MaskedLMData(texts, texts, tokenizer, 32, 8, 0.15, seed=0, val_windows=1024)
    for batch in [next(iter(data.train_dataloader())), next(iter(data.val_dataloader()))]:
        assert type(batch) is dict
        assert torch.equal(batch["masked"], (batch["labels"].flatten() != -100).nonzero().squeeze(1))


def test_loader_workers_mask_from_their_own_seeded_streams(tokenizer):
    from components.text.data import Loading

    texts = [" ".join("a story about tech and business" for _ in range(2))] * 64  # identical windows

    def masks(workers: int) -> list[torch.Tensor]:
        data = MaskedLMData(texts, texts[:2], tokenizer, 32, 8, 0.15, 0, 1024, Loading(workers=workers))
        loader = data.train_dataloader()
        assert loader.num_workers == workers and loader.persistent_workers == (workers > 0)
        return [b["labels"] != -100 for b in loader]

    two = masks(2)
    assert all(torch.equal(a, b) for a, b in zip(two, masks(2)))  # the same masks run after run
    # Worker 0 makes batches 0, 2, 4...; worker 1 batches 1, 3, 5. Their rows are alike, so
    # one generator inherited by both would have drawn one mask for batch 0 and batch 1.
    assert two[0].shape == two[1].shape and not torch.equal(two[0], two[1])
