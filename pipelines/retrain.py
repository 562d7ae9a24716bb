"""The `retrain` flow: new labelled batches in, a better champion out, or the champion kept.

One run: take the repository lock, pull from the DVC remote, check every batch in the
incoming folder against the dataset and the champion's training data, move rejected
batches to quarantine (and stop), move accepted ones to the processed folder (where the
`incoming` ingest source keeps reading them, so the dataset does not change by the move),
rerun the DAG, push, and publish a summary to Prefect and MLflow.

Batches move before the DAG runs on purpose: if a run dies halfway, the batch is already
part of the dataset's inputs, the stages that finished sit in DVC's cache, and the next
run carries on from them instead of learning the batch a second time.
"""

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed

from components.data.batches import BatchOutcome, check
from components.data.sources import batch_files, learned
from components.errors import KilnError
from pipelines import dag, registry, tracking
from pipelines.env import STATE_DIR, find_root
from pipelines.params import NotifyConfig, Params, load

DEPLOYMENT = "retrain"
FLOW = "kiln-retrain"


class Busy(KilnError):
    """Another retrain holds the repository."""


@contextmanager
def repo_lock(root: Path) -> Iterator[None]:
    """The second line behind the deployment's concurrency limit: `kiln retrain` by hand,
    or a second worker, finds the repository taken and does nothing. An OS lock, so a
    killed run leaves nothing to clean up."""
    from filelock import FileLock, Timeout

    path = root / STATE_DIR / "retrain.lock"
    path.parent.mkdir(exist_ok=True)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise Busy(f"another retrain is running in {root} (it holds {path}); this one changed nothing") from None
    try:
        yield
    finally:
        lock.release()


