"""register: the INT8 ONNX model, its tokenizer and label map as an MLflow model defined
as code, registered as a new version with alias `challenger`, its lineage and the gates'
measurements as tags. A rerun that made the same file finds its version again."""

import hashlib
import json
import os

import yaml
from tokenizers import Tokenizer

from components.data.drift import profile
from components.deploy.onnx import read_metadata
from components.errors import KilnError
from pipelines import tracking
from pipelines.contract import StageContext, StageResult
from pipelines.records import ExportReport, QuantizeReport, Registration
from pipelines.registry import register_model, registry_errors
from pipelines.stages.quantize import REPORT_KEY


def _lock(ctx: StageContext) -> tuple[str, str, dict]:
    """dvc.lock's text, its sha256 and, per stage, the md5 of each output: DVC has
    written the entries of every upstream stage by the time this one runs."""
    path = ctx.root / "dvc.lock"
    if not path.is_file():
        raise KilnError("register: dvc.lock is missing; run the pipeline with `kiln run` or `dvc repro`")
    text = path.read_bytes()
    stages = (yaml.safe_load(text) or {}).get("stages", {})
    outs = {name: {o["path"]: o.get("md5", "") for o in stage.get("outs", [])} for name, stage in stages.items()}
    return text.decode(), hashlib.sha256(text).hexdigest(), outs


def run(ctx: StageContext) -> StageResult:
    paths, name = ctx.params.paths, ctx.params.register_.name_for(ctx.params.ingest)
    model = ctx.input(paths.quantized, "INT8 model")
    tokenizer = ctx.input(f"{paths.onnx}/tokenizer.json", "tokenizer")
    validation = json.loads(ctx.input(f"{paths.reports}/validation.json", "validation report").read_text())
    evaluation = json.loads(ctx.input(f"{paths.reports}/evaluation.json", "evaluation report").read_text())
    export = ExportReport.read(ctx.input(f"{paths.onnx}/export.json", "export report"), ctx.name, "export")
    quantize = QuantizeReport.model_validate(read_metadata(model).get(REPORT_KEY) or {})
    lock_text, lock_hash, lock_outs = _lock(ctx)
    commit, dirty = ctx.git
    splits = ctx.read_split("train", "test")
    example = splits["test"]["text"].head(2).tolist()
    # What the retrain flow measures a new batch's drift against once this is champion.
    reference = profile(splits["train"], Tokenizer.from_file(str(tokenizer))).to_dict()
    shipped = export.models["pruned"]
    tags = {
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
        "dvc.lock.sha256": lock_hash,
        "data.validated": lock_outs.get("validate", {}).get(paths.validated, ""),
        # The split stage writes one file per split, so the data version is their hashes.
        "data.split": ",".join(
            f"{path}={md5}" for path, md5 in sorted(lock_outs.get("split", {}).items()) if path.startswith(paths.split)
        ),
        "data.validation": "passed" if validation.get("success") else "failed",
        "gate.export_max_abs_diff": str(shipped.max_abs_diff),
        "gate.export_agreement": str(shipped.agreement),
        "gate.quantize_agreement": str(quantize.agreement),
        "gate.quantize_f1_drop": str(quantize.fp32_macro_f1 - quantize.int8_macro_f1),
        "mlflow.run_id": ctx.run.run_id or "",
        "mlflow.parent_run_id": ctx.run.parent_id or "",
        "prefect.flow_run_id": os.environ.get(tracking.FLOW_RUN_ENV, ""),
        "test.macro_f1": str(quantize.int8_macro_f1),
    }
    with registry_errors(f"register: registering '{name}'"):
        number, uri, reused = register_model(
            name,
            model,
            tokenizer,
            example,
            tags,
            run_id=ctx.run.run_id,
            lineage={
                "dvc.lock": lock_text,
                "validation.json": validation,
                "evaluation.json": evaluation,
                "profile.json": reference,
            },
        )
    Registration(model_name=name, version=number, run_id=ctx.run.run_id, model_uri=uri, reused=reused, tags=tags).write(
        ctx.path(paths.reports) / "register.json"
    )
    summary = [f"version {number} of '{name}' already holds this model; registered nothing new"] if reused else []
    return StageResult(metrics={"registered/version": float(number)}, summary=summary)
