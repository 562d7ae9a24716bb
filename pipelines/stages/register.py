"""register: the INT8 ONNX model, its tokenizer and label map as an MLflow model defined
as code, registered as a new version with alias `challenger` and its lineage as tags."""

import hashlib
import json
import os

import yaml
from tokenizers import Tokenizer

from components.data.drift import profile
from components.errors import KilnError
from pipelines import tracking
from pipelines.io import write_json
from pipelines.registry import register_model, registry_errors
from pipelines.stages import StageContext, StageResult
from pipelines.training import read_split


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


def _report(ctx: StageContext, name: str, maker: str) -> dict:
    path = ctx.path(ctx.params.paths.reports) / f"{name}.json"
    if not path.is_file():
        raise KilnError(f"register: {path} is missing; the {maker} stage writes it (kiln stage {maker})")
    return json.loads(path.read_text())


def run(ctx: StageContext) -> StageResult:
    paths, name = ctx.params.paths, ctx.params.register_.model_name
    model = ctx.path(paths.quantized)
    tokenizer = ctx.path(paths.onnx) / "tokenizer.json"
    for path, maker in ((model, "quantize"), (tokenizer, "export")):
        if not path.is_file():
            raise KilnError(f"register: {path} is missing; the {maker} stage makes it (kiln stage {maker})")
    validation = _report(ctx, "validation", "validate")
    export, quantize = _report(ctx, "export", "export"), _report(ctx, "quantize", "quantize")
    evaluation = _report(ctx, "evaluation", "evaluate")["variants"]["onnx_int8"]
    lock_text, lock_hash, lock_outs = _lock(ctx)
    split = lock_outs.get("split", {})
    commit, dirty = tracking.git_state(ctx.root)

    splits = read_split(ctx, "train", "test")
    example = splits["test"]["text"].head(2).tolist()
    # What the retrain flow measures a new batch's drift against once this is champion.
    reference = profile(splits["train"], Tokenizer.from_file(str(tokenizer))).to_dict()
    tags = {
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
        "dvc.lock.sha256": lock_hash,
        "data.validated": lock_outs.get("validate", {}).get(paths.validated, ""),
        # The split stage writes one file per split, so the data version is their hashes.
        "data.split": ",".join(f"{path}={md5}" for path, md5 in sorted(split.items()) if path.startswith(paths.split)),
        "data.validation": "passed" if validation.get("success") else "failed",
        "gate.export_parity": "passed",  # export fails, and nothing reaches here, otherwise
        "gate.export_max_abs_diff": str(export.get("pruned/max_abs_diff")),
        "gate.quantize_parity": "passed",
        "gate.quantize_agreement": str(quantize.get("int8/agreement")),
        "mlflow.run_id": ctx.run.run_id or "",
        "mlflow.parent_run_id": ctx.run.parent_id or "",
        "prefect.flow_run_id": os.environ.get(tracking.FLOW_RUN_ENV, ""),
        "test.macro_f1": str(evaluation["macro_f1"]),
    }
    with registry_errors(f"register: registering '{name}'"):
        registered, uri = register_model(name, model, tokenizer, example, tags, run_id=ctx.run.run_id,
                                         lineage={"dvc.lock": lock_text, "validation.json": validation,
                                                  "profile.json": reference})
    out = {"model_name": name, "version": registered, "run_id": ctx.run.run_id,
           "model_uri": uri, "tags": tags}
    write_json(out, ctx.path(paths.reports) / "register.json")
    return StageResult(metrics={"registered/version": float(registered)})

