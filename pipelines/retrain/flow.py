"""The `retrain` flow: new labelled batches in, a better champion out, or the champion kept.

One run: take the repository lock, pull from the DVC remote, check every batch in the
incoming folder against the dataset and the champion's training data, move rejected
batches to quarantine (and stop), move accepted ones to the processed folder, rerun the
DAG, push, and publish a summary to Prefect and MLflow. Each batch moved is an entry in
the audit trail.

Batches move before the DAG runs on purpose: if a run dies halfway, the batch is already
part of the dataset's inputs, the stages that finished sit in DVC's cache, and the next
run carries on from them instead of learning the batch a second time.
"""

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed

from components.errors import KilnError
from pipelines.core import dag, dvcdata, lock
from pipelines.core.env import find_root, git_state
from pipelines.core.params import Params, load
from pipelines.registry import audit
from pipelines.registry.models import champion_reference
from pipelines.retrain import intake
from pipelines.retrain.notify import on_failure
from pipelines.retrain.summary import StageLine, Summary
from pipelines.run.flow import pipeline
from pipelines.tracking import experiments, runs

if TYPE_CHECKING:
    from prefect.runner import Runner

DEPLOYMENT = "retrain"
FLOW = "kiln-retrain"


@flow(name=FLOW, flow_run_name=lambda: runs.run_name("retrain"), on_failure=[on_failure], on_crashed=[on_failure])
def retrain():
    """Check new batches, rerun the DAG on the accepted ones, and let the gate decide."""
    root = find_root()
    params = load(root / "params.yaml")
    os.environ[runs.FLOW_RUN_ENV] = str(flow_run.get_id())
    summary = Summary(started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    try:
        with lock.hold(root, "kiln retrain"):
            failure = _retrain(root, params, summary)
    except lock.Busy as err:
        get_run_logger().warning(str(err))
        return Cancelled(message=str(err))
    except KilnError as err:
        # A user or setup error: its message is the whole story, no traceback.
        failure = summary.outcome = str(err)
    if failure:
        return Failed(message=failure, data=summary.as_dict())
    return Completed(message=summary.outcome, data=summary.as_dict())


def _retrain(root: Path, params: Params, summary: Summary) -> str | None:
    """The run itself, under the lock; returns why it failed, or None."""
    experiments.check()
    if params.ingest.source != "incoming":
        raise KilnError(
            f"retrain reads new batches through the `incoming` ingest source, but params.yaml has "
            f"ingest.source: {params.ingest.source}"
        )
    key = f"retrain-{uuid.uuid4().hex}"
    mlflow = runs.client()
    repo = dag.open_repo(root)
    experiment = experiments.experiment_id(mlflow, params.tracking.experiment)
    os.environ[runs.RUN_NAME_ENV] = flow_run.get_name() or runs.run_name("retrain")
    run_id = runs.create_parent(mlflow, experiment, key, runs.run_tags("retrain", git_state(root, dag.generated(repo))))
    if dvcdata.remote(repo):
        summary.dvc.append(dvcdata.pull(repo))
    model = params.register_.name_for(params.ingest)
    reference = champion_reference(model)
    summary.reference = reference.note or f"champion v{reference.version}'s training data"
    summary.batches = intake.check_batches(repo, params, reference)
    for batch in summary.batches:
        get_run_logger().info(batch.summary)
    failure: str | None = None
    if rejected := [b for b in summary.batches if not b.accepted]:
        folder = root / params.ingest.incoming.quarantine_dir
        homes = [intake.quarantine(b, folder) for b in rejected]
        for outcome, home in zip(rejected, homes, strict=True):
            audit.batch(root, mlflow, model, outcome, home / outcome.batch, learned=False)
        failure = summary.outcome = (
            f"{len(rejected)} batch(es) quarantined; nothing retrained, the champion "
            f"stays: " + ", ".join(str(h.relative_to(root)) for h in homes)
        )
    else:
        moved = intake.learn([b.path for b in summary.batches], root / params.ingest.incoming.processed_dir, repo)
        for outcome, where in zip(summary.batches, moved, strict=True):
            audit.batch(root, mlflow, model, outcome, where, learned=True)
        state = pipeline(execution=key, return_state=True)
        data = state.result(raise_on_failure=False)
        rows = data.get("rows", []) if isinstance(data, dict) else []
        summary.stages = [StageLine(name=r.name, status=r.status, seconds=r.seconds) for r in rows]
        learned = f"{len(moved)} batch(es) learned; " if moved else "no new batches; "
        if state.is_failed():
            failure = f"the pipeline failed: {state.message}"
            summary.outcome, summary.error = failure + "; the champion stays", state.message
        else:
            summary.promotion = data.get("promotion")
            summary.outcome = learned + (
                summary.promotion.headline() if summary.promotion else "every stage was up to date, no new model"
            )
            if dvcdata.remote(repo):
                summary.dvc.append(dvcdata.push(repo))
    _finish(summary, run_id, failure)
    return failure


def _finish(summary: Summary, run_id: str, failure: str | None) -> None:
    from mlflow.entities import Metric, RunTag
    from prefect.artifacts import create_markdown_artifact

    mlflow = runs.client()
    now = int(time.time() * 1000)
    metrics = {
        "retrain/batches": len(summary.batches),
        "retrain/quarantined": sum(not b.accepted for b in summary.batches),
        "retrain/new_rows": sum(b.new_rows for b in summary.batches if b.accepted),
    }
    if summary.promotion:
        metrics["retrain/promoted"] = float(summary.promotion.promoted)
    mlflow.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag("kiln.retrain.outcome", summary.outcome[:5000])],
    )
    text = summary.markdown()
    create_markdown_artifact(markdown=text, key="retrain-summary", description=summary.outcome)
    mlflow.log_text(run_id, text, "retrain/summary.md")
    mlflow.log_dict(run_id, summary.as_dict(), "retrain/summary.json")
    mlflow.set_terminated(run_id, "FAILED" if failure else "FINISHED")


def runner(params: Params) -> "Runner":
    """A Prefect runner holding the `retrain` deployment on the schedule of params.yaml
    (created or updated on the server): at most one run at a time, and a run due while
    another runs is cancelled, not queued. `serve` runs it."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.runner import Runner
    from prefect.schedules import Cron

    cfg = params.retrain
    served = Runner(name=DEPLOYMENT, pause_on_shutdown=True)
    served.add_flow(
        retrain,
        name=DEPLOYMENT,
        schedules=[Cron(cfg.cron, timezone=cfg.timezone)],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        description="New batches in, drift and validation checks, the DAG, the promotion gate.",
        tags=["kiln"],
        # By module, not file path: runs start in the repository, where kiln is installed.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return served


def serve(served: "Runner") -> None:
    """Run `served` (see `runner`) until Ctrl-C or SIGTERM, which both pause its schedule
    on the way out."""
    import asyncio
    import signal

    # The runner's own SIGTERM handler raises SystemExit wherever the event loop happens to
    # be, and the shutdown then hung pausing the schedule (Prefect 3.8). SIGINT is asyncio's
    # way out: it cancels the runner's task, which pauses the schedule and returns.
    served.handle_sigterm = lambda *_: signal.raise_signal(signal.SIGINT)
    # A process started in the background by a shell without job control (`kiln serve &`
    # in a script, the way `make` or a scheduler may start it) inherits SIGINT ignored,
    # and Python and asyncio then leave it ignored: Ctrl-C and SIGTERM would stop nothing.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    asyncio.run(served.start())
