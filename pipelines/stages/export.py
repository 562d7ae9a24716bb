"""export: the pruned student (the model Kiln ships) and the teacher (for comparison) as
ONNX files, each through a parity gate against PyTorch on real test texts."""

from pathlib import Path

import numpy as np
import torch

from components.deploy.onnx import export, optimize, parity, stamp
from components.deploy.runtime import OnnxClassifier
from components.errors import KilnError
from components.text.classifier import MeanPoolClassifier
from pipelines.env import git_state
from pipelines.io import atomic
from pipelines.stages import StageContext, StageResult
from pipelines.training import load_model, read_split

# What gets exported, from which params path and made by which stage.
MODELS = {"pruned": ("pruned", "prune"), "teacher": ("teacher", "finetune")}


def torch_logits(model: MeanPoolClassifier, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
                               for feed in feeds])


def parity_gate(name: str, model: MeanPoolClassifier, runtime: OnnxClassifier, texts: list[str],
                max_abs_diff: float) -> dict[str, float]:
    """Compare ONNX Runtime with PyTorch on `texts` (batches of 32, so padding is
    exercised too); a KilnError if they differ by more than the gate allows."""
    feeds = [runtime.encode(texts[i : i + 32]) for i in range(0, len(texts), 32)]
    onnx = np.concatenate([runtime.session.run(["logits"], feed)[0] for feed in feeds])
    result = parity(torch_logits(model, feeds), onnx)
    if not result.within(max_abs_diff):
        differ = round((1 - result.agreement) * result.texts)
        raise KilnError(f"export: parity gate failed for {name}: max |logit difference| {result.max_abs_diff:.2e} "
                        f"(allowed {max_abs_diff:.0e}) and {differ} of {result.texts} predicted labels differ "
                        f"from PyTorch on test texts; nothing is exported")
    return {f"{name}/max_abs_diff": result.max_abs_diff, f"{name}/agreement": result.agreement,
            f"{name}/parity_texts": result.texts}


def _export_one(ctx: StageContext, name: str, folder: Path, texts: list[str]) -> dict[str, float]:
    cfg, paths = ctx.params.export, ctx.params.paths
    key, maker = MODELS[name]
    model, tokenizer, made = load_model(ctx.path(getattr(paths, key)), MeanPoolClassifier, "export", maker)
    model.eval()
    sample = tokenizer(texts[:2], padding=True, truncation=True, max_length=model.config.max_position_embeddings,
                       return_tensors="pt")
    target = folder / f"{name}.onnx"
    raw = folder / f"{name}.raw.onnx"
    export(model, dict(sample), raw, cfg.opset)
    if cfg.optimize:
        optimize(raw, target)
        raw.unlink()
    else:
        raw.rename(target)
    commit, dirty = git_state(ctx.root)
    stamp(target, {
        "kiln.model": name,
        "labels": made["labels"],
        "max_length": model.config.max_position_embeddings,
        "config": {key: getattr(model.config, key) for key in ("num_hidden_layers", "hidden_size",
                                                               "num_attention_heads", "intermediate_size",
                                                               "vocab_size", "kiln_layer_shapes")
                   if hasattr(model.config, key)},
        "git_commit": commit,
        "git_dirty": dirty,
        "data": {path: value for path, value in ctx.deps.items() if path.startswith("data/")},
        "made_by": made.get("stage"),
    })
    runtime = OnnxClassifier(target, folder / "tokenizer.json")
    metrics = parity_gate(name, model, runtime, texts[: cfg.parity_texts], cfg.max_abs_diff)
    metrics[f"{name}/size_mb"] = target.stat().st_size / 1e6
    return metrics


def run(ctx: StageContext) -> StageResult:
    paths = ctx.params.paths
    # Real held-out texts: the test split, topped up from val when it holds fewer than the
    # gate asks for (BBC's test split has about 200).
    split = read_split(ctx, "test", "val")
    texts = (split["test"]["text"].tolist() + split["val"]["text"].tolist())[: ctx.params.export.parity_texts]
    metrics: dict[str, float] = {}
    with atomic(ctx.path(paths.onnx)) as folder:
        folder.mkdir(parents=True)
        tokenizer = ctx.path(paths.pruned) / "tokenizer.json"
        if not tokenizer.is_file():
            raise KilnError(f"export: tokenizer {tokenizer} is missing; the prune stage makes it (kiln stage prune)")
        (folder / "tokenizer.json").write_bytes(tokenizer.read_bytes())
        for name in MODELS:
            metrics.update(_export_one(ctx, name, folder, texts))
    return StageResult(metrics=metrics)
