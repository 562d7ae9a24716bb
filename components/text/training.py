"""One way to build a Lightning Trainer for every training stage, and resumable fits.

Hardware comes from params (`accelerator`, `devices`, `strategy`, `precision`,
`num_nodes`), so the same stage runs on this CPU, on a GPU, or with DDP or FSDP over
several nodes without a code change. Loggers are injected by the caller.
"""

import shutil
import sys
import time
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from components.text.config import HardwareConfig, LoopConfig


class LineProgress(Callback):
    """One line every `every` steps, for logs that are not a terminal (CI, schedulers)."""

    def __init__(self, name: str, every: int):
        self.name = name
        self.every = every
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        step = trainer.global_step
        if step % self.every or not trainer.is_global_zero:
            return
        total = trainer.max_steps if trainer.max_steps > 0 else int(trainer.estimated_stepping_batches)
        metrics = " ".join(f"{k}={float(v):.4f}" for k, v in sorted(trainer.callback_metrics.items()))
        print(f"{self.name}: step {step}/{total} {metrics} ({time.perf_counter() - self.start:.0f} s)", flush=True)


def build_trainer(
    name: str,
    hardware: HardwareConfig,
    loop: LoopConfig,
    checkpoints: Path,
    loggers: list,
    monitor: str | None = None,
    mode: Literal["min", "max"] = "max",
    patience: int | None = None,
) -> L.Trainer:
    """A Trainer that saves a resumable `last.ckpt` every `checkpoint_every` steps
    (Lightning writes checkpoints atomically) and, with `monitor`, the best one."""
    interactive = sys.stderr.isatty()
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=checkpoints, filename="step", save_last=True, save_top_k=0,
                        every_n_train_steps=loop.checkpoint_every),
    ]
    if monitor:
        callbacks.append(ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=monitor, mode=mode,
                                         save_top_k=1, enable_version_counter=False))
        if patience is not None:
            callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    if not interactive:
        callbacks.append(LineProgress(name, loop.log_every))
    return L.Trainer(
        accelerator=hardware.accelerator,
        devices=hardware.devices,
        strategy=hardware.strategy,
        precision=hardware.precision,
        num_nodes=hardware.num_nodes,
        max_epochs=loop.max_epochs,
        max_steps=loop.max_steps,
        val_check_interval=loop.val_every_steps or 1.0,
        check_val_every_n_epoch=None if loop.val_every_steps else 1,
        log_every_n_steps=loop.log_every,
        logger=loggers or False,
        callbacks=callbacks,
        enable_progress_bar=interactive,
        enable_model_summary=False,
        default_root_dir=str(checkpoints),
        num_sanity_val_steps=0,
    )


def resume_point(checkpoints: Path, fingerprint: str) -> Path | None:
    """`last.ckpt` if it belongs to a run of the same inputs and config, else None after
    clearing the folder: a checkpoint of other data or params must never be resumed."""
    stamp = checkpoints / "fingerprint"
    last = checkpoints / "last.ckpt"
    if stamp.is_file() and stamp.read_text() == fingerprint and last.is_file():
        return last
    if checkpoints.exists():
        shutil.rmtree(checkpoints)
    checkpoints.mkdir(parents=True)
    stamp.write_text(fingerprint)
    return None


def finish(checkpoints: Path) -> None:
    """Drop a finished stage's checkpoints: its outputs are now in DVC's cache."""
    shutil.rmtree(checkpoints, ignore_errors=True)


def best_state(trainer: L.Trainer) -> dict[str, Any] | None:
    """The monitored best checkpoint's weights, if one was kept."""
    import torch

    for callback in trainer.checkpoint_callbacks:
        if callback.monitor and callback.best_model_path:
            return torch.load(callback.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
    return None
