"""The local cache of the champion, trusted only while the registry is unchanged."""


def test_the_cached_champion_is_trusted_only_while_the_registry_is_unchanged(tmp_path):
    from pipelines.registry import local_model

    db = tmp_path / "mlflow.db"
    db.write_bytes(b"registry")
    uri = f"sqlite:///{db}"
    folder = local_model.version_folder(tmp_path, uri, "kiln-mine", "3")
    assert folder != local_model.version_folder(tmp_path, "http://127.0.0.1:5000", "kiln-mine", "3")
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    local_model.remember_champion(tmp_path, uri, "kiln-mine", folder, "abc")
    assert local_model.cached_champion(tmp_path, uri, "kiln-mine") == (folder, "abc")
    assert local_model.cached_champion(tmp_path, uri, "kiln-other") is None
    db.write_bytes(b"registry, version 4 promoted")
    assert local_model.cached_champion(tmp_path, uri, "kiln-mine") is None
    # A tracking server has no file to watch: always asked.
    local_model.remember_champion(tmp_path, "http://127.0.0.1:5000", "kiln-mine", folder, "abc")
    assert local_model.cached_champion(tmp_path, "http://127.0.0.1:5000", "kiln-mine") is None
