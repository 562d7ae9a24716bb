"""Structured pruning: shapes shrink, kept heads compute what they computed before."""

import copy

import torch

from components.text.classifier import MeanPoolClassifier
from components.text.model import bert_config, count_parameters
from components.text.prune import ffn_importance, head_importance, keep_heads, keep_neurons, prune
from tests.support.params import shipped


def model() -> MeanPoolClassifier:
    torch.manual_seed(0)
    config = bert_config(
        shipped("encoder", layers=2, hidden=32, heads=4, intermediate=64, max_length=16, dropout=0.0),
        vocab_size=50,
        pad_token_id=0,
        num_labels=3,
    )
    return MeanPoolClassifier(config).eval()


def batch(n: int = 6) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (n, 16), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.arange(n) % 3}


def attention_output(m: MeanPoolClassifier, inputs: dict) -> torch.Tensor:
    seen = {}

    def keep(_module, _inputs, output) -> None:
        seen["x"] = output[0]

    hook = m.bert.encoder.layer[0].attention.self.register_forward_hook(keep)
    with torch.no_grad():
        m(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    hook.remove()
    return seen["x"]


def test_kept_heads_compute_what_they_did_before():
    m, inputs = model(), batch()
    before = attention_output(m, inputs).view(6, 16, 4, 8)
    keep_heads(m.bert.encoder.layer[0], [0, 2])
    after = attention_output(m, inputs).view(6, 16, 2, 8)
    assert torch.allclose(after, before[:, :, [0, 2]], atol=1e-6)
    layer = m.bert.encoder.layer[0]
    assert layer.attention.self.query.weight.shape == (16, 32)
    assert layer.attention.output.dense.weight.shape == (32, 16)


def test_ffn_neurons_are_sliced():
    m = model()
    keep_neurons(m.bert.encoder.layer[1], torch.tensor([5, 1, 7]))
    layer = m.bert.encoder.layer[1]
    assert layer.intermediate.dense.weight.shape == (3, 32)
    assert layer.output.dense.weight.shape == (32, 3)


def test_prune_removes_the_ratio_and_keeps_a_head_per_layer():
    m, inputs = model(), batch()
    heads = head_importance(m, [inputs])
    assert heads.shape == (2, 4) and torch.isfinite(heads).all()
    before = count_parameters(m, embeddings=False)
    prune(m, heads, ffn_importance(m), head_ratio=0.75, ffn_ratio=0.5)
    shapes = m.config.kiln_layer_shapes
    assert sum(s["heads"] for s in shapes) == 2 and all(s["heads"] >= 1 for s in shapes)
    assert [s["intermediate"] for s in shapes] == [32, 32]
    assert count_parameters(m, embeddings=False) < 0.6 * before
    with torch.no_grad():
        assert m(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.shape == (6, 3)


def test_pruned_model_saves_and_reloads(tmp_path):
    m, inputs = model(), batch()
    prune(m, head_importance(m, [inputs]), ffn_importance(m), head_ratio=0.5, ffn_ratio=0.5)
    m.save_pretrained(tmp_path)
    again = MeanPoolClassifier.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        a = m(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        b = again(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert torch.allclose(a, b, atol=1e-6)
    assert copy.deepcopy(again.config.kiln_layer_shapes) == m.config.kiln_layer_shapes
