"""The `monitor` flow: the champion's logged traffic of the last `monitor.window_days`
against the data it was trained on (components/monitor/watch.py).

One run writes reports/monitor.html and monitor.json, an MLflow run in the
`<experiment>-monitor` experiment (the checks as metrics, the page as an artifact), a
Prefect markdown artifact, and, when a check crosses its threshold, the Prefect event
`kiln.monitor.drift` with the champion as its resource, for automations and
notifications to act on. Drift is a finding, not a failure: the flow run completes.
`kiln serve` holds it as a deployment on `monitor.cron`.
"""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed

from components.monitor import inference
from components.monitor.page import render
from components.monitor.watch import MonitorReport, watch
from pipelines.core.env import find_root, git_state
from pipelines.core.io import atomic, write_json
from pipelines.core.params import Params, load
from pipelines.registry.models import champion_reference
from pipelines.tracking import experiments, runs

if TYPE_CHECKING:
    from prefect.runner import Runner

DEPLOYMENT = "monitor"
FLOW = "kiln-monitor"
EVENT = "kiln.monitor.drift"


@flow(name=FLOW, flow_run_name=lambda: runs.run_name("monitor"))
def monitor():
    """Check the champion's logged traffic for drift; emit kiln.monitor.drift if it did."""
    root = find_root()
    params = load(root / "params.yaml")
    report, shares = check(root, params)
    _publish(root, params, report, shares)
    get_run_logger().info(report.headline)
    return Completed(message=report.headline[:1000], data=report.model_dump(mode="json"))


def check(root: Path, params: Params) -> tuple[MonitorReport, dict[str, float]]:
    """The report on the window ending now, and the champion's training label shares."""
    name = params.register_.name_for(params.ingest)
    end = datetime.now(UTC)
    start = end - timedelta(days=params.monitor.window_days)
    reference = champion_reference(name)
    if reference.profile is None:
        report = MonitorReport(model=name, version=reference.version or "-", start=start, end=end, requests=0)
        report.skipped = reference.note
        return report, {}
    traffic = inference.read(root / params.serve.log_dir, since=start, until=end)
    # The champion's own answers: an earlier version's say nothing about this one.
    traffic = traffic[(traffic["model"] == name) & (traffic["version"] == str(reference.version))]
    report = watch(
        traffic, reference.profile, reference.tokenizer, params.monitor, name, str(reference.version), start, end
    )
    return report, reference.profile.label_shares


def _publish(root: Path, params: Params, report: MonitorReport, shares: dict[str, float]) -> None:
    from mlflow.entities import Metric, RunTag
    from prefect.artifacts import create_markdown_artifact

    reports = root / params.paths.reports
    page = reports / "monitor.html"
    with atomic(page) as tmp:
        tmp.write_text(render(report, shares), encoding="utf-8")
    write_json(report.model_dump(mode="json"), reports / "monitor.json")

    experiments.check()
    client = runs.client()
    experiment = experiments.experiment_id(client, f"{params.tracking.experiment}-monitor")
    tags = runs.run_tags("monitor", git_state(root))
    run = client.create_run(experiment, run_name=flow_run.get_name() or runs.run_name("monitor"), tags=tags)
    now = int(time.time() * 1000)
    metrics = {"monitor/requests": report.requests, "monitor/drift": float(bool(report.failed))}
    if report.mean_confidence is not None:
        metrics["monitor/mean_confidence"] = report.mean_confidence
    metrics |= {f"monitor/{c.name}": c.value for c in report.checks}
    verdict = "no verdict" if report.skipped else ("drift" if report.failed else "no drift")
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[
            RunTag("kiln.monitor.verdict", verdict),
            RunTag("kiln.model.name", report.model),
            RunTag("kiln.model.version", report.version),
            RunTag("mlflow.note.content", report.headline[:5000]),
        ],
    )
    client.log_artifact(run.info.run_id, str(page))
    client.log_artifact(run.info.run_id, str(reports / "monitor.json"))
    client.set_terminated(run.info.run_id)
    create_markdown_artifact(markdown=_markdown(report), key="kiln-monitor", description=report.headline[:500])
    if report.failed:
        _emit(report)


def _markdown(report: MonitorReport) -> str:
    lines = [f"**{report.headline}**", ""]
    if report.checks:
        lines += ["| check | result | value | limit |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {c.name} | {'passed' if c.passed else 'FAILED'} | {c.value:.4f} | {c.threshold:g} |"
            for c in report.checks
        ]
    lines += [f"- not checked: {note}" for note in report.notes]
    return "\n".join(lines)


def _emit(report: MonitorReport) -> None:
    from prefect.events import emit_event

    related = []
    if (run := flow_run.get_id()) is not None:
        related = [{"prefect.resource.id": f"prefect.flow-run.{run}", "prefect.resource.role": "flow-run"}]
    emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": f"kiln.model.{report.model}.{report.version}",
            "prefect.resource.name": f"{report.model} version {report.version}",
            "kiln.model.name": report.model,
            "kiln.model.version": report.version,
        },
        related=related,
        payload={
            "failed": [c.name for c in report.failed],
            "details": [c.detail for c in report.failed],
            "requests": report.requests,
            "window": [report.start.isoformat(), report.end.isoformat()],
        },
    )


def add_deployment(served: "Runner", params: Params) -> None:
    """The `monitor` deployment on `served`, on monitor.cron in retrain.timezone."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    served.add_flow(
        monitor,
        name=DEPLOYMENT,
        schedules=[Cron(params.monitor.cron, timezone=params.retrain.timezone)],
        description="The champion's logged traffic against its training data; kiln.monitor.drift when it drifted.",
        tags=["kiln"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
