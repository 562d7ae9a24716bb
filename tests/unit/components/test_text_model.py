"""The BERT models' parts: the unigram start of the MLM head, and a cut position table."""

import math

import pytest
import torch

from tests.support.params import shipped
from tests.support.tiny import tiny_bert


def test_unigram_bias_starts_the_head_at_the_token_frequencies():
    from transformers import BertForMaskedLM

    from components.text.model import bert_config, unigram_bias, unigram_perplexity
    from components.text.modules import masked_lm_loss

    # A skewed stream: token 5 half the time, the rest spread over 95 others.
    g = torch.Generator().manual_seed(0)
    stream = torch.where(torch.rand(64, 32, generator=g) < 0.5, 5, torch.randint(6, 100, (64, 32), generator=g))
    rows = stream.tolist()
    bias = unigram_bias(rows, 100)
    assert bias.argmax().item() == 5 and abs(bias.mean().item()) < 1e-5
    torch.manual_seed(0)
    model = BertForMaskedLM(
        bert_config(
            shipped("encoder", layers=1, hidden=32, heads=2, intermediate=64, max_length=32, dropout=0.0), 100, 0
        )
    ).eval()
    labels = torch.where(torch.rand(64, 32, generator=g) < 0.15, stream, torch.full_like(stream, -100))
    batch = {"input_ids": stream, "attention_mask": torch.ones_like(stream), "labels": labels}
    with torch.no_grad():
        before = masked_lm_loss(model, batch).item()
        model.cls.predictions.decoder.bias.copy_(bias)
        after = masked_lm_loss(model, batch).item()
    # The stream's entropy is ~0.5 ln 2 + 0.5 (ln 2 + ln 95) = 2.97 nats; a zero bias gives ~ln 100.
    assert after < before - 1.0 and after == pytest.approx(2.97, abs=0.3)
    # What the frequencies alone score on the batch: the floor such a head starts from.
    assert math.log(unigram_perplexity(rows, 100, [batch])) == pytest.approx(2.97, abs=0.3)


def test_unigram_perplexity_scores_masked_tokens_by_train_frequency():
    from components.text.model import unigram_perplexity

    # Token 5 twice, 6 and 7 once in 4 tokens, add-one over 10: p(5) = 3/14, p(8) = 1/14.
    batch = {"input_ids": torch.zeros(1, 4, dtype=torch.long), "labels": torch.tensor([[5, -100, 8, -100]])}
    assert unigram_perplexity([[5, 5, 6, 7]], 10, [batch]) == pytest.approx(14 / math.sqrt(3))
    # Batches weigh by their rows, as Lightning's val/loss does.
    one = {"input_ids": torch.zeros(3, 4, dtype=torch.long), "labels": torch.tensor([[5] + [-100] * 3] * 3)}
    expected = math.exp((3 * -math.log(3 / 14) + -(math.log(3 / 14) + math.log(1 / 14)) / 2) / 4)
    assert unigram_perplexity([[5, 5, 6, 7]], 10, [one, batch]) == pytest.approx(expected)


def test_a_cut_position_table_keeps_the_outputs_and_says_its_length(tmp_path):
    from components.text.classifier import MeanPoolClassifier
    from components.text.model import keep_positions

    model = tiny_bert(50, 16, 1, positions=512)
    ids, mask = torch.randint(0, 50, (2, 20)), torch.ones(2, 20, dtype=torch.long)
    before = model(ids, mask).logits
    keep_positions(model, 24)
    assert model.config.max_position_embeddings == 24 and model.bert.embeddings.position_embeddings.num_embeddings == 24
    assert torch.equal(model(ids, mask).logits, before)
    model.save_pretrained(tmp_path)
    assert torch.equal(MeanPoolClassifier.from_pretrained(tmp_path).eval()(ids, mask).logits, before)
