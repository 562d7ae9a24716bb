"""dvc.lock as a kiln run updates it."""

from pipelines.core import lockfile


def test_a_runs_lock_file_updates_start_from_the_document_last_written_unless_the_file_changed(tmp_path, monkeypatch):
    from dvc.utils.serialize import _yaml

    parsed = []
    real = _yaml.parse_yaml_for_update
    monkeypatch.setattr(_yaml, "parse_yaml_for_update", lambda text, path: parsed.append(path) or real(text, path))
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  a:\n    cmd: kiln stage a\n")

    def add(name: str) -> None:
        with _yaml.modify_yaml(lock) as data:
            data["stages"][name] = {"cmd": f"kiln stage {name}", "outs": [{"path": f"{name}.txt", "md5": "0" * 32}]}

    with lockfile.kept_parsed():
        add("b")
        _yaml.dump_yaml(tmp_path / "entry.yaml", {"cmd": "kiln stage b"})  # as DVC's run-cache writes
        add("c")  # the document "b" wrote: not parsed again
        assert len(parsed) == 1
        lock.write_text(lock.read_text().replace("kiln stage a", "kiln stage a2"))  # another process's write
        add("d")
        assert len(parsed) == 2
    kept = lock.read_text()
    # As DVC alone writes it: the same four stages, byte for byte.
    lock.write_text("schema: '2.0'\nstages:\n  a:\n    cmd: kiln stage a2\n")
    for name in "bcd":
        add(name)
    assert lock.read_text() == kept and "kiln stage a2" in kept and "d.txt" in kept
    assert len(parsed) == 5  # the hook is gone: each update parses the file again
