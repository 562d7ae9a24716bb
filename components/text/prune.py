"""Structured pruning that physically removes attention heads and FFN neurons.

Head importance is the gradient of the loss with respect to a gate on each head's output
(Michel, Levy & Neubig, 2019, "Are Sixteen Heads Really Better than One?"), accumulated
over a few batches and normalised per layer; heads are ranked across all layers, and
every layer keeps at least one. FFN neurons are ranked by magnitude: the norm of a
neuron's input row times that of its output column. The weight matrices are sliced, so
the pruned model is smaller and faster in any runtime, ONNX Runtime included
(transformers 5 no longer ships `prune_heads`).
"""

from collections.abc import Iterable
from itertools import islice

import torch
from torch import nn
from torch.nn import functional as F


def _layers(encoder: nn.Module) -> list[nn.Module]:
    return list(encoder.encoder.layer)


def _head_size(layer: nn.Module) -> int:
    return layer.attention.self.attention_head_size


def head_importance(model: nn.Module, batches: Iterable[dict]) -> torch.Tensor:
    """|d loss / d gate| for every head, shape (layers, heads), each layer's row
    normalised to unit L2 norm."""
    layers = _layers(model.bert)
    gates = [
        torch.ones(layer.attention.self.query.out_features // _head_size(layer), requires_grad=True) for layer in layers
    ]
    hooks = []
    for layer, gate in zip(layers, gates):
        size = _head_size(layer)

        def hook(_module, _inputs, output, gate=gate, size=size):
            context, *rest = output
            shape = context.shape
            gated = (context.view(*shape[:-1], -1, size) * gate[:, None]).view(shape)
            return (gated, *rest)

        hooks.append(layer.attention.self.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    scores = [torch.zeros_like(g) for g in gates]
    try:
        for batch in batches:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            F.cross_entropy(logits, batch["labels"]).backward()
            for score, gate in zip(scores, gates):
                score += gate.grad.abs()
                gate.grad = None
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return torch.nn.utils.rnn.pad_sequence(
        [s / s.norm().clamp(min=1e-12) for s in scores], batch_first=True, padding_value=float("inf")
    )


def ffn_importance(model: nn.Module) -> list[torch.Tensor]:
    """Per layer, each FFN neuron's ||input row|| * ||output column||."""
    return [
        layer.intermediate.dense.weight.norm(dim=1) * layer.output.dense.weight.norm(dim=0)
        for layer in _layers(model.bert)
    ]


def importance(model: nn.Module, batches: Iterable[dict], count: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """What `prune` ranks by: the heads' importance over the first `count` of `batches`,
    and the FFN neurons'."""
    return head_importance(model, islice(batches, count)), ffn_importance(model)


def _slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear holding only the `keep` rows (dim 0) or input columns (dim 1)."""
    weight = linear.weight.detach().index_select(dim, keep).clone()
    out_features, in_features = weight.shape
    sliced = nn.Linear(in_features, out_features, bias=linear.bias is not None)
    sliced.weight = nn.Parameter(weight)
    if linear.bias is not None:
        bias = linear.bias.detach()
        sliced.bias = nn.Parameter((bias.index_select(0, keep) if dim == 0 else bias).clone())
    return sliced


def keep_heads(layer: nn.Module, heads: list[int]) -> None:
    """Cut `layer`'s attention down to `heads` (indices into its current heads)."""
    attention = layer.attention.self
    size = _head_size(layer)
    rows = torch.cat([torch.arange(h * size, (h + 1) * size) for h in sorted(heads)])
    attention.query = _slice_linear(attention.query, rows, 0)
    attention.key = _slice_linear(attention.key, rows, 0)
    attention.value = _slice_linear(attention.value, rows, 0)
    attention.num_attention_heads = len(heads)
    attention.all_head_size = len(heads) * size
    layer.attention.output.dense = _slice_linear(layer.attention.output.dense, rows, 1)


def keep_neurons(layer: nn.Module, neurons: torch.Tensor) -> None:
    """Cut `layer`'s FFN down to `neurons` (indices of intermediate units)."""
    keep = neurons.sort().values
    layer.intermediate.dense = _slice_linear(layer.intermediate.dense, keep, 0)
    layer.output.dense = _slice_linear(layer.output.dense, keep, 1)


def layer_shapes(model: nn.Module) -> list[dict[str, int]]:
    """What each layer holds after pruning; saved in the config so the model reloads."""
    return [
        {
            "heads": layer.attention.self.all_head_size // _head_size(layer),
            "intermediate": layer.intermediate.dense.out_features,
        }
        for layer in _layers(model.bert)
    ]


def apply_shapes(model: nn.Module, shapes: list[dict[str, int]]) -> None:
    """Give a freshly built model the layer shapes of a pruned one (weights loaded after)."""
    for layer, shape in zip(_layers(model.bert), shapes):
        keep_heads(layer, list(range(shape["heads"])))
        keep_neurons(layer, torch.arange(shape["intermediate"]))


def prune(
    model: nn.Module, heads: torch.Tensor, neurons: list[torch.Tensor], head_ratio: float, ffn_ratio: float
) -> None:
    """Remove the `head_ratio` least important heads (ranked across layers, one kept per
    layer at least) and, in every layer, the `ffn_ratio` least important FFN neurons."""
    layers = _layers(model.bert)
    counts = [int(torch.isfinite(row).sum()) for row in heads]
    drop = int(round(head_ratio * sum(counts)))
    ranked = sorted(((float(heads[i, h]), i, h) for i, n in enumerate(counts) for h in range(n)))
    removed: dict[int, set[int]] = {i: set() for i in range(len(layers))}
    for _, i, h in ranked:
        if drop == 0:
            break
        if len(removed[i]) < counts[i] - 1:
            removed[i].add(h)
            drop -= 1
    for i, layer in enumerate(layers):
        keep_heads(layer, [h for h in range(counts[i]) if h not in removed[i]])
        n = neurons[i].numel()
        keep = max(1, n - int(round(ffn_ratio * n)))
        keep_neurons(layer, neurons[i].topk(keep).indices)
    model.config.kiln_layer_shapes = layer_shapes(model)
