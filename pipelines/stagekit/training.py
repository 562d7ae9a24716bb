"""What the training stages share: one way to fit (resuming where a killed run stopped),
score, describe, save and load a model.

Checkpoints live outside every DVC output, in `checkpoints/<stage>/<part>/` (a stage may
train several parts: the teacher and its from-scratch ablation), since DVC deletes a
stage's outputs before it reruns it and a resumed run needs them. A part resumes only
from a checkpoint of the same params sections and inputs.
"""

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

from lightning.pytorch.loggers import MLFlowLogger

from components.errors import KilnError
from components.text.config import check_validates
from components.text.training import best_state, budgeted, build_trainer, device, loading, precision, resume_point
from pipelines.core import console
from pipelines.core.io import atomic, remove
from pipelines.core.records import ModelCard
from pipelines.stagekit.contract import StageContext

CHECKPOINTS = "checkpoints"
log = logging.getLogger("kiln")


def fingerprint(ctx: StageContext) -> str:
    """Identity of a training run: the params sections it reads and its inputs' hashes."""
    payload = {"params": ctx.section_params(), "deps": ctx.deps}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _folder(ctx: StageContext, part: str) -> Path:
    return ctx.root / CHECKPOINTS / ctx.name / part


def _resume(ctx: StageContext, part: str) -> Path | None:
    folder = _folder(ctx, part)
    if not ctx.is_main:
        # Rank 0 checked and prepared the folder before it started this worker.
        last = folder / "last.ckpt"
        return last if last.is_file() else None
    last, warning = resume_point(folder, fingerprint(ctx))
    if warning:
        log.warning("%s: %s", ctx.name, warning)
    if last is not None:
        console.get().line(f"{ctx.name}: resuming {part} from {last.relative_to(ctx.root)}")
    return last


class StageLogger(MLFlowLogger):
    """Lightning's MLFlowLogger writing into a stage's child run, which it leaves open:
    the executor ends it once the stage is done, with the stage's status. Lightning's
    own end of it, mid-stage, marked it FINISHED before the stage was, and on a stop
    (which may find the store locked: see lifecycle.bookkeeping) waited 20 s a write
    and replaced the stop with MLflow's error."""

    def finalize(self, status: str = "success") -> None:
        pass


def mlflow_logger(ctx: StageContext) -> list:
    """A StageLogger (none in a distributed worker, which does not log)."""
    if not ctx.is_main:
        return []
    # The run id alone places it: the logger reads the run's experiment from the run.
    return [StageLogger(tracking_uri=os.environ["MLFLOW_TRACKING_URI"], run_id=ctx.run.run_id)]


def fit(
    ctx: StageContext,
    module,
    data,
    part: str,
    loop,
    monitor: str | None = None,
    patience: int | None = None,
    log_to_mlflow: bool = True,
):
    """Fit `module` on `data` (resuming this part's last checkpoint if it has one); with
    `monitor`, keep the best checkpoint by it and end with the best weights loaded."""
    loader = data.train_dataloader()
    bounded = budgeted(loop, len(loader.dataset))
    if monitor:
        check_validates(ctx.name, loop, bounded, len(loader))
    start = _resume(ctx, part)
    trainer = build_trainer(
        f"{ctx.name} {part}",
        ctx.params.hardware,
        bounded,
        _folder(ctx, part),
        mlflow_logger(ctx) if log_to_mlflow else [],
        monitor=monitor,
        mode="max",
        patience=patience,
        progress=lambda line: console.get().progress(ctx.name, line),
    )
    trainer.fit(module, datamodule=data, ckpt_path=start)
    if monitor and (state := best_state(trainer)) is not None:
        module.load_state_dict(state)
    return trainer


class Scores(NamedTuple):
    metrics: dict[str, float]  # val/ and test/
    truth: list[int]  # val's label ids, in the split's order
    predicted: list[int]  # the model's predictions of them
    ids: list  # val's text ids, in the same order


def score(trainer, module, data) -> Scores:
    """val/ and test/ metrics of the module as it is now, on the whole of each split (the
    checks while training may have scored a sample of val), and its val predictions: read
    off that pass in one process (a second pass over a large val split costs as much as
    the first), predicted again under DDP, where each process scored a shard."""
    from components.text.classifier import predict_labels

    val = trainer.validate(module, dataloaders=data.loader("val"), verbose=False)[0]
    test = trainer.test(module, dataloaders=data.loader("test"), verbose=False)[0]
    if trainer.world_size > 1:
        truth, predicted = predict_labels(module.model, data.loader("val"))
    else:
        truth, predicted = module.seen["val"]
    return Scores({**val, **test}, truth, predicted, data.ids["val"])


