"""search: a multi-objective search for the best small model (off by default; `kiln
profile search` turns it on). Trials sample a student's size, its distillation, pruning
and quantization, or a point of the classical grid; each is measured on val by macro-F1,
p50 batch-1 latency and size. The teacher's logits on the train texts are computed here,
once, for every trial. The Pareto front's models become candidates of the select stage.

Trials work in `checkpoints/search/`, outside every DVC output, so that a killed search
resumes with the models of its finished trials; the front is copied out at the end."""

import os
import shutil

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
    import numpy as np

    from components.search.trial import MODEL_FILE, TrialSpec
    from components.text.classifier import MeanPoolClassifier
    from components.text.data import file_hash, load_tokenizer
    from pipelines.search import flow, study
    from pipelines.stagekit.training import CHECKPOINTS, fingerprint, load_model, teacher_logits

    start = time.time()
    params, paths, cfg = ctx.params, ctx.params.paths, ctx.params.search
    reports = ctx.path(paths.reports)
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    teacher, teacher_tokenizer, taught = load_model(ctx, paths.teacher, MeanPoolClassifier)
    tokenizer_path = ctx.input(paths.tokenizer, "tokenizer")
    tokenizer_id = file_hash(tokenizer_path)
    load_tokenizer(tokenizer_path, ctx.name)  # a corrupt file fails here, before any trial starts
    split = ctx.read_split("train", "val")
    work = ctx.root / CHECKPOINTS / ctx.name
    prefix = f"kiln-search-{fingerprint(ctx)[:12]}"
    length = taught.max_length

    # The teacher's logits on every train text, once: each trial distils from them.
    cached = work / f"{prefix}.teacher_logits.npy"
    if not cached.is_file():
        frames = {"train": split["train"]}
        logits = teacher_logits(teacher, teacher_tokenizer, frames, taught.labels, length, params.hardware)["train"]
        with atomic(cached) as tmp, open(tmp, "wb") as handle:
            np.save(handle, logits)
    del teacher

    workers = cfg.workers if cfg.workers != "auto" else _cores()
    storage = study.storage_url(ctx.root, cfg.storage)
    plan = flow.SearchPlan(
        study_prefix=prefix,
        storage=storage,
        cfg=cfg,
        workers=workers,
        folder=work,
        run_id=ctx.run.run_id,
        template=TrialSpec(
            number=-1,
            family="transformer",
            params={},
            folder=work,
            train=ctx.path(f"{paths.split}/train.parquet"),
            val=ctx.path(f"{paths.split}/val.parquet"),
            teacher_logits=cached,
            tokenizer=tokenizer_path,
            labels=taught.labels,
            encoder=teacher_config(ctx.path(paths.teacher) / "config.json"),
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
        ),
    )
    outcome = flow.run(plan)
    records, front = study.records(study.Study.load(storage, outcome["study"]))
    if not front:
        errors = sorted({r["error"] for r in records if r["error"]})
        raise KilnError(
            f"search: none of the {len(records)} trials of study {outcome['study']} completed"
            + (f"; they failed with: {'; '.join(errors[:3])}" if errors else "")
        )

    members: dict[str, FrontMember] = {}
    with atomic(ctx.path(paths.search)) as folder:
        folder.mkdir(parents=True)
        for trial in front:
            name = f"search_{trial.number}"
            result = trial.user_attrs["result"]
            family = trial.user_attrs["family"]
            shutil.copytree(work / outcome["study"] / f"trial-{trial.number}", folder / name)
            member = f"{paths.search}/{name}"
            if family == "transformer":
                ModelCard(
                    stage="search",
                    labels=taught.labels,
                    tokenizer=tokenizer_id,
                    params={"search": trial.params},
                    data=ctx.deps,
                    metrics={"val/macro_f1": result["val_macro_f1"]},
                    max_length=length,  # a trial's student keeps the teacher's position table
                ).write(folder / name / "kiln.json")
            members[name] = FrontMember(
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
        Front(study=outcome["study"], storage=study.shown(storage), members=members).write(folder / "front.json")
    write_json(records, reports / "search.json")
    plot_front(records, reports / "search_front.png")
    remove(work / outcome["study"])

    complete = [r for r in records if r["state"] == "COMPLETE"]
    failed = [r for r in records if r["state"] == "FAIL" and not r["interrupted"]]
    best = max(complete, key=lambda r: r["val_macro_f1"], default=None)
    summary = [
        f"{len(complete) + len(failed)} trials ({len(complete)} complete, {len(failed)} failed) in study "
        f"{outcome['study']}, {sum(r['front'] for r in records)} on the Pareto front, {len(members)} on their "
        f"family's (select's candidates); workers: {', '.join(sorted(workers_of(records)))}"
    ]
    if outcome["requeued"]:
        summary.append(f"resumed: trials {outcome['requeued']} were cut off by the kill and asked again")
    overall = {r["trial"] for r in records if r["front"]}
    for name, m in sorted(members.items(), key=lambda item: -item[1].val_macro_f1):
        where = "front" if m.trial in overall else "family front"
        summary.append(
            f"{where} {name} ({m.family}): val macro-F1 {m.val_macro_f1:.4f}, "
            f"p50 {m.latency_ms_p50_b1:.2f} ms, {m.size_mb:.2f} MB"
        )
    reasons: dict[str, list[int]] = {}
    for r in failed:
        reasons.setdefault(r["error"] or "no reason recorded", []).append(r["trial"])
    for reason, trials in reasons.items():
        which = f"trials {trials}" if len(trials) > 1 else f"trial {trials[0]}"
        summary.append(f"{which} failed: {reason}")
    metrics = {
        "search/trials": len(complete) + len(failed),
        "search/complete": len(complete),
        "search/failed": len(failed),
        "search/front": sum(r["front"] for r in records),
        "search/candidates": len(members),
        "search/requeued": len(outcome["requeued"]),
    }
    if best is not None:
        metrics["search/best_val_macro_f1"] = best["val_macro_f1"]
    return StageResult(
        metrics=metrics,
        artifacts={"search": reports / "search.json", "search/front": reports / "search_front.png"},
        summary=summary,
    )


def teacher_config(path) -> dict:
    """The teacher's BERT config as plain JSON: what a student keeps of it (its token
    limit, dropout, activation), sizes aside."""
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def workers_of(records: list[dict]) -> set[str]:
    return {r["worker"] for r in records if r.get("worker")}
