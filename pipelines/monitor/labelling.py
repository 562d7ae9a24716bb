"""`kiln label export` and `kiln label import`: the queue of logged texts worth labelling
(components/monitor/labelling.py) written for the team, and its labels turned into a batch
of the incoming folder, which the next `kiln retrain` checks and learns like any other.

An export is a folder of its own under `label.dir`: queue.csv (to label in a spreadsheet:
fill in `label`), tasks.json and label_config.xml (Label Studio's import and labelling
interface) and export.json, the manifest that keeps each id's text. An import takes the
texts from the manifest, never from the labelled file, so a label can only ever attach
to a text the export handed out; its provenance (export, who labelled, who imported,
when) is an entry of the audit trail.
"""

import hashlib
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from components.errors import KilnError
from components.monitor import inference, labelling
from pipelines.core.io import atomic
from pipelines.core.params import Params
from pipelines.registry import audit, models

MANIFEST = "export.json"
# An imported queue's batch file is named PREFIX + its export id.
PREFIX = "labelled-"
EXPORT_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def _known_texts(root: Path, params: Params) -> list[str]:
    """Texts never to queue: every split's, and every earlier export's."""
    texts: list[str] = []
    for split in sorted((root / params.paths.split).glob("*.parquet")):
        texts += pd.read_parquet(split, columns=["text"])["text"].astype(str).tolist()
    for manifest in sorted((root / params.label.dir).glob(f"*/{MANIFEST}")):
        texts += [item["text"] for item in json.loads(manifest.read_text(encoding="utf-8"))["items"]]
    return texts


def _champion(root: Path, name: str, command: str):
    """(version, loaded MLflow model) of the champion, checked to be Kiln's own."""
    import mlflow

    from pipelines.core.env import tracking_uri
    from pipelines.registry import local_model, lookup, versions
    from pipelines.tracking import runs

    with models.registry_errors(f"{command}: loading the champion of '{name}'"):
        found = lookup.resolve(runs.client(), None, name, command)
        folder = local_model.version_folder(root, tracking_uri(), found.name, str(found.version))
        return found, mlflow.pyfunc.load_model(str(versions.fetch(found, folder, command)))


def _probabilities(model, texts: list[str]) -> tuple[list[str], np.ndarray]:
    from components.runtime.session import MAX_BATCH

    parts = [model.predict(pd.DataFrame({"text": texts[i : i + MAX_BATCH]})) for i in range(0, len(texts), MAX_BATCH)]
    out = pd.concat(parts, ignore_index=True)
    labels = [c for c in out.columns if c not in ("label", "attributions")]
    return labels, out[labels].to_numpy(float)