def card(
    ctx: StageContext,
    tokenizer: str,
    metrics: dict[str, float],
    labels: dict[str, int] | None = None,
    parents: dict[str, dict[str, float]] | None = None,
) -> ModelCard:
    return ModelCard(
        stage=ctx.name,
        labels=labels or {},
        tokenizer=tokenizer,
        params=ctx.section_params(),
        data=ctx.deps,
        metrics=metrics,
        parents=parents or {},
    )


# Beside a classifier's weights: its label ids of the val split it was scored on.
VAL_PREDICTIONS = "val_predictions.json"


def _ids_digest(ids) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


def save_model(
    ctx: StageContext, model, tokenizer, described: ModelCard, relative: str, val: "Scores | None" = None
) -> None:
    """A transformers folder (config.json, safetensors weights, tokenizer) plus kiln.json
    with the sequence length the weights read, and with `val` (the final score) the
    model's predictions of the val split (VAL_PREDICTIONS, keyed by the split's ids),
    written atomically by the main process, and the stage's checkpoints dropped: the model
    is in DVC's cache from here on."""
    if not ctx.is_main:
        return
    out = ctx.path(relative)
    with atomic(out) as tmp:
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        except Exception as err:  # noqa: BLE001 - safetensors and torch report a full disk in their own types
            raise KilnError(f"cannot write {out}: {str(err).strip().splitlines()[-1][:200]}") from None
        described.model_copy(update={"max_length": model.config.max_position_embeddings}).write(tmp / "kiln.json")
        if val is not None:
            found = {"val_ids_sha256": _ids_digest(val.ids), "predicted": val.predicted}
            (tmp / VAL_PREDICTIONS).write_text(json.dumps(found) + "\n", encoding="utf-8")
    remove(ctx.root / CHECKPOINTS / ctx.name)


def val_predictions(ctx: StageContext, relative: str, val) -> list[int] | None:
    """The label ids that the model `save_model` wrote to `relative` predicted for the
    texts of the `val` frame, in its order, read off its final score; None when that
    score was of other texts (or the model has none, as a pretrained encoder)."""
    path = ctx.path(relative) / VAL_PREDICTIONS
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise KilnError(f"{ctx.name}: {path} is corrupt; rerun the {ctx.maker(relative)} stage") from None
    if found.get("val_ids_sha256") != _ids_digest(val["id"]) or len(found.get("predicted", [])) != len(val):
        return None
    return found["predicted"]


def load_model(ctx: StageContext, relative: str, cls) -> tuple[Any, Any, ModelCard]:
    """(model, tokenizer, card) from a folder `save_model` wrote."""
    from transformers import PreTrainedTokenizerFast

    folder = ctx.input(f"{relative}/kiln.json", "model").parent
    maker = ctx.maker(relative)
    described = ModelCard.read(folder / "kiln.json", ctx.name, maker)
    try:
        model = cls.from_pretrained(folder)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    except Exception as err:  # noqa: BLE001 - transformers raises many types for a broken folder
        raise KilnError(f"{ctx.name}: model {relative} is corrupt ({err}); rerun the {maker} stage") from None
    if described.max_length is None:
        # A card of an earlier Kiln, in a persisted output a `kiln stage` run reads as it is:
        # the length is the position table's, which is no reason to train the model again.
        described = described.model_copy(update={"max_length": model.config.max_position_embeddings})
    return model, tokenizer, described


def teacher_tokens(student: ModelCard, teacher: ModelCard, teacher_tokenizer):
    """What a student's data gives its teacher: None, the student's own tokens, when both
    read one vocabulary; the teacher's tokenizer when it reads another (a teacher from a
    pretrained checkpoint)."""
    return None if student.tokenizer == teacher.tokenizer else teacher_tokenizer


def teacher_logits(teacher, tokenizer, frames: dict, labels: dict[str, int], length: int, hardware) -> dict:
    """The frozen teacher's logits on each frame's texts (a float32 row per text, in the
    frame's order), in its own tokens, computed once: a distillation reads them at each
    step instead of running the teacher again, which with a pretrained teacher is most of
    a step's work. On the training stages' device and precision."""
    import torch

    from components.text.classifier import logits_of
    from components.text.data import ClassificationData

    where = device(hardware)
    data = ClassificationData(frames, labels, tokenizer, length, 64, 0, loading=loading(hardware))
    model = teacher.to(where)
    with torch.autocast(where, dtype=torch.bfloat16, enabled=precision(hardware) == "bf16-mixed"):
        found = {name: logits_of(model, data.loader(name)) for name in frames}
    teacher.to("cpu")
    return found


def with_augmented(ctx: StageContext, train):
    """`train` plus the augment stage's copies of its rows (only those: a label fraction
    must not come back through the copies of rows it left out)."""
    import pandas as pd

    augmented = ctx.read(ctx.params.paths.augmented)
    copies = augmented[augmented["origin_id"].isin(train["id"])]
    return pd.concat([train, copies[train.columns]], ignore_index=True)
