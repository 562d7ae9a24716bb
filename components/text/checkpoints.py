"""Training checkpoints on disk: written whole or not at all, and read back as weights
only, so a crash or a full disk never leaves a half-written one and a checkpoint file is
never unpickled."""

import os
import pickle
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from components.errors import KilnError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all, and loaded as weights only.

    Lightning stages a checkpoint in the system's temporary folder and moves it over, which
    across file systems is a copy that a crash or a full disk cuts short. Here it is written
    beside its target, flushed to disk, and renamed."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        out = None
        try:
            with open(tmp, "wb") as raw:
                out = _Writes(raw)
                torch.save(checkpoint, out)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, target)
        except (OSError, RuntimeError) as err:
            tmp.unlink(missing_ok=True)
            # torch's zip writer may report a failed write only as a position mismatch.
            cause = out.error if out is not None and out.error is not None else err
            raise KilnError(f"cannot write checkpoint {target}: {_reason(cause)}") from None

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class _Writes:
    """A file for torch.save that remembers the operating system's error of a failed write,
    which torch's zip writer replaces with its own."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.raw.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        try:
            self.raw.flush()
        except OSError as err:
            self.error = self.error or err
            raise


def _reason(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err).strip().splitlines()[-1][:200]


def load_reason(err: Exception) -> str:
    """Why a checkpoint did not load, in a few words: torch's messages run to paragraphs."""
    if isinstance(err, pickle.UnpicklingError):
        return "it holds objects other than tensors, never unpickled"
    return _reason(err).split(". ")[0]


def move_aside(checkpoint: Path) -> Path:
    """Rename an unusable checkpoint out of Lightning's way, kept for a look."""
    aside = checkpoint.with_name(f"{checkpoint.name}.unusable-{time.strftime('%Y%m%dT%H%M%S')}")
    checkpoint.rename(aside)
    return aside


def recorded_best(state: Any) -> list[Path]:
    """The best checkpoints a Lightning checkpoint's monitoring ModelCheckpoints record:
    restored on resume, they are what `best_state` reads unless the fit finds a better one."""
    callbacks = state.get("callbacks", {}) if isinstance(state, dict) else {}
    return [
        Path(kept["best_model_path"])
        for kept in callbacks.values()
        if isinstance(kept, dict) and kept.get("monitor") and kept.get("best_model_path")
    ]


def read_weights(checkpoint: Path | str) -> dict[str, Any]:
    """A Lightning checkpoint's model weights, read as weights only."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ValueError("it holds no model weights")
    return state["state_dict"]
