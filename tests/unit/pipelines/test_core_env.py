"""The code's git state: a run's own outputs do not make the tree dirty."""

import subprocess

from pipelines.core.env import git_state


def test_outputs_a_run_writes_do_not_make_the_tree_dirty(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    for name, text in (("dvc.lock", "a"), ("reports/evaluation.json", "{}"), ("pipelines.py", "x = 1")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    generated = ["dvc.lock", "reports/evaluation.json"]
    (tmp_path / "dvc.lock").write_text("b")
    (tmp_path / "reports/evaluation.json").write_text('{"f1": 1}')
    assert git_state(tmp_path, generated)[1] is False
    (tmp_path / "pipelines.py").write_text("x = 2")
    assert git_state(tmp_path, generated)[1] is True
