"""search: a multi-objective search for the best small model (off by default; `kiln
profile search` turns it on). Trials sample a student's size, its distillation, pruning
and quantization, or a point of the classical grid; each is measured on val by macro-F1,
p50 batch-1 latency and size. The teacher's logits on the train texts are computed here,
once, for every trial. The Pareto front's models become candidates of the select stage.

Trials work in `checkpoints/search/`, outside every DVC output, so that a killed search
resumes with the models of its finished trials; the front is copied out at the end."""

import json
import os
import shutil
from pathlib import Path

from components.errors import KilnError
from components.search.report import plot_front
from pipelines.core.io import atomic, remove, write_json
from pipelines.core.records import Front, FrontMember, ModelCard
from pipelines.stagekit.contract import StageContext, StageResult

OFF = "search off (kiln profile search turns it on)"


def run(ctx: StageContext) -> StageResult:
    cfg, paths = ctx.params.search, ctx.params.paths
    reports = ctx.path(paths.reports)
    if not cfg.enabled:
        # The stage stays in the DAG, so its outputs exist; it imports nothing heavy.
        with atomic(ctx.path(paths.search)) as folder:
            folder.mkdir(parents=True)
            Front(study=None, storage=None, members={}).write(folder / "front.json")
        write_json([], reports / "search.json")
        plot_front([], reports / "search_front.png", OFF)
        return StageResult(metrics={"search/trials": 0}, summary=[OFF])
    return _search(ctx)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _search(ctx: StageContext) -> StageResult:
    import time

    import lightning as L

    from pipelines.search import flow, summary

    start = time.time()
    L.seed_everything(ctx.params.hardware.seed, workers=True, verbose=False)
    plan, tokenizer_id, length = _plan(ctx, start)
    outcome = flow.run(plan)
    records, front = _finished(plan.storage, outcome["study"])
    members = _keep_front(ctx, plan, outcome["study"], front, tokenizer_id, length)
    reports = ctx.path(ctx.params.paths.reports)
    write_json(records, reports / "search.json")
    plot_front(records, reports / "search_front.png")
    remove(plan.folder / outcome["study"])
    return StageResult(
        metrics=summary.metrics(records, members, outcome),
        artifacts={"search": reports / "search.json", "search/front": reports / "search_front.png"},
        summary=summary.lines(records, members, outcome),
    )


def _plan(ctx: StageContext, start: float):
    """The flow's plan and the tokenizer's hash; the teacher is let go before any trial starts."""
    from components.text.classifier import MeanPoolClassifier
    from components.text.data import file_hash, load_tokenizer
    from pipelines.search import flow, study
    from pipelines.stagekit.training import CHECKPOINTS, fingerprint, load_model

    paths, cfg = ctx.params.paths, ctx.params.search
    teacher, teacher_tokenizer, taught = load_model(ctx, paths.teacher, MeanPoolClassifier)
    tokenizer = ctx.input(paths.tokenizer, "tokenizer")
    tokenizer_id = file_hash(tokenizer)
    load_tokenizer(tokenizer, ctx.name)  # a corrupt file fails here, before any trial starts
    split = ctx.read_split("train", "val")
    work = ctx.root / CHECKPOINTS / ctx.name
    prefix = f"kiln-search-{fingerprint(ctx)[:12]}"
    # The teacher's logits on every train text, once: each trial distils from them.
    cached = work / f"{prefix}.teacher_logits.npy"
    if not cached.is_file():
        _save_teacher_logits(ctx, teacher, teacher_tokenizer, taught, split["train"], cached)
    workers = cfg.workers if cfg.workers != "auto" else _cores()
    plan = flow.SearchPlan(
        study_prefix=prefix,
        storage=study.storage_url(ctx.root, cfg.storage),
        cfg=cfg,
        workers=workers,
        folder=work,
        run_id=ctx.run.run_id,
        template=_template(ctx, work, cached, tokenizer, taught.labels, workers, start),
    )
    return plan, tokenizer_id, taught.max_length


