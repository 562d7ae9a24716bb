"""`kiln serve-model`'s server: MLflow's scoring server (its FastAPI app: /invocations,
/ping, /health, /version) around a registered version, each request recorded in the
inference log (components/monitor/inference.py) unless `--no-log`.

The log wraps the loaded model here, not inside the model's own code: a version
registered before the log existed is logged as well, and the model files stay the same
whichever way they are served.

Run as `python -m pipelines.servers.scoring FOLDER HOST PORT NAME VERSION [--no-log]`
from the repository (serve-model execs it after checking the version)."""

import sys
import time
from pathlib import Path

import pandas as pd

from components.monitor.inference import InferenceLog
from pipelines.core.params import Params


class Logged:
    """A loaded MLflow model as the scoring server calls it (`metadata`, `predict`), each
    answered request handed to `log`."""

    def __init__(self, model, log: InferenceLog):
        self._model, self._log = model, log
        self.metadata = model.metadata

    def predict(self, data, params: dict | None = None):
        start = time.perf_counter()
        out = self._model.predict(data, params=params)
        if isinstance(data, pd.DataFrame) and isinstance(out, pd.DataFrame):
            self._log.record(data["text"].tolist(), out, (time.perf_counter() - start) * 1000)
        return out


def inference_log(root: Path, params: Params, name: str, version: str) -> InferenceLog:
    """The log of params.yaml's `serve` section for version `version` of `name`; its
    texts masked by ingest's recognizers when `serve.log_text` is masked."""
    cfg = params.serve
    mask = None
    if cfg.log_text == "masked":
        from components.data.pii import masker

        mask = masker(params.ingest.pii)
    return InferenceLog(root / cfg.log_dir, name, version, cfg, mask)


def closing(app, log: InferenceLog):
    """`app` writing what `log` still holds when the server shuts down: in its lifespan,
    since uvicorn ends the process by the signal that stopped it, after the lifespan but
    before any code after `uvicorn.run`."""
    from contextlib import asynccontextmanager

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(served):
        async with inner(served) as state:
            yield state
        log.close()

    app.router.lifespan_context = lifespan
    return app


def main(argv: list[str]) -> None:
    import mlflow
    import uvicorn
    from mlflow.pyfunc import scoring_server

    from pipelines.core.env import find_root
    from pipelines.core.params import load

    folder, host, port, name, version = argv[:5]
    model = mlflow.pyfunc.load_model(folder)
    if "--no-log" in argv:
        app = scoring_server.init(model)
    else:
        root = find_root()
        log = inference_log(root, load(root / "params.yaml"), name, version)
        app = closing(scoring_server.init(Logged(model, log)), log)
    uvicorn.run(app, host=host, port=int(port), log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
