"""The pretrained path on a tiny slice: `kiln profile pretrained`, then a run from
all-MiniLM-L6-v2 (the package the dev extra installs) up to evaluate, offline."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.support.params import set_params
from tests.support.repo import kiln, kiln_here

pytestmark = pytest.mark.slow


def card(repo: Path, folder: str) -> dict:
    return json.loads((repo / "models" / folder / "kiln.json").read_text())


def config(repo: Path, folder: str) -> dict:
    return json.loads((repo / "models" / folder / "config.json").read_text())


def vocab(tokenizer: Path) -> dict[str, int]:
    return json.loads(tokenizer.read_text())["model"]["vocab"]


def test_a_run_from_minilm_teaches_a_student_with_kilns_own_tokenizer(prepared_template: Path, tmp_path: Path):
    repo = tmp_path / "kiln"
    shutil.copytree(prepared_template, repo, symlinks=True)
    out = kiln_here("profile", "pretrained", cwd=repo)
    assert out.returncode == 0, out.stderr
    # Two masked-LM steps on the tiny texts cover domain adaptation from MiniLM's missing head.
    # `auto` chooses the start: the tiny texts' made-up words ("sportword3") are split into
    # about 1.7 pieces each, inside the limit set here.
    auto = {"init": "auto", "auto": {"max_pieces_per_word": 2.0}}
    # Logits alone (no hidden-state matching, the default): the teacher's are computed once.
    set_params(repo, pretrain={**auto, "adapt_steps": 2}, distill={"hidden_weight": 0.0})
    # Up to evaluate: what is checked here ends there (registration is the tiny runs' elsewhere).
    out = kiln("run", "evaluate", cwd=repo, HF_HUB_OFFLINE="1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(
        r"start: all-MiniLM-L6-v2, whose vocabulary fits the train texts: 1\.[6-7]\d word pieces a word "
        r"\(at most 2\) and 0\.0% unknown \(at most 1\.0%\) over \d+ train words",
        out.stdout,
    ), out.stdout

    minilm = repo / ".kiln/models/all-MiniLM-L6-v2"
    encoder = config(repo, "encoder")
    assert (encoder["num_hidden_layers"], encoder["hidden_size"], encoder["vocab_size"]) == (6, 384, 30522)
    assert encoder["max_position_embeddings"] == 32  # the tiny params' length, cut from MiniLM's 512
    assert card(repo, "encoder")["tokenizer"] == card(repo, "teacher")["tokenizer"] == "all-MiniLM-L6-v2"
    assert card(repo, "encoder")["start"] == card(repo, "teacher")["start"] == "all-MiniLM-L6-v2"
    assert card(repo, "encoder")["metrics"]["start/pretrained"] == 1.0
    # A pretrained encoder is finetuned at its own, gentler rate.
    assert card(repo, "teacher")["metrics"]["train/lr"] == 1e-4
    # MiniLM's weights, moved a little by two steps, not a fresh encoder.
    start = load_file(minilm / "model.safetensors")["encoder.layer.5.attention.self.query.weight"]
    adapted = load_file(repo / "models/encoder/model.safetensors")["bert.encoder.layer.5.attention.self.query.weight"]
    assert (adapted - start).abs().max() < 0.01 < start.abs().max()

    student = config(repo, "student")
    kiln_tokenizer = repo / "models/tokenizer.json"
    assert student["vocab_size"] == len(vocab(kiln_tokenizer)) < 30522
    assert card(repo, "student")["tokenizer"] == hashlib.sha256(kiln_tokenizer.read_bytes()).hexdigest()

    evaluation = json.loads((repo / "reports/evaluation.json").read_text())["variants"]
    assert {"teacher", "student", "onnx_int8"} <= set(evaluation)
    # Each exported model reads its own vocabulary.
    onnx = repo / "models/onnx"
    assert vocab(onnx / "tokenizer.json") == vocab(kiln_tokenizer) != vocab(onnx / "teacher.tokenizer.json")
    assert len(vocab(onnx / "teacher.tokenizer.json")) == 30522

    # distill.inherit: the student starts as MiniLM's layers 0, 2 and 4, reading MiniLM's
    # vocabulary cut to the tiny texts' tokens, and prune and export work on it as it is
    # (the stages after export read only the ONNX files and their tokenizers).
    set_params(repo, distill={"inherit": True})
    out = kiln("run", "export", cwd=repo, HF_HUB_OFFLINE="1")
    assert out.returncode == 0, out.stdout + out.stderr
    student = config(repo, "student")
    assert (student["num_hidden_layers"], student["hidden_size"]) == (3, 384)
    kept = vocab(repo / "models/student/tokenizer.json")
    assert student["vocab_size"] == len(kept) == card(repo, "student")["metrics"]["model/vocab_size"] < 2_000
    assert kept["[PAD]"] == 0 and set(kept) <= set(vocab(minilm / "tokenizer.json"))
    assert vocab(onnx / "tokenizer.json") == kept  # the pruned student exported with it
    taught = load_file(repo / "models/teacher/model.safetensors")["bert.encoder.layer.2.output.dense.weight"]
    inherited = load_file(repo / "models/student/model.safetensors")["bert.encoder.layer.1.output.dense.weight"]
    # Started there, then trained (a fresh layer's weights would be uncorrelated with them).
    assert torch.cosine_similarity(inherited.flatten(), taught.flatten(), dim=0) > 0.5
    assert not inherited.equal(taught)

    # adapt_steps 0, the profile's: MiniLM as it is, without a val pass of a head it lacks.
    set_params(repo, pretrain={"init": "all-MiniLM-L6-v2", "adapt_steps": 0})
    out = kiln_here("stage", "pretrain", cwd=repo)
    assert out.returncode == 0, out.stdout + out.stderr
    kept = load_file(repo / "models/encoder/model.safetensors")["bert.encoder.layer.5.attention.self.query.weight"]
    assert kept.equal(start)
    assert card(repo, "encoder")["metrics"]["train/steps"] == 0 and "val/loss" not in card(repo, "encoder")["metrics"]
