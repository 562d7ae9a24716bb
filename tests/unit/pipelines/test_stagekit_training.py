"""Fitting and scoring shared by the training stages: the final score, and the model card."""

import json

import pytest

from components.text.tokenizer import train_tokenizer
from pipelines.core.records import ModelCard
from tests.support.data import TEXTS, tiny_frame
from tests.support.params import shipped
from tests.support.stages import evaluate_context
from tests.support.tiny import tiny_bert, tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_the_final_score_reads_val_predictions_off_its_own_pass(tokenizer):
    import lightning as L

    from components.text.classifier import predict_labels
    from components.text.data import ClassificationData
    from components.text.modules import Classifier
    from pipelines.stagekit.training import score

    frame = tiny_frame().assign(id=lambda f: [f"t{i}" for i in range(len(f))])
    names = sorted(set(frame["label"]))
    val = frame.iloc[::2].reset_index(drop=True)
    data = ClassificationData(
        {"val": val, "test": frame.iloc[1::2]}, {n: i for i, n in enumerate(names)}, tokenizer, 16, 8, 0, val_texts=10
    )
    model = tiny_bert(len(tokenizer), 16, 1, 32, len(names))
    module = Classifier(model, shipped("finetune.optim"), {}, len(names))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    scored = score(trainer, module, data)
    # The whole split in its order (not the check's sample), as a second pass would predict it.
    assert (scored.truth, scored.predicted) == predict_labels(model, data.loader("val"))
    assert scored.ids == val["id"].tolist()
    assert len(scored.truth) == len(val) > 10
    right = sum(t == p for t, p in zip(scored.truth, scored.predicted))
    assert scored.metrics["val/accuracy"] == pytest.approx(right / len(val))
    assert {"val/macro_f1", "test/macro_f1", "test/accuracy"} <= set(scored.metrics)


def test_a_model_card_carries_the_sequence_length_and_an_older_card_takes_it_from_the_config(tmp_path):
    from transformers import PreTrainedTokenizerFast

    from components.text.classifier import MeanPoolClassifier
    from components.text.model import bert_config
    from pipelines.stagekit.training import load_model, save_model

    tokenizer = train_tokenizer(TEXTS, shipped("tokenize", vocab_size=200, min_frequency=1))
    encoder = shipped("encoder", layers=1, hidden=32, heads=2, intermediate=64, max_length=24)
    model = MeanPoolClassifier(bert_config(encoder, tokenizer.get_vocab_size(), 0, num_labels=2))
    described = ModelCard(stage="finetune", tokenizer="sha", params={}, data={}, metrics={})
    ctx = evaluate_context(("evaluate",), tmp_path)
    save_model(ctx, model, PreTrainedTokenizerFast(tokenizer_object=tokenizer), described, "models/teacher")
    written = tmp_path / "models/teacher/kiln.json"
    assert ModelCard.read(written, "test", "finetune").max_length == 24
    # A card written before the length was: the model's position table says it.
    older = ModelCard.read(written, "test", "finetune").model_dump(exclude={"max_length"})
    written.write_text(json.dumps(older))
    assert load_model(ctx, "models/teacher", MeanPoolClassifier)[2].max_length == 24


def test_a_classifier_keeps_its_val_predictions_for_that_split_only(tmp_path, tokenizer):
    from components.errors import KilnError
    from pipelines.stagekit.training import Scores, save_model, val_predictions

    frame = tiny_frame().assign(id=lambda f: [f"t{i}" for i in range(len(f))])
    val = frame.iloc[::2].reset_index(drop=True)
    model = tiny_bert(len(tokenizer), 16, 1, 32, 2)
    described = ModelCard(stage="finetune", tokenizer="sha", params={}, data={}, metrics={})
    ctx = evaluate_context(("evaluate",), tmp_path)
    predicted = [i % 2 for i in range(len(val))]
    scored = Scores({}, [0] * len(val), predicted, val["id"].tolist())
    save_model(ctx, model, tokenizer, described, "models/teacher", scored)
    assert val_predictions(ctx, "models/teacher", val) == predicted
    # Another val split (a changed split, other rows, another order): the teacher must answer again.
    assert val_predictions(ctx, "models/teacher", frame.iloc[1::2]) is None
    assert val_predictions(ctx, "models/teacher", val.iloc[::-1]) is None
    save_model(ctx, model, tokenizer, described, "models/student")  # no final score given: none kept
    assert val_predictions(ctx, "models/student", val) is None
    (tmp_path / "models/teacher/val_predictions.json").write_text("{half")
    with pytest.raises(KilnError, match=r"val_predictions.json is corrupt; rerun the"):
        val_predictions(ctx, "models/teacher", val)
