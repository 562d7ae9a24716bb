"""BERT-style encoders built from a `transformers` BertConfig: sizes from params, no
weights downloaded."""

from torch import nn
from transformers import BertConfig

from components.text.config import EncoderConfig


def bert_config(cfg: EncoderConfig, vocab_size: int, pad_token_id: int, num_labels: int = 2) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate,
        max_position_embeddings=cfg.max_length,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        pad_token_id=pad_token_id,
        num_labels=num_labels,
    )


def count_parameters(model: nn.Module, embeddings: bool = True) -> int:
    """Parameters of `model`; with embeddings=False, those outside its embedding tables
    (what pruning and distillation shrink)."""
    total = sum(p.numel() for p in model.parameters())
    if embeddings:
        return total
    tables = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return total - tables
