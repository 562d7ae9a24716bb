"""The contract between the executor and a stage adapter.

An adapter is `run(ctx: StageContext) -> StageResult`: it reads the params sections its
stage lists in dvc.yaml, calls components, writes its outputs and returns its metrics.
What it may read, and who makes each of its inputs, come from DVC's graph: a stage that
reads a params section dvc.yaml does not list for it fails at once, since DVC would not
rerun it when that section changes.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.errors import KilnError
from pipelines.core.io import read_parquet
from pipelines.core.params import Params, section_name

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.tracking.stagerun import StageRun


@dataclass
class StageResult:
    metrics: dict[str, float]
    # Files or folders to log as MLflow artifacts, by artifact folder.
    artifacts: dict[str, Path] = field(default_factory=dict)
    # What a person should read about the outcome, beside the metrics (the gate's decision).
    summary: list[str] = field(default_factory=list)


class StageParams:
    """The params a stage may read: its own sections (as dvc.yaml lists them) and `paths`,
    which dvc.yaml interpolates into every stage's deps and outs."""

    def __init__(self, params: Params, stage: str, sections: tuple[str, ...]):
        self._params, self._stage = params, stage
        self._allowed = {"paths"} | {key.split(".")[0] for key in sections}

    def __getattr__(self, attribute: str) -> Any:
        name = section_name(attribute)
        if name not in self._allowed:
            raise KilnError(
                f"stage '{self._stage}' reads params section '{name}', which dvc.yaml does not list "
                f"under its params (it lists: {', '.join(sorted(self._allowed - {'paths'}))})"
            )
        return self._params.section(name)

    def section(self, name: str) -> Any:
        return getattr(self, name)


@dataclass
class StageContext:
    name: str
    root: Path
    params: StageParams
    # The params keys this stage lists in dvc.yaml (a section, or section.key).
    sections: tuple[str, ...]
    run: "StageRun"
    # DVC's hash of each input file or folder, by path.
    deps: dict[str, str] = field(default_factory=dict)
    # Every output of the DAG and the stage that makes it.
    producers: dict[str, str] = field(default_factory=dict)
    # 0 in the process that writes outputs and logs; > 0 in the extra processes of a
    # distributed strategy, which only train.
    rank: int = 0
    # (commit, dirty) of the code and params the stage runs, outputs excluded.
    git: tuple[str, bool] = ("unknown", False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def path(self, relative: str) -> Path:
        return self.root / relative

    def maker(self, relative: str) -> str:
        from pipelines.core.dag import producer_of

        return producer_of(relative, self.producers) or "an earlier"

    def missing(self, relative: str, what: str = "") -> KilnError:
        """The one way a stage says an input is missing, naming the stage that makes it."""
        maker = self.maker(relative)
        thing = f"{what} {relative}" if what else relative
        return KilnError(f"{self.name}: {thing} is missing; the {maker} stage makes it (kiln run {maker})")

    def input(self, relative: str, what: str = "") -> Path:
        """An input file or folder, or the error naming the stage that makes it."""
        path = self.path(relative)
        if not path.exists():
            raise self.missing(relative, what)
        return path

    def read_split(self, *names: str) -> dict[str, "pd.DataFrame"]:
        """Frames of the split stage by name: train, val and test unless `names` says."""
        folder = self.params.paths.split
        return {name: self.read(f"{folder}/{name}.parquet") for name in names or ("train", "val", "test")}

    def read(self, relative: str) -> "pd.DataFrame":
        return read_parquet(self.input(relative), self.name, self.maker(relative))

    def section_params(self) -> dict[str, Any]:
        """Every params section this stage reads, as MLflow params."""
        out: dict[str, Any] = {}
        for key in self.sections:
            head, *rest = key.split(".")
            value = self.params.section(head).model_dump(mode="json")
            for part in rest:
                value = value[part]
            out[key] = value
        return out
