"""One way to build a Lightning Trainer for every training stage, and resumable fits.

Hardware comes from params (`accelerator`, `devices`, `strategy`, `precision`,
`num_nodes`), so the same stage runs on this CPU, on a GPU, or with DDP or FSDP over
several nodes without a code change. Loggers and the progress report are injected by the
caller. Checkpoints are written and read as components.text.checkpoints says: whole or
not at all, and as weights only.
"""

import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint

from components.errors import KilnError
from components.text.checkpoints import AtomicCheckpointIO, load_reason, move_aside, read_weights, recorded_best
from components.text.config import HardwareConfig, LoopConfig
from components.text.data import Loading
from components.text.modules import LR_CURVE


class Trainer(L.Trainer):
    """Lightning's Trainer, except that a KeyboardInterrupt (Ctrl-C, or SIGTERM as the
    `kiln` command turns it) in fit, validate or test stays a KeyboardInterrupt: Lightning
    answers it with sys.exit(1), and a stopped command then ended as if it had failed,
    exit code 1 and no word said. So does an error raised while Lightning winds a stop
    down: a stop that lands inside the MLflow logger's SQLite write leaves the store
    locked, and the logger's closing write then fails."""

    def fit(self, *args: Any, **kwargs: Any) -> None:
        with _interruptible():
            return super().fit(*args, **kwargs)

    def validate(self, *args: Any, **kwargs: Any) -> Any:
        with _interruptible():
            return super().validate(*args, **kwargs)

    def test(self, *args: Any, **kwargs: Any) -> Any:
        with _interruptible():
            return super().test(*args, **kwargs)


@contextmanager
def _interruptible() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        raise
    except BaseException as ended:
        during = ended.__context__
        while during is not None and not isinstance(during, KeyboardInterrupt):
            during = during.__context__
        if during is not None:
            raise KeyboardInterrupt(*during.args) from None
        raise


class LineProgress(Callback):
    """A progress line every `every` steps, handed to `report` (print by default)."""

    def __init__(self, name: str, every: int, report: Callable[[str], None] | None = None):
        self.name = name
        self.every = every
        self.report = report or (lambda line: print(line, flush=True))
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        step = trainer.global_step
        if step % self.every or not trainer.is_global_zero:
            return
        total = trainer.max_steps if trainer.max_steps > 0 else int(trainer.estimated_stepping_batches)
        # The learning rate is a curve in MLflow; on the terminal it would read 0.0000.
        shown = {k: v for k, v in trainer.callback_metrics.items() if not k.startswith(LR_CURVE)}
        metrics = " ".join(f"{k}={float(v):.4f}" for k, v in sorted(shown.items()))
        self.report(f"{self.name}: step {step}/{total} {metrics} ({time.perf_counter() - self.start:.0f} s)")


def budgeted(loop: LoopConfig, rows: int) -> LoopConfig:
    """`loop` bounded for `rows` training rows (counted as on one device: under DDP the
    steps are not divided by the number of processes). Where `max_epochs` epochs make
    fewer than `min_steps` steps, as many more epochs as make them (early stopping and the
    best checkpoint still look at each epoch's end). Up to `full_epochs_rows` nothing else
    changes. Beyond, the steps are those of `max_epochs` epochs of
    `full_epochs_rows` rows times (rows / full_epochs_rows) ** `steps_growth`, so a fit
    on ten times the rows takes about twice as long (growth 1/3), not ten times; val then
    runs at `max_epochs` evenly spaced steps, so early stopping and the best checkpoint
    get as many checks as the epochs would have given."""
    epoch = math.ceil(rows / loop.batch_size)
    if epoch > 0 and loop.max_epochs * epoch < loop.min_steps:
        loop = loop.model_copy(update={"max_epochs": math.ceil(loop.min_steps / epoch)})
    limit = loop.full_epochs_rows
    if limit is None or rows <= limit:
        return loop
    growth = (rows / limit) ** loop.steps_growth
    steps = math.ceil(loop.max_epochs * math.ceil(limit / loop.batch_size) * growth)
    if loop.max_steps >= 0:  # -1: no limit; 0: no training (a checkpoint used as it is)
        steps = min(steps, loop.max_steps)
    every = loop.val_every_steps or max(1, math.ceil(steps / loop.max_epochs))
    return loop.model_copy(update={"max_steps": steps, "val_every_steps": every})


def precision(hardware: HardwareConfig) -> str:
    """Lightning's precision for `hardware.precision`; `auto` is bf16-mixed where the
    hardware multiplies bf16 natively (a CUDA GPU that supports it; a CPU with AVX-512
    BF16 or AMX: on 2 cores of an AMD EPYC with AVX-512 BF16 a MiniLM step of 32 x 128
    tokens took 2.0 s against 2.6 s in fp32), else 32-true, since emulated bf16 is
    slower than fp32."""
    if hardware.precision != "auto":
        return hardware.precision
    if device(hardware) == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if hardware.accelerator in ("auto", "cpu") and _cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return "bf16-mixed"
    return "32-true"


