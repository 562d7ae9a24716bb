"""BERT-style encoders built from a `transformers` BertConfig: sizes from params, no
weights downloaded."""

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from transformers import BertConfig


class EncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layers: int = Field(2, ge=1, le=48)
    hidden: int = Field(256, ge=8, le=8192)
    heads: int = Field(4, ge=1, le=128)
    intermediate: int = Field(1024, ge=8)
    max_length: int = Field(128, ge=16, le=4096, description="tokens per sequence, [CLS] and [SEP] included")
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "EncoderConfig":
        if self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden})")
        return self


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
