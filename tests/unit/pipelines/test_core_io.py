"""Atomic writes, and a user's error found behind the errors that wrap it."""

import errno
import os

import pytest

from components.errors import KilnError
from pipelines.core.io import atomic, user_error


def test_atomic_writes_leave_nothing_half_written(tmp_path):
    target = tmp_path / "out" / "model"
    stale = tmp_path / "out" / ".model.tmp999999999"  # left by a process killed mid-write
    stale.mkdir(parents=True)
    with pytest.raises(KilnError, match=r"cannot write .*out/model: No space left on device"), atomic(target) as tmp:
        tmp.mkdir()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert not target.exists() and not list((tmp_path / "out").iterdir())


def test_user_errors_are_found_behind_wrappers():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "models/teacher/model.safetensors")
        except OSError as err:
            raise RuntimeError("failed to reproduce 'finetune'") from err
    except RuntimeError as wrapped:
        found = user_error(wrapped)
    assert str(found) == "No space left on device: models/teacher/model.safetensors"
    assert user_error(RuntimeError("a bug")) is None
    assert user_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) is None
