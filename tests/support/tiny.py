"""The tiny config: a model and budget that train in seconds, repositories set up to use
them, and a tiny untrained model exported to ONNX."""

from pathlib import Path

from tests.support.data import LABELS, TEXTS, tiny_frame
from tests.support.params import set_params, shipped

# A model and budget small enough for a stage test to train in seconds.
TINY_TRAINING = {
    "encoder": {"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64, "max_length": 32},
    "tokenize": {"vocab_size": 300},
    # From scratch: a pretrained start is for tests that test it (tests/pipeline/test_pretrained.py).
    "pretrain": {
        "init": None,
        "loop": {"max_steps": 6, "batch_size": 8, "val_every_steps": 3, "checkpoint_every": 2, "log_every": 1},
    },
    # The tiny models train on the augmented copies too, at the rates their margins were set for.
    # No more epochs for small data (min_steps): the tiny models' margins were set without them.
    "finetune": {
        "augmented": True,
        "pretrained_min_steps": 0,
        "loop": {"max_epochs": 2, "min_steps": 0, "batch_size": 8, "checkpoint_every": 2, "log_every": 1},
        "optim": {"lr": 5e-4},
    },
    "distill": {
        "student": {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32},
        "hidden_weight": 1.0,
        "augmented": True,
        "optim": {"lr": 1e-3},
        "loop": {"max_epochs": 1, "min_steps": 0, "batch_size": 8, "checkpoint_every": 2, "log_every": 1},
    },
    "prune": {
        "curve": [0.0, 0.25, 0.5, 0.75],
        "importance_batches": 2,
        "loop": {"max_epochs": 1, "batch_size": 8, "checkpoint_every": 2, "log_every": 1},
    },
    # fp32 whatever the CPU: the tiny models' margins were set for it.
    "hardware": {"accelerator": "cpu", "devices": 1, "precision": "32-true"},
    # A model trained for seconds sits on its decision boundaries, where INT8 noise flips
    # predictions by chance: the pipeline tests do not test the INT8 gate
    # (tests/unit/components/test_deploy.py does).
    "quantize": {"min_agreement": 0.0, "max_f1_drop": 1.0},
    "evaluate": {"latency_texts": 10, "batches": 2, "rounds": 1, "warmup": 1},
    # A model trained for seconds must still get through the gate on its first run.
    "promote": {"min_macro_f1": 0.0, "max_latency_ms_p95_b1": 1000.0},
}


def tiny_repo(repo: Path, rows_per_label: int = 12, **overrides: dict) -> Path:
    """`repo` set up to train on `tiny_frame` with TINY_TRAINING (and `overrides`)."""
    tiny_frame(rows_per_label).to_csv(repo / "data/external/mine.csv", index=False)
    set_params(repo, ingest={"source": "file", "file": {"path": "data/external/mine.csv"}}, **TINY_TRAINING)
    if overrides:
        set_params(repo, **overrides)
    return repo


def incoming_repo(repo: Path, **overrides) -> Path:
    """A tiny repo whose dataset is `tiny_frame` plus the batches of data/incoming."""
    tiny_repo(repo)
    set_params(repo, ingest={"source": "incoming", "incoming": {"base": "file"}}, **overrides)
    return repo


def tiny_onnx(folder: Path, seed: int = 0):
    """(PyTorch classifier, its optimised and stamped ONNX file, tokenizer.json) of a tiny
    untrained model in `folder`; `seed` picks its weights."""
    import torch

    from components.deploy.metadata import stamp
    from components.deploy.onnx import export, optimize
    from components.runtime.transformer import TextEncoder
    from components.text.classifier import MeanPoolClassifier
    from components.text.model import bert_config
    from components.text.tokenizer import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(TEXTS, shipped("tokenize", vocab_size=200, min_frequency=1))
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(seed)
    config = bert_config(
        shipped("encoder", layers=1, hidden=32, heads=2, intermediate=64, max_length=32, dropout=0.0),
        tokenizer.get_vocab_size(),
        tokenizer.token_to_id("[PAD]"),
        num_labels=len(LABELS),
    )
    model = MeanPoolClassifier(config).eval()
    encode = TextEncoder(folder / "tokenizer.json", 32)
    raw, path = folder / "raw.onnx", folder / "model.onnx"
    export(model, {k: torch.from_numpy(v) for k, v in encode(TEXTS[:2]).items()}, raw, opset=17)
    optimize(raw, path)
    raw.unlink()
    stamp(path, {"labels": {label: i for i, label in enumerate(LABELS)}, "max_length": 32, "git_commit": "abc"})
    return model, path, folder / "tokenizer.json"


def tiny_tokenizer(folder: Path):
    """A WordPiece tokenizer learned from `tiny_frame`, saved in `folder` and loaded as the
    stages load theirs (a transformers fast tokenizer)."""
    from components.text.data import load_tokenizer
    from components.text.tokenizer import train_tokenizer

    path = folder / "tokenizer.json"
    train_tokenizer(tiny_frame()["text"].tolist() * 3, shipped("tokenize", vocab_size=300)).save(str(path))
    return load_tokenizer(path, "test")


def tiny_bert(vocab: int, hidden: int, layers: int, positions: int = 64, labels: int = 5):
    """An untrained mean-pooling BERT classifier of that shape, in eval mode, seeded."""
    import torch
    from transformers import BertConfig

    from components.text.classifier import MeanPoolClassifier

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=positions,
        num_labels=labels,
    )
    return MeanPoolClassifier(config).eval()
