"""Training: the precision and loop a fit gets, its budgets, a stop, and resuming from
checkpoints that may not load."""

import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from components.errors import KilnError
from components.text.checkpoints import AtomicCheckpointIO
from components.text.training import best_state, resume_point
from tests.support.params import shipped


def test_auto_precision_is_bf16_only_where_the_cpu_multiplies_bf16(monkeypatch):
    from components.text import training

    monkeypatch.setattr(training.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert training.precision(shipped("hardware")) == "bf16-mixed"
    assert training.precision(shipped("hardware", precision="32-true")) == "32-true"  # a set precision wins
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx2", "avx512f"})  # emulated bf16 is slower
    assert training.precision(shipped("hardware")) == "32-true"
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"amx_bf16"})
    assert training.precision(shipped("hardware")) == "bf16-mixed"


def test_batches_are_made_in_workers_and_pinned_on_a_gpu_and_in_the_training_process_on_a_cpu(monkeypatch):
    from components.text import training
    from components.text.data import Loading

    monkeypatch.setattr(training.torch.cuda, "is_available", lambda: False)
    assert training.loading(shipped("hardware")) == Loading(workers=0, pin=False)
    assert training.loading(shipped("hardware", loader_workers=3)) == Loading(workers=3, pin=False)
    monkeypatch.setattr(training.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(training.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(training.os, "cpu_count", lambda: 16)
    assert training.loading(shipped("hardware")) == Loading(workers=4, pin=True)  # 8 cores per GPU, half
    monkeypatch.setattr(training.os, "cpu_count", lambda: 64)
    assert training.loading(shipped("hardware")) == Loading(workers=8, pin=True)
    monkeypatch.setattr(training.os, "cpu_count", lambda: 2)
    assert training.loading(shipped("hardware")) == Loading(workers=1, pin=True)
    assert training.loading(shipped("hardware", accelerator="cpu")) == Loading(workers=0, pin=False)


def test_a_pretrained_teacher_gets_its_own_loop_and_small_data_enough_steps():
    from components.text.training import budgeted

    cfg = shipped("finetune")
    loop, optim = cfg.pretrained()
    assert (loop.max_epochs, loop.min_steps, loop.batch_size, optim.lr) == (1, 100, 16, 1e-4)
    assert budgeted(loop, 1734).max_epochs == 1  # BBC's train split: one epoch is 109 steps of 16
    assert budgeted(loop, 500).max_epochs == 4  # 32 steps an epoch: four make the 100 steps asked
    assert budgeted(loop, 10).max_epochs == 100  # one step an epoch
    assert cfg.loop.max_epochs == 2 and cfg.optim.lr == 1e-3  # an encoder trained here keeps its own
    assert budgeted(cfg.loop, 173).max_epochs == 17  # 6 steps of 32 an epoch: 2 epochs would be 12 steps
    capped = cfg.loop.model_copy(update={"max_steps": 50})
    assert budgeted(capped, 173).max_steps == 50  # max_steps still ends it
    assert budgeted(cfg.loop.model_copy(update={"min_steps": 0}), 173).max_epochs == 2  # epochs as given


def test_steps_grow_as_a_power_of_the_rows_beyond_full_epochs_rows():
    from components.text.training import budgeted

    # prune's loop: no step limit, no min_steps, validation at each epoch's end.
    loop = shipped("prune.loop", max_epochs=2, batch_size=32, full_epochs_rows=4000, steps_growth=0.33)
    assert budgeted(loop, 4000) == loop  # up to the bound: every epoch, as configured
    full = 2 * 125  # two epochs of 4,000 rows
    ten, hundred = budgeted(loop, 40_000), budgeted(loop, 400_000)
    assert ten.max_steps == pytest.approx(full * 10**0.33, abs=1)  # growth 0.33: about a cube root
    assert hundred.max_steps == pytest.approx(full * 100**0.33, abs=1)  # not 100 times
    assert ten.val_every_steps == pytest.approx(ten.max_steps / 2, abs=1)  # as many checks as epochs
    root = loop.model_copy(update={"steps_growth": 0.5})
    assert budgeted(root, 400_000).max_steps == pytest.approx(full * 10, abs=1)
    every = loop.model_copy(update={"steps_growth": 1.0})  # 1: every epoch of every row
    assert budgeted(every, 40_000).max_steps == 2 * 1250
    assert budgeted(loop.model_copy(update={"max_steps": 300}), 400_000).max_steps == 300  # a set cap holds
    assert budgeted(loop.model_copy(update={"max_steps": 0}), 400_000).max_steps == 0  # 0: no training at all
    assert budgeted(loop.model_copy(update={"full_epochs_rows": None}), 400_000) == loop.model_copy(
        update={"full_epochs_rows": None}
    )


def test_a_fit_stops_at_its_wall_clock_budget(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from components.text.training import build_trainer

    class Line(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=8)
    loop = shipped(
        "pretrain.loop",
        max_epochs=10**6,
        max_steps=10**7,
        val_every_steps=None,
        checkpoint_every=10**6,
        log_every=10**6,
        max_minutes=0.02,
    )
    trainer = build_trainer("budget", shipped("hardware", accelerator="cpu", devices=1), loop, tmp_path, [])
    trainer.fit(Line(), train_dataloaders=data)
    assert 0 < trainer.global_step < 10**7  # stopped by the clock after ~1 s, not by the steps


def test_a_stopped_fit_raises_keyboardinterrupt_not_lightnings_exit(tmp_path):
    """Lightning turns a KeyboardInterrupt in fit into sys.exit(1); `kiln stage` stopped
    by SIGTERM then ended with exit code 1 instead of "kiln: stopped" and 130."""
    import sqlite3

    import lightning as L
    from lightning.pytorch.loggers import Logger
    from torch.utils.data import DataLoader, TensorDataset

    from components.text.training import build_trainer

    class Stopped(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, index):
            if index == 2:
                raise KeyboardInterrupt("terminated")
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class LockedStore(Logger):
        # What the MLflow logger's closing write meets when the stop landed inside its
        # previous SQLite write (CI saw it): the stop must not become that error.
        name, version = "locked", 0

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params):
            pass

        def finalize(self, status):
            raise sqlite3.OperationalError("database is locked")

    data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=8)
    loop = shipped(
        "pretrain.loop", max_epochs=1, max_steps=-1, val_every_steps=None, checkpoint_every=10**6, log_every=10**6
    )
    hardware = shipped("hardware", accelerator="cpu", devices=1)
    for extra in ([], [LockedStore()]):
        trainer = build_trainer("stop", hardware, loop, tmp_path, extra)
        with pytest.raises(KeyboardInterrupt, match="terminated"):
            trainer.fit(Stopped(), train_dataloaders=data)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["PAYLOAD_MARK"]),))


