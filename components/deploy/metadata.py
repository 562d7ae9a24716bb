"""An exported model file describes itself: its ONNX metadata carries the label map, the
token limit, its family and whatever lineage the caller stamps on it (git commit, data
hashes, gate measurements), so a runtime needs only the file (and a tokenizer for the
transformer family). Only `onnx` is imported here: serving never needs torch."""

import json
from pathlib import Path
from typing import Any, Literal

import onnx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.deploy.records import QuantizeReport
from components.errors import KilnError

# Where quantize's verdict travels inside the INT8 file.
QUANTIZE_KEY = "kiln.quantize"


class SearchTrial(BaseModel):
    """The search trial that made a file, and the point of the space it sampled."""

    model_config = ConfigDict(extra="forbid")

    trial: int
    params: dict[str, Any]


class OnnxMetadata(BaseModel):
    """What a transformer's ONNX file says of itself, under the same keys whoever wrote it
    (the export stage, quantize, a search trial). Runtimes read `labels` and `max_length`,
    select and register read quantize's report; the rest is lineage. Only what a runtime
    needs is required, so the files of older runs, and of tests, read as records too."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str | None = Field(None, alias="kiln.model")  # the candidate: pruned, teacher, search_<trial>
    labels: dict[str, int]  # label -> output index
    max_length: int  # tokens per text the model reads
    config: dict[str, Any] = {}  # the encoder's sizes, and a pruned model's layer shapes
    made_by: str | None = None  # the stage that made the PyTorch model
    git_commit: str | None = None
    git_dirty: bool | None = None
    data: dict[str, str] | None = None  # DVC's hash of each data input
    search: SearchTrial | None = None
    quantization: Literal["dynamic", "static"] | None = None  # an INT8 file's mode
    quantize: QuantizeReport | None = Field(None, alias=QUANTIZE_KEY)

    @property
    def label_list(self) -> list[str]:
        return [label for label, _ in sorted(self.labels.items(), key=lambda item: item[1])]

    def stamp(self, path: Path) -> None:
        stamp(path, self.model_dump(mode="json", by_alias=True))

    @classmethod
    def read(cls, path: Path) -> "OnnxMetadata":
        try:
            return cls.model_validate(read_metadata(path))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise KilnError(
                f"ONNX model {path} lacks Kiln's metadata ({where}: {first['msg']}); export it with Kiln"
            ) from None


def stamp(path: Path, metadata: dict[str, object]) -> None:
    """Write `metadata` (values JSON-encoded) into the file's metadata_props."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))


def read_metadata(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise KilnError(f"ONNX model {path} is missing")
    try:
        model = onnx.load(str(path), load_external_data=False)
        return {p.key: json.loads(p.value) for p in model.metadata_props}
    except Exception as err:  # protobuf's DecodeError, json errors, ...
        raise KilnError(f"ONNX model {path} is corrupt ({err.__class__.__name__}: {err})") from None
