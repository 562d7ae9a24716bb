"""Trigger the `retrain` deployment N times at once and wait for every run to end.

Run as a script with PREFECT_API_URL set (the tests keep Prefect's settings out of the
pytest process); prints one JSON list of {id, state, message}.
"""

import json
import sys
import time

from prefect import get_client
from prefect.deployments import run_deployment

NAME = "kiln-retrain/retrain"


def main(count: int, timeout: float) -> None:
    runs = [run_deployment(NAME, timeout=0) for _ in range(count)]
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            states = [client.read_flow_run(run.id).state for run in runs]
            if all(s is not None and s.is_final() for s in states) or time.monotonic() > deadline:
                break
            time.sleep(2)
    print(
        json.dumps(
            [
                {"id": str(run.id), "state": s.type.value if s else None, "message": s.message if s else None}
                for run, s in zip(runs, states)
            ]
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
