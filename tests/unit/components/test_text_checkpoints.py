"""Checkpoints: written whole, never unpickled, and a full disk named with the OS's reason."""

import os
import pickle
import resource
import signal
from pathlib import Path

import pytest
import torch

from components.errors import KilnError
from components.text.checkpoints import AtomicCheckpointIO


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["PAYLOAD_MARK"]),))


def test_checkpoints_are_written_whole_and_never_unpickled(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 3}, tmp_path / "last.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert io.load_checkpoint(tmp_path / "last.ckpt")["global_step"] == 3
    mark = tmp_path / "payload-ran"
    monkeypatch.setenv("PAYLOAD_MARK", str(mark))
    torch.save({"state_dict": _Payload()}, tmp_path / "planted.ckpt", pickle_module=pickle)
    with pytest.raises(pickle.UnpicklingError):
        io.load_checkpoint(tmp_path / "planted.ckpt")
    assert not mark.exists()


def test_a_full_disk_names_the_checkpoint_and_the_operating_systems_reason(tmp_path):
    """torch's zip writer reports a cut-short write as a position mismatch: the message
    still gives the OS's reason. The disk fills at 1 MB: this process's file size limit,
    lowered for the one write (a write past it fails with EFBIG once SIGXFSZ is ignored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, hard))
    try:
        with pytest.raises(KilnError) as raised:
            AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1000, 1000)}, f"{tmp_path}/last.ckpt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert str(raised.value) == f"cannot write checkpoint {tmp_path}/last.ckpt: File too large"
    assert list(tmp_path.iterdir()) == []
