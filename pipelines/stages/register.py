"""register: the INT8 ONNX model, its tokenizer and label map as an MLflow model defined
as code, registered as a new version with alias `challenger`, its lineage and the gates'
measurements as tags. A rerun that made the same file finds its version again."""

import hashlib
import os
from typing import NamedTuple

import yaml
from tokenizers import Tokenizer

from components.data.drift import profile
from components.deploy.gate import Evidence
from components.deploy.records import Parity
from components.errors import KilnError
from pipelines.core.records import ExportReport, Registration, Selection, read_record
from pipelines.core.reports import Evaluation, Validation
from pipelines.registry.evaluated import Evaluated
from pipelines.registry.models import register_model, registry_errors
from pipelines.stagekit.contract import StageContext, StageResult
from pipelines.stagekit.explaining import front_member, source
from pipelines.stages.quantize import report as quantized
from pipelines.tracking import runs


class Lock(NamedTuple):
    text: str
    sha256: str
    outs: dict[str, dict[str, str]]  # by stage, each output's md5 by path


def _lock(ctx: StageContext) -> Lock:
    """dvc.lock's text, its sha256 and, per stage, the md5 of each output: DVC has
    written the entries of every upstream stage by the time this one runs."""
    path = ctx.root / "dvc.lock"
    if not path.is_file():
        raise KilnError("register: dvc.lock is missing; run the pipeline with `kiln run` or `dvc repro`")
    text = path.read_bytes()
    stages = (yaml.safe_load(text) or {}).get("stages", {})
    outs = {name: {o["path"]: o.get("md5", "") for o in stage.get("outs", [])} for name, stage in stages.items()}
    return Lock(text.decode(), hashlib.sha256(text).hexdigest(), outs)


def _evidence(ctx: StageContext, selection: Selection, validation: Validation) -> Evidence:
    """What validate, the export, classical and quantize stages (or the search, on val
    texts, as it made a model of its front) measured for the selected file, for the gate
    to hold against today's bounds."""
    paths, name = ctx.params.paths, selection.selected
    quantize: dict | None = None  # agreement, fp32_macro_f1, int8_macro_f1, texts, one_text_f1
    if name.startswith("search_"):
        evidence = front_member(ctx, name).evidence
        export, quantize = evidence["export"], evidence.get("quantize")
    else:
        if name == "classical":
            found = ctx.input(f"{paths.classical}/parity.json", "classical parity")
            parity = read_record(Parity, found, ctx.name, "classical")
        else:
            report = ExportReport.read(ctx.input(f"{paths.onnx}/export.json", "export report"), ctx.name, "export")
            parity = report.models["teacher" if name == "onnx_teacher" else "pruned"]
        export = parity.model_dump()
        if name == "onnx_int8":
            quantize = quantized(ctx).model_dump()
    return Evidence(
        export_max_abs_diff=export["max_abs_diff"],
        export_agreement=export["agreement"],
        quantize_agreement=None if quantize is None else quantize["agreement"],
        quantize_f1_drop=None if quantize is None else quantize["fp32_macro_f1"] - quantize["int8_macro_f1"],
        validation_passed=validation.success,
        quantized=quantize is not None,
        # The split's size and one text's cost, by which the gate widens today's bounds as
        # quantize did (absent from search trials an older Kiln finished).
        quantize_texts=(quantize or {}).get("texts"),
        quantize_one_text_f1=(quantize or {}).get("one_text_f1"),
    )


def _tags(
    ctx: StageContext, selection: Selection, validation: Validation, evaluation: Evaluation, lock: Lock
) -> dict[str, str]:
    """The version's lineage (code, data, runs) and what the gate holds it to, as tags under
    kiln.* (its run is the version's own `run_id`)."""
    paths, (commit, dirty) = ctx.params.paths, ctx.git
    tags = {
        "family": selection.chosen.family,
        "candidate": selection.selected,
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
        "dvc.lock.sha256": lock.sha256,
        "data.validated": lock.outs.get("validate", {}).get(paths.validated, ""),
        # The split stage writes one file per split, so the data version is their hashes.
        "data.split": ",".join(
            f"{path}={md5}" for path, md5 in sorted(lock.outs.get("split", {}).items()) if path.startswith(paths.split)
        ),
        **_evidence(ctx, selection, validation).to_tags(),
        "parent_run_id": ctx.run.parent_id or "",
        "prefect.flow_run_id": os.environ.get(runs.FLOW_RUN_ENV, ""),
        "test.macro_f1": str(evaluation.variants[selection.selected].macro_f1),
    }
    return {f"kiln.{key}": value for key, value in tags.items()}


