"""params.yaml as typed, validated config: one model per section, unknown keys refused.
params.yaml alone writes the knobs' values: the models have no defaults (the few kept for
readers without params.yaml agree with it, tests/unit/pipelines/test_core_params.py), so
a key left out is an error that names it."""

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.classical.config import ClassicalConfig
from components.data.augment import AugmentConfig
from components.data.drift import DriftConfig
from components.data.sources import IngestConfig, UnlabeledConfig
from components.data.split import SplitConfig
from components.data.validation import ValidateConfig
from components.deploy.config import EvaluateConfig, ExportConfig, GateConfig, QuantizeConfig, SelectConfig
from components.errors import KilnError
from components.explain.config import ExplainConfig
from components.monitor.config import LabelConfig, MonitorConfig, ServeConfig
from components.search.config import SearchConfig
from components.text.config import EncoderConfig, HardwareConfig
from components.text.sections import DistillConfig, FinetuneConfig, PretrainConfig, PruneConfig
from components.text.tokenizer import TokenizeConfig

# Sections whose names pydantic reserves: their fields carry a trailing underscore.
_SHADOWED = {"validate", "register"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PathsConfig(_Section):
    """Where stages write; dvc.yaml reads these same keys (`${paths.raw}`), so a path is
    written once."""

    raw: str
    validated: str
    quarantine: str
    split: str
    unlabeled: str  # distill's transfer set, apart from every split
    augmented: str
    tokenizer: str
    encoder: str
    teacher: str
    student: str
    pruned: str
    onnx: str
    quantized: str
    classical: str  # model.onnx and grid.json of the classical family
    search: str  # the search's Pareto front: front.json and a folder per model
    reports: str

    def onnx_tokenizer(self, model: str) -> str:
        """The tokenizer file an exported model reads: the pruned student's (the model Kiln
        ships) is the folder's tokenizer.json; the teacher's is its own, since a teacher
        from a pretrained checkpoint has another vocabulary."""
        return f"{self.onnx}/tokenizer.json" if model == "pruned" else f"{self.onnx}/{model}.tokenizer.json"


class TrackingConfig(_Section):
    experiment: str = Field(min_length=1)


class RegisterConfig(_Section):
    model_name: str | None = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="registered model in the MLflow registry; null: kiln-<dataset>",
    )

    def name_for(self, ingest: IngestConfig) -> str:
        """The registered model's name: as set, or named after the dataset (kiln-bbc-news,
        kiln-reviews for data/external/reviews.csv)."""
        return self.model_name or f"kiln-{ingest.dataset}"


class OrchestrationConfig(_Section):
    retries: int = Field(ge=0, le=10, description="retries of a stage that failed for a transient reason")
    retry_delay_s: float = Field(ge=0)


class NotifyConfig(_Section):
    """Where the retrain flow reports a failure or a quarantined batch, through Prefect."""

    apprise_url: str | None = Field(description="an Apprise URL: slack://..., json://host/path, mailto://...")
    block: str | None = Field(
        pattern=r"^[a-z0-9-]+/[A-Za-z0-9_-]+$",
        description="a saved Prefect notification block, as <block-type>/<name>",
    )

    @model_validator(mode="after")
    def _one(self) -> "NotifyConfig":
        if self.apprise_url and self.block:
            raise ValueError("set apprise_url or block, not both")
        return self


def _cron(expression: str) -> None:
    from datetime import datetime

    from cronsim import CronSim, CronSimError

    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as err:
        raise ValueError(f"cron '{expression}' is not a valid cron expression ({err})") from None


class RetrainConfig(_Section):
    cron: str = Field(description="when the `retrain` deployment runs (cron, in `timezone`)")
    timezone: str
    drift: DriftConfig
    notify: NotifyConfig

    @model_validator(mode="after")
    def _schedule(self) -> "RetrainConfig":
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        _cron(self.cron)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone '{self.timezone}' is not an IANA time zone") from None
        return self


class Params(_Section):
    # `validate` and `register` would shadow BaseModel attributes, hence the aliases.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    paths: PathsConfig
    tracking: TrackingConfig
    orchestration: OrchestrationConfig
    ingest: IngestConfig
    validate_: ValidateConfig = Field(alias="validate")
    split: SplitConfig
    unlabeled: UnlabeledConfig
    augment: AugmentConfig
    tokenize: TokenizeConfig
    hardware: HardwareConfig
    encoder: EncoderConfig
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    distill: DistillConfig
    prune: PruneConfig
    export: ExportConfig
    quantize: QuantizeConfig
    classical: ClassicalConfig
    search: SearchConfig
    select: SelectConfig
    evaluate: EvaluateConfig
    explain: ExplainConfig
    register_: RegisterConfig = Field(alias="register")
    promote: GateConfig
    retrain: RetrainConfig
    serve: ServeConfig
    monitor: MonitorConfig
    label: LabelConfig

    @model_validator(mode="after")
    def _monitor_schedule(self) -> "Params":
        try:
            _cron(self.monitor.cron)
        except ValueError as err:
            raise ValueError(f"monitor.{err}") from None
        return self

    @model_validator(mode="after")
    def _student_smaller(self) -> "Params":
        student, teacher = self.distill.student, self.encoder
        if not (student.layers < teacher.layers and student.hidden < teacher.hidden):
            raise ValueError(
                f"distill.student ({student.layers} layers, {student.hidden} wide) must have fewer layers and "
                f"a narrower hidden size than encoder ({teacher.layers} layers, {teacher.hidden} wide)"
            )
        return self

    def section(self, name: str) -> BaseModel:
        return getattr(self, f"{name}_" if name in _SHADOWED else name)


def section_name(attribute: str) -> str:
    """The params.yaml name of a `Params` attribute: `validate_` is `validate`."""
    bare = attribute.removesuffix("_")
    return bare if bare in _SHADOWED else attribute


def _location(loc: tuple) -> str:
    return ".".join(
        str(part).removesuffix("_") if str(part).removesuffix("_") in _SHADOWED else str(part) for part in loc
    )


def parse(data: object, source: str) -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KilnError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = _location(e["loc"])
            if e["type"] == "extra_forbidden":
                what = "unknown key"
            elif e["type"] == "missing":
                what = "missing section" if len(e["loc"]) == 1 else "missing key"
            elif e["type"] == "value_error":
                what = str(e["ctx"]["error"])  # our own checks word their message fully
            else:
                what = e["msg"]
            lines.append(f"  {where}: {what}" if where else f"  {what}")
        # One mistake is one line; several, one line each under the heading.
        if len(lines) == 1:
            raise KilnError(f"{source}: invalid params: {lines[0].strip()}") from None
        raise KilnError(f"{source}: invalid params:\n" + "\n".join(lines)) from None


def load(path: Path) -> Params:
    """Read and validate params.yaml; any problem is a KilnError naming the key."""
    try:
        # libyaml's loader where PyYAML has it: ten times the pure-Python one (every stage reads it).
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise KilnError(f"{path}: not found (Kiln runs from the repository root)") from None
    except yaml.YAMLError as err:
        raise KilnError(f"{path}: not valid YAML: {err}") from None
    return parse(data, str(path))
