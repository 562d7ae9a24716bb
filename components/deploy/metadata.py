"""An exported model file describes itself: its ONNX metadata carries the label map, the
token limit, its family and whatever lineage the caller stamps on it (git commit, data
hashes, gate measurements), so a runtime needs only the file (and a tokenizer for the
transformer family). Only `onnx` is imported here: serving never needs torch."""

import json
from pathlib import Path

import onnx

from components.errors import KilnError


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