def _save_teacher_logits(ctx: StageContext, teacher, tokenizer, taught: ModelCard, train, cached: Path) -> None:
    import numpy as np

    from pipelines.stagekit.training import teacher_logits

    frames, length = {"train": train}, taught.max_length
    logits = teacher_logits(teacher, tokenizer, frames, taught.labels, length, ctx.params.hardware)["train"]
    with atomic(cached) as tmp, open(tmp, "wb") as handle:
        np.save(handle, logits)


def _template(ctx: StageContext, work: Path, cached: Path, tokenizer: Path, labels: list[str], workers: int, start):
    """Every trial's spec but its number, family, params and folder."""
    from components.search.spec import TrialSpec

    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.search
    return TrialSpec(
        number=-1,
        family="transformer",
        params={},
        folder=work,
        train=ctx.path(f"{paths.split}/train.parquet"),
        val=ctx.path(f"{paths.split}/val.parquet"),
        teacher_logits=cached,
        tokenizer=tokenizer,
        labels=labels,
        # The teacher's BERT config: a student keeps its token limit, dropout and activation.
        encoder=json.loads((ctx.path(paths.teacher) / "config.json").read_text(encoding="utf-8")),
        seed=params.hardware.seed,
        # Local workers share the cores; a Dask worker keeps the threads it was given.
        threads=None if cfg.scheduler else max(1, _cores() // workers),
        deadline=start + cfg.timeout_s,
        hardware=params.hardware,
        loop=cfg.loop,
        optim=cfg.optim,
        class_weight=params.distill.class_weight,
        recovery_epochs=cfg.recovery_epochs,
        importance_batches=params.prune.importance_batches,
        export=params.export,
        quantize=params.quantize,
        classical=params.classical,
        evaluate=params.evaluate,
    )


def _finished(storage: str, name: str) -> tuple[list[dict], list]:
    """The study's trial records and its Pareto front; with no trial complete, an error."""
    from pipelines.search import study

    records, front = study.records(study.Study.load(storage, name))
    if not front:
        errors = sorted({r["error"] for r in records if r["error"]})
        raise KilnError(
            f"search: none of the {len(records)} trials of study {name} completed"
            + (f"; they failed with: {'; '.join(errors[:3])}" if errors else "")
        )
    return records, front


def _keep_front(
    ctx: StageContext, plan, study_name: str, front: list, tokenizer_id: str, length: int
) -> dict[str, FrontMember]:
    """The front's models copied out of the trials' folder into the stage's output, with
    front.json naming them; a transformer's folder gets its model card."""
    from pipelines.search import study

    paths = ctx.params.paths
    members: dict[str, FrontMember] = {}
    with atomic(ctx.path(paths.search)) as folder:
        folder.mkdir(parents=True)
        for trial in front:
            name = f"search_{trial.number}"
            shutil.copytree(plan.folder / study_name / f"trial-{trial.number}", folder / name)
            if trial.user_attrs["family"] == "transformer":
                ModelCard(
                    stage="search",
                    labels=plan.template.labels,
                    tokenizer=tokenizer_id,
                    params={"search": trial.params},
                    data=ctx.deps,
                    metrics={"val/macro_f1": trial.user_attrs["result"]["val_macro_f1"]},
                    max_length=length,  # a trial's student keeps the teacher's position table
                ).write(folder / name / "kiln.json")
            members[name] = _member(trial, f"{paths.search}/{name}")
        Front(study=study_name, storage=study.shown(plan.storage), members=members).write(folder / "front.json")
    return members


def _member(trial, member: str) -> FrontMember:
    """A front trial as a select candidate whose files are in the folder `member`."""
    from components.search.spec import MODEL_FILE

    result, family = trial.user_attrs["result"], trial.user_attrs["family"]
    return FrontMember(
        trial=trial.number,
        family=family,
        file=f"{member}/{MODEL_FILE}",
        tokenizer=f"{member}/tokenizer.json" if family == "transformer" else None,
        source=member if family == "transformer" else f"{member}/explainer.json",
        params=trial.params,
        val_macro_f1=result["val_macro_f1"],
        latency_ms_p50_b1=result["latency_ms_p50_b1"],
        size_mb=result["size_mb"],
        evidence=result["evidence"],
    )
