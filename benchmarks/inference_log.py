"""What the inference log costs a served request: batch-1 latency of `kiln serve-model`
with the log (params.yaml's `serve`: texts masked by ingest's recognizers, batches
written by the server's own thread) against `kiln serve-model --no-log`, on this
repository's champion (run `make run` first).

Both servers run side by side on the same champion, and the requests take turns in
blocks (log, no log, no log, log, ...), so a busy moment of the machine falls on both
alike; each request is one test text, timed from the client (round trip). It prints the
p50, p95 and p99 of each and the ratios, and how many texts the log wrote. The log's
files from this run (named with the server's process id) are deleted afterwards, so the
benchmark leaves no traffic in data/inference.

    .venv/bin/python benchmarks/inference_log.py
    .venv/bin/python benchmarks/inference_log.py --requests 4000 --block 100
"""

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
KILN = Path(sys.executable).parent / "kiln"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(logged: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [str(KILN), "serve-model", "--port", str(port), *([] if logged else ["--no-log"])]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
            return server, port
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"kiln serve-model did not start:\n{server.stdout.read().decode()}")
            time.sleep(0.5)


def timed(port: int, text: str) -> float:
    body = json.dumps({"dataframe_records": [{"text": text}]}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
    return (time.perf_counter() - began) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests to each server")
    parser.add_argument("--block", type=int, default=50, help="requests in a row to one server")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests to each server first")
    args = parser.parse_args()

    from pipelines.core.params import load

    params = load(ROOT / "params.yaml")
    texts = pd.read_parquet(ROOT / params.paths.split / "test.parquet")["text"].tolist()
    servers = {"log": start(True), "no log": start(False)}
    latencies: dict[str, list[float]] = {arm: [] for arm in servers}
    try:
        for _, port in servers.values():
            for i in range(args.warmup):
                timed(port, texts[i % len(texts)])
        order = list(servers)
        sent = 0
        while sent < args.requests:
            for arm in order:
                port = servers[arm][1]
                for i in range(sent, min(sent + args.block, args.requests)):
                    latencies[arm].append(timed(port, texts[i % len(texts)]))
            sent += args.block
            order.reverse()
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=60)
    pid = servers["log"][0].pid
    files = sorted((ROOT / params.serve.log_dir).glob(f"*/*-{pid}-*.parquet"))
    written = sum(len(pd.read_parquet(f)) for f in files)
    for file in files:
        file.unlink()

    print(f"{args.requests} single-text requests to each server, in alternating blocks of {args.block}")
    print(f"log: serve.log_text {params.serve.log_text}, flush every {params.serve.flush_rows} texts or ")
    print(f"{params.serve.flush_s:g} s; it wrote {written} texts ({len(files)} files, deleted now)\n")
    print("| server | p50 ms | p95 ms | p99 ms | mean ms |")
    print("|---|---|---|---|---|")
    figures = {}
    for arm, values in latencies.items():
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        figures[arm] = (p50, p95, p99)
        print(f"| {arm} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {np.mean(values):.2f} |")
    ratio = [figures["log"][i] / figures["no log"][i] for i in range(3)]
    print(f"\nwith log / without: p50 {ratio[0]:.3f}, p95 {ratio[1]:.3f}, p99 {ratio[2]:.3f}")


if __name__ == "__main__":
    main()