def device(hardware: HardwareConfig) -> str:
    """Where `hardware` puts a model: "cuda" when it takes a GPU and there is one, else "cpu"."""
    return "cuda" if hardware.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"


def loading(hardware: HardwareConfig) -> Loading:
    """How the loaders make batches on `hardware`: on a GPU in worker processes into pinned
    memory, so that the GPU never waits for the host to tokenize, mask and copy the next
    batch; on a CPU in the training process, whose cores are the ones training. `auto`
    gives each GPU's process half its share of the CPU cores, up to 8. On one H200 with 16
    cores (a 6-layer, 512-wide encoder, batches of 64 x 512 tokens, bf16), Kiln's fits ran
    at 0.73 (pretraining) and 0.75 (finetuning) of a plain loop's tokens/s with 8 workers,
    and at 0.53 and 0.42 with the batches made in the training process
    (benchmarks/gpu_check.py)."""
    on_gpu = device(hardware) == "cuda"
    workers = hardware.loader_workers
    if workers == "auto":
        workers = max(1, min(8, (os.cpu_count() or 2) // (2 * torch.cuda.device_count()))) if on_gpu else 0
    return Loading(workers=workers, pin=on_gpu)


def _cpu_flags() -> set[str]:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell, so no bf16
        return set()
    return {flag for line in info.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def build_trainer(
    name: str,
    hardware: HardwareConfig,
    loop: LoopConfig,
    checkpoints: Path,
    loggers: list,
    monitor: str | None = None,
    mode: Literal["min", "max"] = "max",
    patience: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> L.Trainer:
    """A Trainer that saves a resumable `last.ckpt` every `checkpoint_every` steps and,
    with `monitor`, the best one; progress goes to `progress` as a line every
    `log_every` steps; it stops after `max_minutes`, if given."""
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="step",
            save_last=True,
            save_top_k=0,
            every_n_train_steps=loop.checkpoint_every,
        ),
    ]
    if monitor:
        callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoints,
                filename="best",
                monitor=monitor,
                mode=mode,
                save_top_k=1,
                enable_version_counter=False,
            )
        )
        if patience is not None:
            callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    callbacks.append(LineProgress(name, loop.log_every, progress))
    if loggers:
        # The schedule as it ran (the warm-up, the decay), beside the loss it explains.
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return Trainer(
        accelerator=hardware.accelerator,
        devices=hardware.devices,
        strategy=hardware.strategy,
        precision=precision(hardware),
        num_nodes=hardware.num_nodes,
        max_epochs=loop.max_epochs,
        max_steps=loop.max_steps,
        max_time={"minutes": loop.max_minutes} if loop.max_minutes else None,
        val_check_interval=loop.val_every_steps or 1.0,
        check_val_every_n_epoch=None if loop.val_every_steps else 1,
        log_every_n_steps=loop.log_every,
        logger=loggers or False,
        callbacks=callbacks,
        enable_progress_bar=False,
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        default_root_dir=str(checkpoints),
        num_sanity_val_steps=0,
    )


def resume_point(checkpoints: Path, fingerprint: str) -> tuple[Path | None, str | None]:
    """(`last.ckpt` to resume, or None; a warning, or None).

    A checkpoint resumes only if it belongs to a run of the same inputs and config (else
    the folder is cleared: a checkpoint of other data or params must never be resumed)
    and it loads as weights, as does the best checkpoint it records, which the fit ends by
    loading. A file that does not (cut short, corrupt, or holding code) is moved aside and
    the stage starts over, so it never blocks a later run. Without its best weights a
    resumed run could not end with the model an uninterrupted one would have: it starts
    over too."""
    stamp = checkpoints / "fingerprint"
    last = checkpoints / "last.ckpt"
    if stamp.is_file() and stamp.read_text() == fingerprint and last.is_file():
        try:
            state = torch.load(last, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - zip, pickle and torch errors alike mean "unusable"
            aside = move_aside(last)
            return None, f"{last} does not load ({load_reason(err)}); moved to {aside.name}, starting over"
        for best in recorded_best(state):
            try:
                read_weights(best)
            except Exception as err:  # noqa: BLE001
                last.unlink()
                moved = f"moved to {move_aside(best).name}, " if best.exists() else ""
                why = load_reason(err)
                return None, f"best checkpoint {best} does not load as weights ({why}); {moved}starting over"
        return last, None
    if checkpoints.exists():
        shutil.rmtree(checkpoints)
    checkpoints.mkdir(parents=True)
    stamp.write_text(fingerprint)
    return None, None


def best_state(trainer: L.Trainer) -> dict[str, Any] | None:
    """The monitored best checkpoint's weights, if one was kept."""
    for callback in trainer.checkpoint_callbacks:
        if callback.monitor and callback.best_model_path:
            try:
                return read_weights(callback.best_model_path)
            except Exception as err:  # noqa: BLE001
                # The last checkpoint records this one: a rerun moves it aside and starts over.
                raise KilnError(
                    f"best checkpoint {callback.best_model_path} does not load as weights "
                    f"({load_reason(err)}); rerun the stage to train again"
                ) from None
    return None