def _evaluated(ctx: StageContext, splits: dict, lock: Lock, evaluation: Evaluation) -> Evaluated:
    """The splits under DVC's md5 of their files, and the selected model's test figures
    under the names its pipeline run shows them."""
    hashes, folder = lock.outs.get("split", {}), ctx.params.paths.split
    return Evaluated(
        splits={
            name: (rows, f"{folder}/{name}.parquet", hashes.get(f"{folder}/{name}.parquet") or None)
            for name, rows in splits.items()
        },
        test_metrics={
            **evaluation.selected_figures(),
            "selected/test_accuracy": evaluation.variants[evaluation.selected].accuracy,
        },
        parent_run_id=ctx.run.parent_id,
    )


def _confidence(model, tokenizer, texts: list[str], evaluation: Evaluation) -> float:
    """Mean top probability of `model` on `texts`, at the temperature it is served with."""
    import numpy as np

    from components.runtime.loader import load_classifier
    from components.runtime.session import predictions

    classifier = load_classifier(model, tokenizer)
    served = predictions(classifier.labels, classifier.logits(texts), evaluation.explain.temperature)
    return float(np.mean([max(p["probabilities"].values()) for p in served]))


def run(ctx: StageContext) -> StageResult:
    paths, name = ctx.params.paths, ctx.params.register_.name_for(ctx.params.ingest)
    selection = Selection.read(ctx.input(f"{paths.reports}/selection.json", "selection"), ctx.name, "select")
    chosen = selection.chosen
    model = ctx.input(chosen.file, "selected model")
    tokenizer = ctx.input(chosen.tokenizer, "tokenizer") if chosen.tokenizer else None
    validation = Validation.read(
        ctx.input(f"{paths.reports}/validation.json", "validation report"), ctx.name, "validate"
    )
    evaluation = Evaluation.read(
        ctx.input(f"{paths.reports}/evaluation.json", "evaluation report"), ctx.name, "evaluate"
    )
    lock = _lock(ctx)
    splits = ctx.read_split()
    example = splits["test"]["text"].head(2).tolist()
    # What the retrain flow measures a new batch's drift against once this is champion: the
    # training split's profile, under the transformer tokenizer whichever family ships.
    words = ctx.input(paths.onnx_tokenizer("pruned"), "tokenizer")
    reference = profile(splits["train"], Tokenizer.from_file(str(words)))
    # And how sure the model is as served, on val: what `kiln monitor` compares traffic's with.
    reference.confidence = _confidence(model, tokenizer, splits["val"]["text"].tolist(), evaluation)
    tags = _tags(ctx, selection, validation, evaluation, lock)
    lineage = {
        "dvc.lock": lock.text,
        "validation.json": validation.model_dump(mode="json"),
        "evaluation.json": evaluation.model_dump(mode="json"),
        "selection.json": selection.model_dump(mode="json"),
        "profile.json": reference.to_dict(),
        "tokenizer.json": words.read_text(encoding="utf-8"),
    }
    with registry_errors(f"register: registering '{name}'"):
        registered = register_model(
            name,
            model,
            tokenizer,
            example,
            tags,
            ctx.run.run_id,
            lineage,
            explainer=source(ctx, selection.selected),
            temperature=evaluation.explain.temperature,
            evaluated=_evaluated(ctx, splits, lock, evaluation),
        )
    number = registered.version
    Registration(
        model_name=name,
        version=number,
        run_id=ctx.run.run_id,
        model_uri=registered.uri,
        reused=registered.reused,
        tags=tags,
    ).write(ctx.path(paths.reports) / "register.json")
    summary = [f"version {number} of '{name}' already holds this model; registered nothing new"]
    return StageResult(metrics={"registered/version": float(number)}, summary=summary if registered.reused else [])
