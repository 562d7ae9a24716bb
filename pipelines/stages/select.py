"""select: the candidate to ship, chosen on val among every family's servable files (INT8
and FP32 ONNX of the pruned student, the teacher's ONNX, the classical model, and the
models of the search's Pareto front when the search is on): the best val macro-F1 (on at
most select.max_texts val texts) within promote's latency and size budgets, and of those
tied with it within the paired 95 % interval, the smallest and fastest. An INT8 file
quantize's gate refused is left out, with the reason, and so is a candidate that learned
nothing (no better on val than always the commonest train label); with none left,
nothing is shipped. Test is not read."""

from components.deploy import evaluation as ev
from components.deploy.selection import Measured, choose, learned
from components.errors import KilnError
from components.runtime.loader import load_classifier
from components.stats import majority_label, stratified_sample
from pipelines.core.records import Candidate, Front, Selection
from pipelines.stagekit.contract import StageContext, StageResult
from pipelines.stages import quantize


def candidates(ctx: StageContext) -> tuple[dict[str, tuple[str, str | None]], Front]:
    """Servable files by candidate name: (model, tokenizer or None), the search's front
    among them; and the front itself."""
    paths = ctx.params.paths
    tokenizer = paths.onnx_tokenizer("pruned")
    front = Front.read(ctx.input(f"{paths.search}/front.json", "search front"), ctx.name, "search")
    return {
        "onnx_int8": (paths.quantized, tokenizer),
        "onnx_fp32": (f"{paths.onnx}/pruned.onnx", tokenizer),
        "onnx_teacher": (f"{paths.onnx}/teacher.onnx", paths.onnx_tokenizer("teacher")),
        "classical": (f"{paths.classical}/model.onnx", None),
        **{name: (m.file, m.tokenizer) for name, m in front.members.items()},
    }, front


def _family(name: str) -> str:
    return "classical" if name == "classical" else "transformer"


def run(ctx: StageContext) -> StageResult:
    params = ctx.params
    split = ctx.read_split("train", "val")
    val = split["val"]
    if params.select.max_texts is not None:
        val = val.iloc[stratified_sample(val["label"].tolist(), params.select.max_texts, params.select.seed)]
    texts = val["text"].tolist()
    files, front, excluded = _servable(ctx)
    located = {
        name: (ctx.input(model), ctx.input(tokenizer) if tokenizer else None)
        for name, (model, tokenizer) in files.items()
    }
    # The whole split on every core; the latency on evaluate.threads, as evaluate times it.
    runtimes = {name: load_classifier(*where) for name, where in located.items()}
    labels = _labels(runtimes, val["label"])
    truth = [labels.index(label) for label in val["label"]]
    measured = _measured(ctx, texts, files, front, located, runtimes)
    measured, unlearned = learned(
        truth,
        measured,
        labels,
        majority_label(split["train"]["label"]),
        params.select.family,
        params.evaluate.resamples,
        params.evaluate.bootstrap_seed,
    )
    excluded.update(unlearned)
    gate = params.promote
    choice = choose(
        truth,
        measured,
        params.select.family,
        gate.max_latency_ms_p95_b1,
        gate.max_size_mb,
        params.evaluate.resamples,
        params.evaluate.bootstrap_seed,
    )
    record = _record(ctx, choice, files, excluded, len(texts))
    path = ctx.path(params.paths.reports) / "selection.json"
    record.write(path)
    ctx.run.set_tags({"kiln.selected": choice.selected, "kiln.selected_family": record.chosen.family}, parent=True)
    ctx.run.set_tags({f"kiln.excluded.{name}": why for name, why in excluded.items()})
    summary = [f"selected {choice.reason}"] + [f"{name} left out: {why}" for name, why in excluded.items()]
    return StageResult(metrics=_metrics(record), artifacts={"selection": path}, summary=summary)


def _servable(ctx: StageContext) -> tuple[dict[str, tuple[str, str | None]], Front, dict[str, str]]:
    """`candidates` less an INT8 file quantize's gate refused; the front; and what was
    left out, with why."""
    files, front = candidates(ctx)
    int8 = quantize.report(ctx)
    excluded = {} if int8.passed else {"onnx_int8": f"refused by quantize's gate: {int8.verdict}"}
    return {name: file for name, file in files.items() if name not in excluded}, front, excluded


def _labels(runtimes: dict, val_labels) -> list[str]:
    """The label map every candidate shares, which must hold every val label."""
    labels = runtimes["onnx_fp32"].labels
    if unknown := sorted(set(val_labels) - set(labels)):
        raise KilnError(f"select: val labels {unknown} are not in the models' label map {labels}")
    for name, runtime in runtimes.items():
        if runtime.labels != labels:
            raise KilnError(f"select: {name} has labels {runtime.labels}, the others {labels}")
    return labels


def _measured(ctx: StageContext, texts: list[str], files, front: Front, located, runtimes) -> dict[str, Measured]:
    """Each candidate's val predictions, batch-1 latency and file size."""
    # The gate's budget is batch-1 latency: batches of 32 are timed by evaluate alone.
    threads = ctx.params.evaluate.threads
    timed = {name: load_classifier(*where, threads=threads).logits for name, where in located.items()}
    timing = ev.latency(timed, texts, ctx.params.evaluate, batched=False)
    return {
        name: Measured(
            family=front.members[name].family if name in front.members else _family(name),
            predicted=runtime.logits(texts).argmax(-1).tolist(),
            latency_ms_p95_b1=timing[name]["latency_ms_p95_b1"],
            size_mb=ctx.path(files[name][0]).stat().st_size / 1e6,
        )
        for name, runtime in runtimes.items()
    }


def _record(ctx: StageContext, choice, files, excluded: dict[str, str], val_texts: int) -> Selection:
    gate = ctx.params.promote
    return Selection(
        family=ctx.params.select.family,
        selected=choice.selected,
        reason=choice.reason,
        val_texts=val_texts,
        budgets={"max_latency_ms_p95_b1": gate.max_latency_ms_p95_b1, "max_size_mb": gate.max_size_mb},
        candidates={
            name: Candidate(
                family=r.family,
                file=files[name][0],
                tokenizer=files[name][1],
                val_macro_f1=r.macro_f1.estimate,
                val_macro_f1_ci95=(r.macro_f1.low, r.macro_f1.high),
                val_accuracy=r.accuracy.estimate,
                latency_ms_p95_b1=r.latency_ms_p95_b1,
                size_mb=r.size_mb,
                within_budgets=r.within_budgets,
                tied_with_best=r.tied_with_best,
            )
            for name, r in choice.candidates.items()
        },
        excluded=excluded,
    )


def _metrics(record: Selection) -> dict[str, float]:
    chosen = record.candidates[record.selected]
    metrics = {
        "selected/val_macro_f1": chosen.val_macro_f1,
        "selected/val_macro_f1_lo": chosen.val_macro_f1_ci95[0],
        "selected/val_macro_f1_hi": chosen.val_macro_f1_ci95[1],
    }
    for name, c in record.candidates.items():
        metrics.update(
            {
                f"{name}/val_macro_f1": c.val_macro_f1,
                f"{name}/val_macro_f1_lo": c.val_macro_f1_ci95[0],
                f"{name}/val_macro_f1_hi": c.val_macro_f1_ci95[1],
            }
        )
    return metrics
