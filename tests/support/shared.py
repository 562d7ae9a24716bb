"""Small helpers that test modules of more than one tier or package share."""

import math
import socket

from components.audit import chain


def free_port() -> int:
    """A TCP port nothing listens on now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wrapped(inner: BaseException) -> BaseException:
    """`inner` as Prefect and DVC hand it on: the cause of the error that stopped a stage."""
    try:
        try:
            raise inner
        except BaseException as err:
            raise RuntimeError("failed to reproduce 'ingest'") from err
    except RuntimeError as outer:
        return outer


def weighted_ce(logits, labels: list[int], weight: list[float]) -> float:
    """sum_i w[y_i] * -log softmax(z_i)[y_i] / sum_i w[y_i], by hand."""
    total = norm = 0.0
    for row, y in zip(logits.tolist(), labels):
        log_z = math.log(sum(math.exp(v) for v in row))
        total += weight[y] * (log_z - row[y])
        norm += weight[y]
    return total / norm


def rechain(entries: list[dict], log: str) -> list[dict]:
    """The entries' contents as a fresh chain under another log id."""
    fresh: list[dict] = []
    for entry in entries:
        fields = {k: v for k, v in entry.items() if k not in ("seq", "prev", "hash")} | {"log": log}
        fresh.append(chain(fresh[-1] if fresh else None, fields))
    return fresh
