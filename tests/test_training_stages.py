"""Training stages on a tiny model and data: outputs, tracking, resume after kill -9, DDP."""

import json
import os
import signal
import subprocess
import time

import mlflow
import pytest
import torch

from tests.conftest import BIN, clean_env, kiln, set_params

pytestmark = pytest.mark.slow


def stages(repo, *names: str) -> None:
    for name in names:
        out = kiln("stage", name, cwd=repo)
        assert out.returncode == 0, f"{name}:\n{out.stdout}\n{out.stderr}"


def child_runs(repo, stage: str):
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["kiln"])
    return found[found["tags.kiln.stage"] == stage]


def test_pretrain_finetune_distill_prune(prepared):
    repo = prepared
    out = kiln("run", "prune", cwd=repo)
    assert out.returncode == 0, out.stdout + out.stderr
    encoder = json.loads((repo / "models/encoder/kiln.json").read_text())
    assert encoder["encoder"]["hidden"] == 32 and encoder["metrics"]["train/steps"] == 6
    assert len(encoder["tokenizer"]) == 64  # sha256 of tokenizer.json
    teacher = json.loads((repo / "models/teacher/kiln.json").read_text())
    assert sorted(teacher["labels"]) == ["business", "entertainment", "politics", "sports", "tech"]
    assert 0 <= teacher["metrics"]["test/macro_f1"] <= 1
    metrics = json.loads((repo / "reports/pretrain.json").read_text())
    assert {"val/loss", "val/perplexity"} <= set(metrics)
    run = child_runs(repo, "pretrain").iloc[0]
    assert run["metrics.train/loss"] > 0 and run["metrics.val/perplexity"] > 1
    student = json.loads((repo / "models/student/kiln.json").read_text())
    assert student["metrics"]["model/params"] < teacher["metrics"]["model/params"]
    # Both trained on train plus its augmented copies (factor 1).
    train_rows = json.loads((repo / "reports/split.json").read_text())["train/rows"]
    assert student["metrics"]["train/rows"] == teacher["metrics"]["train/rows"] == 2 * train_rows
    assert "test/macro_f1_retention" in student["metrics"]
    assert child_runs(repo, "distill")["metrics.train/hidden_loss"].notna().all()
    pruned = json.loads((repo / "models/pruned/kiln.json").read_text())["metrics"]
    assert pruned["model/params_non_embedding"] < pruned["model/params_non_embedding_before"]
    curve = json.loads((repo / "reports/prune_curve.json").read_text())
    assert [p["ratio"] for p in curve] == [0.0, 0.25, 0.5, 0.75]
    assert curve[0]["params_non_embedding"] > curve[-1]["params_non_embedding"]
    # Finished stages leave no checkpoints behind.
    assert not (repo / "checkpoints/pretrain").exists()

    # Seeds are fixed: the same stage on the same inputs scores the same.
    before = json.loads((repo / "reports/finetune.json").read_text())
    stages(repo, "finetune")
    after = json.loads((repo / "reports/finetune.json").read_text())
    for key in ("val/macro_f1", "test/macro_f1", "test/accuracy"):
        assert after[key] == pytest.approx(before[key], abs=1e-6), key


def test_missing_tokenizer_names_file_and_stage(prepared):
    repo = prepared
    (repo / "models/tokenizer.json").unlink()
    out = kiln("stage", "pretrain", cwd=repo)
    assert out.returncode == 1
    assert "pretrain: tokenizer" in out.stderr and "models/tokenizer.json is missing; the tokenize stage makes it" in out.stderr
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models/tokenizer.json").write_text("{not json")
    out = kiln("stage", "pretrain", cwd=repo)
    assert out.returncode == 1 and "models/tokenizer.json is corrupt" in out.stderr


def test_params_out_of_range_fail_before_training(repo):
    set_params(repo, finetune={"optim": {"lr": -0.001}}, encoder={"hidden": 30, "heads": 4})
    out = kiln("stage", "pretrain", cwd=repo)
    assert out.returncode == 1
    assert "finetune.optim.lr" in out.stderr and "heads (4) must divide hidden (30)" in out.stderr


def test_killed_pretrain_resumes_from_its_last_checkpoint(prepared):
    repo = prepared
    set_params(repo, pretrain={"loop": {"max_epochs": 1000, "max_steps": 400, "checkpoint_every": 5,
                                        "val_every_steps": 5}})
    last = repo / "checkpoints/pretrain/last.ckpt"
    proc = subprocess.Popen([str(BIN / "kiln"), "stage", "pretrain"], cwd=repo, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (last.is_file() and torch.load(last, weights_only=False)["global_step"] >= 20):
        assert proc.poll() is None, "pretrain ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    step = torch.load(last, weights_only=False)["global_step"]
    assert 20 <= step < 400
    out = kiln("stage", "pretrain", cwd=repo)
    assert out.returncode == 0, out.stderr
    assert "pretrain: resuming from checkpoints/pretrain/last.ckpt" in out.stdout
    first = next(line for line in out.stdout.splitlines() if line.startswith("pretrain: step "))
    assert int(first.split()[2].split("/")[0]) > step, first
    assert json.loads((repo / "reports/pretrain.json").read_text())["train/steps"] == 400


def test_pretrain_with_ddp_on_two_cpu_processes(prepared):
    repo = prepared
    set_params(repo, hardware={"accelerator": "cpu", "devices": 2, "strategy": "ddp"})
    stages(repo, "pretrain")
    assert (repo / "models/encoder/model.safetensors").is_file()
    assert len(child_runs(repo, "pretrain")) == 1