def test_a_checkpoint_that_does_not_load_is_moved_aside(tmp_path):
    folder = tmp_path / "teacher"
    assert resume_point(folder, "abc") == (None, None)  # a fresh folder, stamped
    AtomicCheckpointIO().save_checkpoint({"global_step": 5}, folder / "last.ckpt")
    assert resume_point(folder, "abc") == (folder / "last.ckpt", None)
    data = (folder / "last.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(data[: len(data) // 2])  # a crash mid-write
    last, warning = resume_point(folder, "abc")
    assert last is None and "does not load" in warning and "starting over" in warning
    assert not (folder / "last.ckpt").exists() and list(folder.glob("last.ckpt.unusable-*"))
    # A checkpoint of other params or inputs is never resumed.
    AtomicCheckpointIO().save_checkpoint({"global_step": 5}, folder / "last.ckpt")
    assert resume_point(folder, "other") == (None, None) and not (folder / "last.ckpt").exists()


def test_a_best_checkpoint_that_does_not_load_is_moved_aside_never_unpickled(tmp_path, monkeypatch):
    """The fit ends by loading the best checkpoint the resumed one records: one that does
    not load sends the stage back to the start, once, instead of failing every rerun."""
    folder, io = tmp_path / "teacher", AtomicCheckpointIO()
    best, last = folder / "best.ckpt", folder / "last.ckpt"
    mark = tmp_path / "payload-ran"
    monkeypatch.setenv("PAYLOAD_MARK", str(mark))
    kept = {"monitor": "val/macro_f1", "best_model_path": str(best)}
    monitored = {"ModelCheckpoint{'monitor': 'val/macro_f1'}": kept}  # as Lightning keys a callback's state
    resume_point(folder, "abc")
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, best)
    whole = best.read_bytes()
    spoils = {
        "PytorchStreamReader failed reading zip archive": lambda: best.write_bytes(whole[: len(whole) // 2]),
        "it holds objects other than tensors, never unpickled": lambda: torch.save(
            {"state_dict": _Payload()}, best, pickle_module=pickle
        ),
        "it holds no model weights": lambda: io.save_checkpoint({"epoch": 1}, best),
        "No such file or directory": best.unlink,
    }
    io.save_checkpoint({"global_step": 5, "callbacks": monitored}, last)
    assert resume_point(folder, "abc") == (last, None)
    for reason, spoil in spoils.items():
        spoil()
        io.save_checkpoint({"global_step": 5, "callbacks": monitored}, last)
        resumed, warning = resume_point(folder, "abc")
        assert resumed is None and not last.exists() and not best.exists()
        assert warning.startswith(f"best checkpoint {best} does not load as weights ({reason}")
        assert warning.endswith("starting over")
        moved = list(folder.glob("best.ckpt.unusable-*"))
        assert ("moved to best.ckpt.unusable-" in warning) == bool(moved) == (reason != "No such file or directory")
        assert resume_point(folder, "abc") == (None, None)  # the next run is not blocked
        io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, best)
    # After a fit, the message says what to do.
    spoils["it holds objects other than tensors, never unpickled"]()
    trainer = SimpleNamespace(checkpoint_callbacks=[SimpleNamespace(monitor="val/macro_f1", best_model_path=str(best))])
    with pytest.raises(KilnError, match=r"best checkpoint .*best\.ckpt does not load as weights .*; rerun the stage"):
        best_state(trainer)
    assert not mark.exists()