def check_tracking() -> str:
    """Fail fast, naming the URI, when the tracking server is not there: a run that finds
    out at the register stage has spent its training time for nothing."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            answer = requests.get(uri.rstrip("/") + "/health", timeout=10)
        except requests.RequestException as err:
            raise KilnError(f"the MLflow tracking server at {uri} is not answering ({type(err).__name__}); "
                            f"start it (`kiln up`) or set MLFLOW_TRACKING_URI") from None
        if not answer.ok:
            raise KilnError(f"the MLflow tracking server at {uri} answered {answer.status_code} to /health")
    else:
        with registry.registry_errors(f"the MLflow tracking store at {uri}"):
            tracking.client().search_experiments(max_results=1)
    return uri


@dataclass
class Reference:
    """The champion a batch is compared with."""

    version: str | None
    profile: Any = None
    tokenizer: Any = None
    note: str = ""


def champion_reference(name: str) -> Reference:
    import mlflow
    from mlflow.exceptions import MlflowException
    from tokenizers import Tokenizer

    from components.data.drift import Profile

    client = tracking.client()
    with registry.registry_errors(f"reading the champion of '{name}'"):
        champion = registry.alias(client, name, registry.CHAMPION)
        if champion is None:
            return Reference(None, note="no champion yet: drift checks skipped")
        try:
            profile = Profile.from_dict(mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/lineage/profile.json"))
        except (MlflowException, OSError, KeyError):
            return Reference(str(champion.version),
                             note=f"champion v{champion.version} has no training profile: drift checks skipped")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{champion.version}", dst_path=tmp))
            tokenizer = Tokenizer.from_file(str(next(folder.rglob("tokenizer.json"))))
    return Reference(str(champion.version), profile, tokenizer)


def _free(folder: Path, name: str) -> Path:
    """`folder/name`, or a dated variant if a batch of that name is already there: a batch
    must never replace another one."""
    target = folder / name
    if not target.exists():
        return target
    stem, suffix = Path(name).stem, Path(name).suffix
    return folder / f"{stem}.{time.strftime('%Y%m%dT%H%M%S')}{suffix}"


def quarantine(outcome: BatchOutcome, folder: Path) -> Path:
    """Move a rejected batch into its own folder beside its report."""
    home = _free(folder, f"{time.strftime('%Y%m%dT%H%M%S')}-{outcome.path.name}")
    home.mkdir(parents=True)
    (home / "report.json").write_text(json.dumps({"batch": outcome.path.name, "accepted": False,
                                                  "reasons": outcome.reasons, **outcome.report},
                                                 indent=2, default=str))
    shutil.move(outcome.path, home / outcome.path.name)
    return home


def learn(paths: list[Path], folder: Path, repo) -> list[Path]:
    """Move accepted batches into the processed folder and give each a DVC pointer, so
    the data version travels with git and the remote."""
    folder.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in paths:
        target = _free(folder, path.name)
        shutil.move(path, target)
        moved.append(target)
    if moved:
        repo.add([str(p) for p in moved])
    return moved


def remote(repo) -> str | None:
    return repo.config.get("core", {}).get("remote") or None


@task(cache_policy=NO_CACHE)
def pull(repo) -> str:
    from dvc.exceptions import DvcException

    try:
        repo.pull()
    except DvcException as err:
        # A fresh remote holds nothing yet; the run rebuilds what it lacks.
        return f"pull: {err}"
    return "pulled"


@task(cache_policy=NO_CACHE)
def push(repo) -> str:
    from dvc.exceptions import DvcException

    try:
        count = repo.push()
    except DvcException as err:
        raise KilnError(f"dvc push to remote '{remote(repo)}' failed: {err}") from None
    return f"pushed {count} file(s)"


@task(cache_policy=NO_CACHE)
def check_batches(root: Path, params: Params, reference: Reference) -> list[BatchOutcome]:
    """Each batch against everything learned before it, earlier batches of this run
    included, so two batches holding the same rows add them once."""
    import pandas as pd

    cfg = params.ingest
    dataset = learned(cfg, root)
    outcomes = []
    for path in batch_files(root / cfg.incoming.dir):
        outcome = check(path, dataset, cfg.file, params.validate_, reference.profile, reference.tokenizer,
                        params.retrain.drift)
        outcomes.append(outcome)
        if outcome.accepted:
            dataset = pd.concat([dataset, outcome.fresh], ignore_index=True)
    return outcomes


@dataclass
class Summary:
    started: str
    batches: list[BatchOutcome] = field(default_factory=list)
    reference: str = ""
    stages: list[Any] = field(default_factory=list)
    promotion: dict | None = None
    dvc: list[str] = field(default_factory=list)
    outcome: str = ""
    error: str | None = None

    def markdown(self) -> str:
        lines = [f"# Kiln retrain, {self.started}", "", f"**{self.outcome}**", ""]
        if self.error:
            lines += ["```", self.error, "```", ""]
        lines += ["## New data", ""]
        if self.batches:
            lines += ["| batch | rows | new rows | result | reasons |", "| --- | ---: | ---: | --- | --- |"]
            lines += [f"| {b.path.name} | {b.rows} | {b.new_rows} | {'accepted' if b.accepted else 'quarantined'} "
                      f"| {'; '.join(b.reasons).replace('|', '/') or '-'} |" for b in self.batches]
        else:
            lines.append("No new batches.")
        lines += ["", "## Validation and drift", "", f"Reference: {self.reference}", ""]
        for b in self.batches:
            drift = b.report.get("drift")
            if isinstance(drift, list):
                lines += [f"- {b.path.name}: " + "; ".join(
                    f"{'pass' if c['passed'] else 'FAIL'} {c['detail']}" for c in drift)]
            elif drift:
                lines.append(f"- {b.path.name}: {drift}")
        if self.stages:
            lines += ["", "## Pipeline", "", "| stage | status | seconds |", "| --- | --- | ---: |"]
            lines += [f"| {r.name} | {r.status} | {r.seconds:.1f} |" for r in self.stages]
        if self.promotion:
            p = self.promotion
            metrics = p.get("metrics", {})
            lines += ["", "## Models", "", f"| metric | challenger v{p['version']} | champion |",
                      "| --- | ---: | ---: |"]
            for key in sorted(k.split("/", 1)[1] for k in metrics if k.startswith("challenger/")):
                theirs = metrics.get(f"champion/{key}")
                lines.append(f"| {key} | {metrics[f'challenger/{key}']:.4g} | "
                             f"{'-' if theirs is None else f'{theirs:.4g}'} |")
            lines += ["", "## Decision", "",
                      f"Version {p['version']} {'promoted' if p['promoted'] else 'not promoted'}; "
                      f"champion is version {p['champion']}.", ""]
            lines += [f"- {reason}" for reason in p.get("reasons", [])]
        if self.dvc:
            lines += ["", "## DVC", ""] + [f"- {line}" for line in self.dvc]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        return {"markdown": self.markdown(), "started": self.started, "outcome": self.outcome, "error": self.error, "reference": self.reference,
                "batches": [{"batch": b.path.name, "accepted": b.accepted, "rows": b.rows, "new_rows": b.new_rows,
                             "reasons": b.reasons, "report": b.report} for b in self.batches],
                "stages": [vars(r) for r in self.stages], "promotion": self.promotion, "dvc": self.dvc}


def notify(cfg: NotifyConfig, subject: str, body: str) -> str:
    """Through a Prefect notification block; with none configured, a log line."""
    logger = logging.getLogger("kiln.retrain")
    if not (cfg.apprise_url or cfg.block):
        logger.warning("%s (no retrain.notify configured, so this log line is the notification)", subject)
        return "log line"
    from prefect.blocks.core import Block
    from prefect.blocks.notifications import AppriseNotificationBlock

    try:
        block = AppriseNotificationBlock(url=cfg.apprise_url) if cfg.apprise_url else Block.load(cfg.block)
        block.notify(body=body, subject=subject)
    except Exception as err:  # a notification that fails must not hide the failure it reports
        logger.error("notification through %s failed: %s", cfg.block or "retrain.notify.apprise_url", err)
        return f"failed: {err}"
    return cfg.block or "apprise"


def publish(summary: Summary, run_id: str | None) -> None:
    """The summary as a Prefect markdown artifact and as files of the MLflow run."""
    from prefect.artifacts import create_markdown_artifact

    text = summary.markdown()
    create_markdown_artifact(markdown=text, key="retrain-summary", description=summary.outcome)
    if run_id:
        mlflow = tracking.client()
        mlflow.log_text(run_id, text, "retrain/summary.md")
        mlflow.log_dict(run_id, summary.as_dict(), "retrain/summary.json")


def _notify_failure(_flow, _flow_run, state) -> None:
    """Prefect's failure and crash hook: the notification goes out however the run ended."""
    try:
        cfg = load(find_root() / "params.yaml").retrain.notify
    except KilnError:
        cfg = NotifyConfig()
    data = state.result(raise_on_failure=False)
    body = data.get("markdown") if isinstance(data, dict) else None
    notify(cfg, f"Kiln retrain failed: {state.message}"[:250], body or str(state.message))