def export(root: Path, params: Params, n: int | None) -> tuple[Path, pd.DataFrame]:
    """Write a queue of at most `n` (default label.n) logged texts; (its folder, the queue)."""
    cfg, name = params.label, params.register_.name_for(params.ingest)
    n = n or cfg.n
    now = datetime.now(UTC)
    since = now - timedelta(days=cfg.window_days)
    log_dir = root / params.serve.log_dir
    traffic = inference.read(log_dir, since=since)
    if traffic.empty:
        raise KilnError(
            f"label export: no logged traffic in {params.serve.log_dir} since {since:%Y-%m-%d %H:%M} UTC "
            f"(label.window_days: {cfg.window_days}); serve the champion with `kiln serve-model` first"
        )
    if traffic["text"].isna().all():
        raise KilnError(
            f"label export: the inference log keeps no texts (serve.log_text is {params.serve.log_text}): "
            f"set it to masked to label what the model is asked"
        )
    pool = labelling.candidates(traffic["text"], _known_texts(root, params))
    if pool.empty:
        raise KilnError(f"label export: every logged text since {since:%Y-%m-%d} is in a split or an earlier export")
    found, model = _champion(root, name, "label export")
    labels, probabilities = _probabilities(model, pool["text"].tolist())
    queue = labelling.choose(pool, probabilities, labels, n, cfg.clusters, cfg.seed)
    export_id = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    queue.insert(0, "id", [f"{export_id}-{i:04d}" for i in range(1, len(queue) + 1)])
    queue["label"] = ""
    version = f"{name} v{found.version}"
    manifest = {
        "export": export_id,
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "by": models.who(),
        "model": name,
        "version": str(found.version),
        "labels": labels,
        "window": {"since": since.isoformat(), "until": now.isoformat(), "logged_texts": len(traffic)},
        "items": [{"id": row.id, "text": row.text, "guess": row.guess} for row in queue.itertuples()],
    }
    target = root / cfg.dir / export_id
    with atomic(target) as tmp:
        tmp.mkdir()
        columns = ["id", "text", "guess", "confidence", "margin", "entropy", "cluster", "asked", "label"]
        queue[columns].to_csv(tmp / "queue.csv", index=False, float_format="%.4f")
        tasks = labelling.label_studio_tasks(queue, version)
        (tmp / "tasks.json").write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
        (tmp / "label_config.xml").write_text(labelling.label_studio_config(labels), encoding="utf-8")
        (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    return target, queue


def _manifest(root: Path, params: Params, ids: pd.Series, path: Path) -> dict:
    """The manifest of the one export the ids of a labelled file come from."""
    exports = {i.rsplit("-", 1)[0] for i in ids if EXPORT_ID.fullmatch(i.rsplit("-", 1)[0])}
    if len(exports) != 1:
        raise KilnError(
            f"{path}: its ids must come from one `kiln label export`, found {', '.join(sorted(exports)[:3]) or 'none'}"
        )
    export_id = exports.pop()
    file = root / params.label.dir / export_id / MANIFEST
    if not file.is_file():
        raise KilnError(f"{path}: export {export_id} is not in {params.label.dir} (was it made in this repository?)")
    return json.loads(file.read_text(encoding="utf-8"))


def import_labels(root: Path, params: Params, path: Path, by: str | None) -> tuple[Path, int, int]:
    """Turn a labelled queue into a batch of the incoming folder and record its provenance;
    (the batch file, rows labelled, rows left unlabelled)."""
    labelled = labelling.read_labels(path)
    manifest = _manifest(root, params, labelled["id"], path)
    exported = {item["id"]: item["text"] for item in manifest["items"]}
    known = set(manifest["labels"]) | set(params.validate_.labels)
    done = labelling.check_labels(labelled, exported, known, path)
    incoming, file_cfg = params.ingest.incoming, params.ingest.file
    name = f"{PREFIX}{manifest['export']}.csv"
    for folder in (incoming.dir, incoming.processed_dir):
        if (root / folder / name).exists():
            raise KilnError(f"{path}: export {manifest['export']} was imported already ({folder}/{name})")
    batch = pd.DataFrame(
        {file_cfg.text_column: [exported[i] for i in done["id"]], file_cfg.label_column: done["label"]}
    )
    if file_cfg.id_column:
        batch.insert(0, file_cfg.id_column, done["id"])
    target = root / incoming.dir / name
    with atomic(target) as tmp:
        batch.to_csv(tmp, index=False, encoding=file_cfg.encoding)
    labellers = sorted({b for b in done["labelled_by"] if b}) or [by or models.who()]
    from pipelines.tracking import runs

    audit.record(
        root,
        runs.client(),
        "labels-imported",
        manifest["model"],
        manifest["version"],
        data=f"sha256:{hashlib.sha256(target.read_bytes()).hexdigest()}",
        export=manifest["export"],
        exported=manifest["created"],
        exported_by=manifest["by"],
        labelled_by=by or ", ".join(labellers),
        source=path.name,
        file=str(target.relative_to(root)),
        rows=len(done),
        unlabelled=len(labelled) - len(done),
        imported=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return target, len(done), len(labelled) - len(done)
