"""What a `kiln run` leaves in Prefect besides its task runs, for a team that watches its
flows there: the candidates as a table artifact, the promotion decision as a markdown
artifact, links to the MLflow run and the model version, and an event to point an
automation at (`kiln.model.promoted` or `kiln.model.refused`, the version as its resource).
"""

import logging
from pathlib import Path

from pipelines.core import console
from pipelines.core.env import tracking_uri
from pipelines.core.records import Promotion, Selection
from pipelines.core.reports import Evaluation
from pipelines.tracking import runs

# Where `kiln ui` serves a local store's UI (its default host and port).
LOCAL_UI = "http://127.0.0.1:5000"


def _interval(estimate: float, interval: tuple[float, float]) -> str:
    return f"{estimate:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"


def candidates(selection: Selection, evaluation: Evaluation | None) -> list[dict[str, str]]:
    """A row a candidate: its val figures as select measured them, its test figures as
    evaluate did (when it scored this selection)."""
    rows = []
    for name, found in selection.candidates.items():
        test = evaluation.variants.get(name) if evaluation and evaluation.selected == selection.selected else None
        rows.append(
            {
                "candidate": f"{name} (selected)" if name == selection.selected else name,
                "family": found.family,
                "val macro-F1 [95 % CI]": _interval(found.val_macro_f1, found.val_macro_f1_ci95),
                "test macro-F1 [95 % CI]": "-" if test is None else _interval(test.macro_f1, test.macro_f1_ci95),
                "size MB": f"{found.size_mb:.2f}",
                "p95 latency at batch 1, ms": f"{found.latency_ms_p95_b1:.2f}",
            }
        )
    return rows


def decision(promotion: Promotion) -> str:
    """The promotion decision and every check behind it, as markdown."""
    lines = [f"# {promotion.headline()}", ""]
    lines += [f"- {reason}" for reason in promotion.reasons]
    if promotion.resolution:
        lines += ["", f"Note: {promotion.resolution}"]
    return "\n".join(lines) + "\n"


def ui_base() -> str:
    """The MLflow UI of the store this run tracks into: its server, or `kiln ui`'s."""
    where = tracking_uri()
    return where.rstrip("/") if where.startswith(("http://", "https://")) else LOCAL_UI


def outcome(statuses: list[str], promotion: Promotion | None) -> str:
    """The flow run's final message: what ran, and what became of the new version."""
    ran, restored = statuses.count("ran"), statuses.count("restored")
    cached = "restored from DVC's run-cache"
    if ran:
        said = f"{ran} of {len(statuses)} stages ran" + (f", {restored} {cached}" if restored else "")
    elif restored:
        said = f"{restored} of {len(statuses)} stages {cached}"
    else:
        said = "pipeline up to date: no stage ran"
    return f"{said}; {promotion.headline()}" if promotion is not None else said


def report(reports: Path, experiment_name: str, key: str, ran: set[str], promotion: Promotion | None) -> None:
    """The artifacts and event of a flow run whose stages `ran` under MLflow execution
    `key`, with the `promotion` its promote stage decided (if it ran); a failure to publish
    them is said and logged, and fails nothing (the stages' outputs and MLflow runs are
    what counts)."""
    from prefect.runtime import flow_run

    if not ran:
        return
    try:
        experiment, parent = runs.parent_of(experiment_name, key)
        publish(reports, ran, experiment, parent, str(flow_run.get_id()), promotion)
    except Exception as err:  # noqa: BLE001 - reported, and the run's work stands
        logging.getLogger(__name__).warning("publishing to Prefect failed", exc_info=True)
        console.get().line(f"note: the run's Prefect artifacts were not published ({type(err).__name__}: {err})")


def publish(
    reports: Path,
    ran: set[str],
    experiment: str | None,
    parent_run: str | None,
    flow_run_id: str,
    promotion: Promotion | None,
) -> None:
    """Artifacts and an event for what this flow run's stages (`ran`) decided."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    base = ui_base()
    if experiment and parent_run:
        create_link_artifact(
            f"{base}/#/experiments/{experiment}/runs/{parent_run}",
            link_text="MLflow run of this pipeline",
            key="kiln-mlflow-run",
            description="Every stage's params, metrics and artifacts (a local store: open `kiln ui` first).",
        )
    if ran & {"select", "evaluate"} and (reports / "selection.json").is_file():
        selection = Selection.read(reports / "selection.json", "kiln run", "select")
        found = reports / "evaluation.json"
        evaluation = Evaluation.read(found, "kiln run", "evaluate") if found.is_file() else None
        create_table_artifact(
            candidates(selection, evaluation),
            key="kiln-candidates",
            description=f"Each candidate on val and test; selected: {selection.selected}.",
        )
    if promotion is not None:
        create_markdown_artifact(decision(promotion), key="kiln-promotion", description=promotion.headline())
        name, version = promotion.model_name, promotion.version
        create_link_artifact(
            f"{base}/#/models/{name}/versions/{version}",
            link_text=f"{name} version {version}",
            key="kiln-model-version",
        )
        if not promotion.already:
            _emit(promotion, flow_run_id)


def _emit(promotion: Promotion, flow_run_id: str) -> None:
    from prefect.events import emit_event

    name, version = promotion.model_name, promotion.version
    emit_event(
        event=f"kiln.model.{'promoted' if promotion.promoted else 'refused'}",
        resource={
            "prefect.resource.id": f"kiln.model.{name}.{version}",
            "prefect.resource.name": f"{name} version {version}",
            "kiln.model.name": name,
            "kiln.model.version": version,
        },
        related=[{"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}],
        payload={"champion": promotion.champion, "reasons": promotion.reasons, "headline": promotion.headline()},
    )