@flow(name=FLOW, on_failure=[_notify_failure], on_crashed=[_notify_failure])
def retrain():
    """Check new batches, rerun the DAG on the accepted ones, and let the gate decide."""
    root = find_root()
    params = load(root / "params.yaml")
    os.environ[tracking.FLOW_RUN_ENV] = str(flow_run.get_id())
    logger = get_run_logger()
    summary = Summary(started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    try:
        with repo_lock(root):
            failure = _retrain(root, params, summary, logger)
    except Busy as err:
        logger.warning(str(err))
        return Cancelled(message=str(err))
    except KilnError as err:
        # A user or setup error: its message is the whole story, no traceback.
        failure = summary.outcome = str(err)
    if failure:
        return Failed(message=failure, data=summary.as_dict())
    return Completed(message=summary.outcome, data=summary.as_dict())


def _retrain(root: Path, params: Params, summary: Summary, logger) -> str | None:
    """The run itself, under the lock; returns why it failed, or None."""
    from pipelines.flow import pipeline

    check_tracking()
    if params.ingest.source != "incoming":
        raise KilnError(f"retrain reads new batches through the `incoming` ingest source, but params.yaml has "
                        f"ingest.source: {params.ingest.source}")
    key = f"retrain-{uuid.uuid4().hex}"
    mlflow = tracking.client()
    experiment = tracking.experiment_id(mlflow, params.tracking.experiment, root)
    run_id = tracking.create_parent(mlflow, experiment, root, key, "retrain")
    repo = dag.open_repo(root)
    if remote(repo):
        summary.dvc.append(pull(repo))
    reference = champion_reference(params.register_.model_name)
    summary.reference = reference.note or f"champion v{reference.version}'s training data"
    summary.batches = check_batches(root, params, reference)
    rejected = [b for b in summary.batches if not b.accepted]
    for batch in summary.batches:
        logger.info(batch.summary)
    failure: str | None = None
    if rejected:
        folder = root / params.ingest.incoming.quarantine_dir
        homes = [quarantine(b, folder) for b in rejected]
        summary.outcome = (f"{len(rejected)} batch(es) quarantined; nothing retrained, the champion stays: "
                           + ", ".join(str(h.relative_to(root)) for h in homes))
        failure = summary.outcome
    else:
        moved = learn([b.path for b in summary.batches], root / params.ingest.incoming.processed_dir, repo)
        state = pipeline(execution=key, return_state=True)
        rows = state.result(raise_on_failure=False)
        summary.stages = rows if isinstance(rows, list) else []
        if state.is_failed():
            failure = f"the pipeline failed: {state.message}"
            summary.outcome = failure + "; the champion stays"
            summary.error = state.message
        else:
            summary.outcome, summary.promotion = _decision(root, params, summary.stages, len(moved))
            if remote(repo):
                summary.dvc.append(push(repo))
    _finish(summary, run_id, failure)
    return failure


def _decision(root: Path, params: Params, stages: list, batches: int) -> tuple[str, dict | None]:
    learned = f"{batches} batch(es) learned; " if batches else "no new batches; "
    promoted_now = any(r.name == "promote" and r.status == "ran" for r in stages)
    report = root / params.paths.reports / "promotion.json"
    if not promoted_now or not report.is_file():
        return learned + "every stage was up to date, no new model", None
    promotion = json.loads(report.read_text())
    verdict = (f"version {promotion['version']} promoted to champion" if promotion["promoted"]
               else f"version {promotion['version']} refused by the gate; champion stays version "
                    f"{promotion['champion']}")
    return learned + verdict, promotion


def _finish(summary: Summary, run_id: str, failure: str | None) -> None:
    from mlflow.entities import Metric, RunTag

    mlflow = tracking.client()
    now = int(time.time() * 1000)
    metrics = {"retrain/batches": len(summary.batches),
               "retrain/quarantined": sum(not b.accepted for b in summary.batches),
               "retrain/new_rows": sum(b.new_rows for b in summary.batches if b.accepted)}
    if summary.promotion:
        metrics["retrain/promoted"] = float(summary.promotion["promoted"])
    mlflow.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                     tags=[RunTag("kiln.retrain.outcome", summary.outcome[:5000])])
    publish(summary, run_id)
    mlflow.set_terminated(run_id, "FAILED" if failure else "FINISHED")


def serve(params: Params) -> None:
    """Serve the `retrain` deployment on the schedule of params.yaml until stopped: at
    most one run at a time, and a run due while another runs is cancelled, not queued."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    cfg = params.retrain
    retrain.serve(
        name=DEPLOYMENT,
        schedules=[Cron(cfg.cron, timezone=cfg.timezone)],
        global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        description="New batches in, drift and validation checks, the DAG, the promotion gate.",
        tags=["kiln"],
        # By module, not file path: runs start in the repository, where kiln is installed.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
