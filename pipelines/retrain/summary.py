"""The summary of a retrain: what came in, what the checks found, what ran, what the gate
decided. Published as a Prefect markdown artifact and as files of the run's MLflow run."""

from pydantic import BaseModel, ConfigDict

from components.data.batches import BatchOutcome
from pipelines.core.records import Promotion


class StageLine(BaseModel):
    name: str
    status: str
    seconds: float


class Summary(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    started: str
    batches: list[BatchOutcome] = []
    reference: str = ""
    stages: list[StageLine] = []
    promotion: Promotion | None = None
    dvc: list[str] = []
    outcome: str = ""
    error: str | None = None

    def markdown(self) -> str:
        lines = [f"# Kiln retrain, {self.started}", "", f"**{self.outcome}**", ""]
        if self.error:
            lines += ["```", self.error, "```", ""]
        lines += ["## New data", ""]
        if self.batches:
            lines += ["| batch | rows | new rows | result | reasons |", "| --- | ---: | ---: | --- | --- |"]
            lines += [
                f"| {b.batch} | {b.rows} | {b.new_rows} | {'accepted' if b.accepted else 'quarantined'} "
                f"| {'; '.join(b.reasons).replace('|', '/') or '-'} |"
                for b in self.batches
            ]
        else:
            lines.append("No new batches.")
        lines += ["", "## Validation and drift", "", f"Reference: {self.reference}", ""]
        for b in self.batches:
            if b.drift is not None and b.drift.skipped:
                lines.append(f"- {b.batch}: drift skipped: {b.drift.skipped}")
            elif b.drift is not None:
                lines.append(
                    f"- {b.batch}: " + "; ".join(f"{'pass' if c.passed else 'FAIL'} {c.detail}" for c in b.drift.checks)
                )
        if self.stages:
            lines += ["", "## Pipeline", "", "| stage | status | seconds |", "| --- | --- | ---: |"]
            lines += [f"| {r.name} | {r.status} | {r.seconds:.1f} |" for r in self.stages]
        if self.promotion:
            lines += self._models(self.promotion)
        if self.dvc:
            lines += ["", "## DVC", ""] + [f"- {line}" for line in self.dvc]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _models(p: Promotion) -> list[str]:
        lines = ["", "## Models", "", f"| metric | challenger v{p.version} | champion |", "| --- | ---: | ---: |"]
        for key in sorted(k.split("/", 1)[1] for k in p.metrics if k.startswith("challenger/")):
            theirs = p.metrics.get(f"champion/{key}")
            lines.append(
                f"| {key} | {p.metrics[f'challenger/{key}']:.4g} | {'-' if theirs is None else f'{theirs:.4g}'} |"
            )
        return lines + ["", "## Decision", "", p.headline() + ".", ""] + [f"- {reason}" for reason in p.reasons]

    def as_dict(self) -> dict:
        return {"markdown": self.markdown(), **self.model_dump(mode="json")}
