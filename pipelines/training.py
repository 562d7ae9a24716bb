"""What training stages share on the pipeline side: the injected MLflow logger, the
checkpoint folder and its fingerprint, and self-describing model folders."""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from components.errors import KilnError
from pipelines.io import atomic, read_parquet
from pipelines.stages import StageContext

# Checkpoints live outside every DVC output: DVC deletes a stage's outputs before it
# reruns it, and a resumed run needs them.
CHECKPOINTS = "checkpoints"


def read_split(ctx: StageContext, *names: str) -> dict:
    """Frames of the split stage by name: train, val and test unless `names` says."""
    folder = ctx.path(ctx.params.paths.split)
    return {name: read_parquet(folder / f"{name}.parquet", ctx.name, "split")
            for name in names or ("train", "val", "test")}


def with_augmented(ctx: StageContext, train):
    """`train` plus the augment stage's copies of its rows (only those: a label fraction
    must not come back through the copies of rows it left out)."""
    import pandas as pd

    augmented = read_parquet(ctx.path(ctx.params.paths.augmented), ctx.name, "augment")
    copies = augmented[augmented["origin_id"].isin(train["id"])]
    return pd.concat([train, copies[train.columns]], ignore_index=True)


def checkpoints(ctx: StageContext, *sections: str) -> tuple[Path, Path | None]:
    """(checkpoint folder, checkpoint to resume or None) for a run of these params
    sections on these inputs."""
    from components.text.training import resume_point

    folder = ctx.root / CHECKPOINTS / ctx.name
    if ctx.run.run_id is None:
        # A distributed worker: rank 0 has prepared the folder and resumes for everyone.
        last = folder / "last.ckpt"
        return folder, last if last.is_file() else None
    resume = resume_point(folder, fingerprint(ctx, *sections))
    if resume is not None:
        print(f"{ctx.name}: resuming from {resume.relative_to(ctx.root)}", flush=True)
    return folder, resume


def fingerprint(ctx: StageContext, *sections: str) -> str:
    """Identity of a training run: its params sections and the hashes of its inputs."""
    payload = {name: ctx.params.section(name).model_dump(mode="json") for name in sections}
    payload["deps"] = ctx.deps
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def mlflow_logger(ctx: StageContext) -> list:
    """Lightning's MLFlowLogger writing into this stage's child run (none in a
    distributed worker, which does not log)."""
    from lightning.pytorch.loggers import MLFlowLogger

    if ctx.run.run_id is None:
        return []
    return [MLFlowLogger(
        experiment_name=ctx.params.tracking.experiment,
        tracking_uri=os.environ["MLFLOW_TRACKING_URI"],
        run_id=ctx.run.run_id,
    )]


def save_model(model, tokenizer, describe: dict[str, Any], out: Path) -> None:
    """A transformers folder (config.json, safetensors weights, tokenizer) plus
    kiln.json, the model's own account of where it came from; written atomically."""
    with atomic(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "kiln.json").write_text(json.dumps(describe, indent=2, default=str) + "\n")


def load_model(folder: Path, cls, stage: str, maker: str):
    """(model, tokenizer, description) from a folder `save_model` wrote."""
    from transformers import PreTrainedTokenizerFast

    if not (folder / "kiln.json").is_file():
        raise KilnError(f"{stage}: model {folder} is missing; the {maker} stage makes it (kiln stage {maker})")
    try:
        model = cls.from_pretrained(folder)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
        describe = json.loads((folder / "kiln.json").read_text())
    except Exception as err:  # transformers raises many types for a broken folder
        raise KilnError(f"{stage}: model {folder} is corrupt ({err}); rerun the {maker} stage") from None
    return model, tokenizer, describe


def fit_and_score(ctx: StageContext, module, data, folder: Path, loop, loggers: list,
                  patience: int | None = None) -> tuple[Any, dict[str, float]]:
    """Fit `module` keeping the best val/macro_f1 checkpoint (resuming `folder`'s
    last.ckpt if there is one), restore the best weights, and score val and test."""
    from components.text.training import best_state, build_trainer

    trainer = build_trainer(f"{ctx.name} {folder.name}", ctx.params.hardware, loop, folder, loggers,
                            monitor="val/macro_f1", mode="max", patience=patience)
    last = folder / "last.ckpt"
    if last.is_file():
        print(f"{ctx.name}: resuming {folder.name} from {last.relative_to(ctx.root)}", flush=True)
    trainer.fit(module, datamodule=data, ckpt_path=last if last.is_file() else None)
    if (state := best_state(trainer)) is not None:
        module.load_state_dict(state)
    val = trainer.validate(module, datamodule=data, verbose=False)[0]
    test = trainer.test(module, datamodule=data, verbose=False)[0]
    return trainer, {**val, **test}
