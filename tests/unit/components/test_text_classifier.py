"""The classifier: a frozen pretrained teacher trains only its upper layers and head."""

from tests.support.params import shipped


def test_a_frozen_pretrained_teacher_trains_only_its_upper_layers_and_head():
    from components.text.classifier import MeanPoolClassifier, frozen
    from components.text.model import bert_config

    config = bert_config(shipped("encoder", layers=4, hidden=32, heads=2, intermediate=64, max_length=16), 50, 0)
    config.num_labels = 3
    model = MeanPoolClassifier(config)
    frozen(model, 3)
    trained = {
        name.split(".")[3] if name.startswith("bert.encoder") else name.split(".")[0]
        for name, p in model.named_parameters()
        if p.requires_grad
    }
    assert trained == {"3", "classifier"}  # the top layer and the classifier layer
    assert not any(p.requires_grad for p in model.bert.embeddings.parameters())
    frozen(unfrozen := MeanPoolClassifier(config), 0)
    assert all(p.requires_grad for p in unfrozen.parameters())
