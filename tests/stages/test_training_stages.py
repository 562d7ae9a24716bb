"""Training stages on a tiny model and data: what each writes, tracking, determinism,
resume after kill -9 for every training stage, and DDP."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import torch

from tests.support.params import set_params, shipped
from tests.support.repo import BIN, clean_env, kiln, kiln_here

pytestmark = pytest.mark.slow


def card(repo: Path, folder: str) -> dict:
    return json.loads((repo / "models" / folder / "kiln.json").read_text())


def stage(repo: Path, name: str) -> subprocess.CompletedProcess:
    """`kiln stage NAME` in this process: what a stage writes and says is checked, not its process."""
    out = kiln_here("stage", name, cwd=repo)
    assert out.returncode == 0, f"{name}:\n{out.stdout}\n{out.stderr}"
    return out


def child_runs(repo: Path, name: str):
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["kiln"])
    return found[found["tags.kiln.stage"] == name]


def test_pretrain_writes_a_self_describing_encoder(trained_template):
    encoder = card(trained_template, "encoder")
    assert encoder["params"]["encoder"]["hidden"] == 32 and encoder["metrics"]["train/steps"] == 6
    assert len(encoder["tokenizer"]) == 64  # sha256 of tokenizer.json
    assert encoder["metrics"]["model/max_length"] == 32
    run = child_runs(trained_template, "pretrain").iloc[0]
    assert run["metrics.train/loss"] > 0 and run["metrics.val/perplexity"] > 1
    # Beside what token frequencies alone score, and said where it learned little more.
    metrics = encoder["metrics"]
    assert metrics["val/unigram_perplexity"] > 1
    learned_little = metrics["val/perplexity"] > 0.5 * metrics["val/unigram_perplexity"]
    assert isinstance(run.get("tags.kiln.pretrain_warning"), str) == learned_little
    # Every params section the stage reads is logged, not only its own.
    assert run["params.encoder.hidden"] == "32" and run["params.hardware.accelerator"] == "cpu"


def test_finetune_scores_are_the_saved_teachers_own(trained_template):
    """The metrics in kiln.json are those of the weights saved beside them (the best
    checkpoint restored), recomputed here from the folder."""
    import pandas as pd

    from components.deploy import evaluation
    from components.deploy.parity import TorchClassifier
    from components.text.classifier import MeanPoolClassifier

    teacher = card(trained_template, "teacher")
    labels = sorted(teacher["labels"], key=teacher["labels"].get)
    assert labels == ["business", "entertainment", "politics", "sports", "tech"]
    folder = trained_template / "models" / "teacher"
    runtime = TorchClassifier(MeanPoolClassifier.from_pretrained(folder), folder / "tokenizer.json", labels)
    val = pd.read_parquet(trained_template / "data/split/val.parquet")
    found = evaluation.quality(
        [labels.index(v) for v in val["label"]], runtime.logits(val["text"].tolist()).argmax(-1).tolist(), labels
    )
    assert found["macro_f1"] == pytest.approx(teacher["metrics"]["val/macro_f1"], abs=1e-6)


def test_distill_trains_a_smaller_student_on_augmented_copies(trained_template):
    teacher, student = card(trained_template, "teacher"), card(trained_template, "student")
    assert student["metrics"]["model/params"] < teacher["metrics"]["model/params"]
    train_rows = json.loads((trained_template / "reports/split.json").read_text())["split/train_rows"]
    assert student["metrics"]["train/examples"] == teacher["metrics"]["train/examples"] == 2 * train_rows
    assert student["parents"]["teacher"]["test/macro_f1"] == teacher["metrics"]["test/macro_f1"]
    assert child_runs(trained_template, "distill")["metrics.train/hidden_loss"].notna().all()


def test_unlabeled_texts_teach_the_student_and_none_of_val_or_test_is_among_them(trained):
    import pandas as pd

    val = pd.read_parquet(trained / "data/split/val.parquet")["text"].tolist()
    test = pd.read_parquet(trained / "data/split/test.parquet")["text"].tolist()
    new = [f"An unlabelled story number {i} about markets, films and goals." for i in range(20)]
    rows = [val[0].upper(), f"  {test[0]}  ", "Write to jane.doe@example.com for the report.", *new, new[0]]
    (trained / "data/unlabeled/more.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    said = stage(trained, "unlabeled").stdout
    assert "2 unlabelled text(s) left out: the same text is in a labelled split" in said, said
    kept = pd.read_parquet(trained / "data/transfer/unlabeled.parquet")
    assert len(kept) == 21 and not set(kept["text"]) & set(val + test)
    assert "Write to <EMAIL> for the report." in set(kept["text"])  # masked as ingest masks
    found = json.loads((trained / "reports/unlabeled.json").read_text())
    assert found["unlabeled/in_splits_dropped"] == 2 and found["unlabeled/duplicates_dropped"] == 1

    # At most distill.unlabeled_max of them join at most distill.max_rows labelled train
    # texts (a sample keeping each label's share) and their copies.
    set_params(trained, distill={"unlabeled_max": 15, "max_rows": 40})
    said = stage(trained, "distill").stdout
    student = card(trained, "student")["metrics"]
    train_rows = json.loads((trained / "reports/split.json").read_text())["split/train_rows"]
    labelled = int(student["train/labelled"])
    assert abs(labelled - 40) <= 5 and labelled < train_rows and student["train/unlabeled"] == 15, student
    assert student["train/examples"] == 2 * labelled + 15
    assert f"{labelled:,} of {train_rows:,} train rows in the transfer set (distill.max_rows)" in said, said


def test_prune_removes_parameters_and_writes_its_curve(trained_template):
    pruned = card(trained_template, "pruned")["metrics"]
    assert pruned["model/params_non_embedding"] < pruned["model/params_non_embedding_before"]
    curve = json.loads((trained_template / "reports/prune_curve.json").read_text())
    assert [p["ratio"] for p in curve] == [0.0, 0.25, 0.5, 0.75]
    assert curve[0]["params_non_embedding"] > curve[-1]["params_non_embedding"]
    # Finished stages leave no checkpoints behind.
    assert not (trained_template / "checkpoints").exists() or not any((trained_template / "checkpoints").iterdir())


def test_a_rerun_on_the_same_inputs_scores_the_same(trained):
    before = json.loads((trained / "reports/finetune.json").read_text())
    stage(trained, "finetune")
    after = json.loads((trained / "reports/finetune.json").read_text())
    for key in ("val/macro_f1", "test/macro_f1", "test/accuracy"):
        assert after[key] == pytest.approx(before[key], abs=1e-6), key


def _step(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["global_step"]


def kill_midway(repo: Path, name: str, part: str, at: int) -> int:
    """Start `kiln stage NAME`, kill -9 it once its last checkpoint reached step `at`;
    returns the step the checkpoint holds."""
    last = repo / "checkpoints" / name / part / "last.ckpt"
    proc = subprocess.Popen(
        [str(BIN / "kiln"), "stage", name],
        cwd=repo,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while True:
        try:
            if last.is_file() and _step(last) >= at:
                break
        except (RuntimeError, EOFError):  # caught between write and rename on a slow disk
            pass
        assert proc.poll() is None, f"{name} ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return _step(last)


LONG = {"loop": {"max_epochs": 1000, "max_steps": 100, "checkpoint_every": 5, "log_every": 1}}


@pytest.mark.parametrize(
    "name, part, extra",
    [
        ("pretrain", "encoder", {"loop": {"val_every_steps": 5}}),
        ("finetune", "teacher", {"patience": 1000}),
        ("distill", "student", {}),
        ("prune", "recovery", {}),
    ],
)
def test_a_killed_training_stage_resumes_at_the_step_it_reached(trained, name, part, extra):
    set_params(trained, **{name: {**LONG, **extra, "loop": {**LONG["loop"], **extra.get("loop", {})}}})
    step = kill_midway(trained, name, part, at=20)
    assert 20 <= step < 100
    out = stage(trained, name)
    assert f"{name}: resuming {part} from checkpoints/{name}/{part}/last.ckpt" in out.stdout
    first = re.search(rf"^{name} {part}: step (\d+)/", out.stdout, re.MULTILINE)
    assert first and int(first.group(1)) > step, out.stdout
    assert json.loads((trained / f"reports/{name}.json").read_text())["train/steps"] == 100


class _Planted:
    """A pickle that touches `mark` if anything ever unpickles it."""

    def __init__(self, mark: Path):
        self.mark = mark

    def __reduce__(self):
        return (Path.touch, (self.mark,))


def test_a_best_checkpoint_that_does_not_load_sends_the_stage_back_to_the_start(trained, tmp_path):
    """A best.ckpt holding code beside a resumable last.ckpt: the rerun moves it aside,
    says so and trains from the start, and nothing is unpickled (a cut-short one takes the
    same path: test_helpers covers each kind of bad file). At this learning rate no weight
    changes, so a resumed fit would never write a better best.ckpt over the spoiled one:
    it would end by reading it, and fail on every rerun."""
    set_params(trained, finetune={**LONG, "patience": 1000, "optim": {"lr": 1e-12, "weight_decay": 0.0}})
    best = trained / "checkpoints/finetune/teacher/best.ckpt"
    mark = tmp_path / "payload-ran"
    kill_midway(trained, "finetune", "teacher", at=20)
    assert best.is_file()
    torch.save({"state_dict": _Planted(mark)}, best)
    out = stage(trained, "finetune")
    logged = out.stdout + out.stderr
    assert f"best checkpoint {best} does not load as weights (" in logged, logged
    assert "objects other than tensors, never unpickled" in logged
    assert "moved to best.ckpt.unusable-" in logged and "starting over" in logged
    assert "resuming" not in out.stdout
    assert json.loads((trained / "reports/finetune.json").read_text())["train/steps"] == 100
    assert not (trained / "checkpoints/finetune").exists()  # nothing left to block the next run
    assert not mark.exists()


def test_pretrain_with_ddp_on_two_cpu_processes(prepared):
    set_params(prepared, hardware={"accelerator": "cpu", "devices": 2, "strategy": "ddp"})
    out = kiln("stage", "pretrain", cwd=prepared)  # a process of its own: Lightning starts the second
    assert out.returncode == 0, out.stdout + out.stderr
    assert (prepared / "models/encoder/model.safetensors").is_file()
    assert len(child_runs(prepared, "pretrain")) == 1


def test_a_missing_tokenizer_names_file_and_stage(prepared):
    (prepared / "models/tokenizer.json").unlink()
    out = kiln_here("stage", "pretrain", cwd=prepared)
    assert out.returncode == 1
    assert "pretrain: tokenizer models/tokenizer.json is missing; the tokenize stage makes it" in out.stderr


def test_params_out_of_range_fail_before_training(repo):
    set_params(repo, finetune={"optim": {"lr": -0.001}}, encoder={"hidden": 30, "heads": 4})
    out = kiln_here("stage", "pretrain", cwd=repo)
    assert out.returncode == 1
    assert "finetune.optim.lr" in out.stderr and "heads (4) must divide hidden (30)" in out.stderr


def test_a_teacher_that_learned_nothing_says_so_and_the_stage_goes_on(trained):
    """A teacher whose fresh head cannot move (lr 1e-9) is no better on val than always the
    commonest train label: finetune still succeeds, but says so on the terminal, in
    `val/learned` and in the run's `kiln.not_learned` tag."""
    set_params(trained, finetune={"optim": {"lr": 1e-9}, "loop": {"max_epochs": 1}})
    said = [line for line in stage(trained, "finetune").stdout.splitlines() if "teacher not learned: " in line]
    assert len(said) == 1 and "val macro-F1 " in said[0] and " for always '" in said[0], said
    run = child_runs(trained, "finetune").sort_values("start_time").iloc[-1]
    assert run["metrics.val/learned"] == 0 and run["metrics.val/delta_macro_f1_vs_majority_lo"] <= 0
    assert run["tags.kiln.not_learned"] == said[0].split("teacher not learned: ")[1]


def test_a_refused_int8_is_left_out_and_a_classical_model_is_held_to_the_best_transformer(trained):
    """An INT8 file quantize refused (its verdict turned to a refusal here: a trained tiny
    model's INT8 passes) is no candidate of select, which says why; with the classical
    family pinned, evaluate compares the classical model with the best transformer on val
    (the FP32 student when every transformer learned nothing), not with itself, and
    promote's `baseline` floor is that transformer's."""
    from components.deploy.metadata import read_metadata, stamp
    from pipelines.registry.gating import floor

    set_params(trained, select={"family": "classical"})
    out = kiln_here("run", "quantize", "classical", "search", cwd=trained)
    assert out.returncode == 0, out.stdout + out.stderr
    int8 = trained / "models/model.int8.onnx"
    metadata = read_metadata(int8)
    verdict = "INT8 labels 9 of 12 val texts differently from FP32 (allowed 1: quantize.min_agreement 0.99)"
    stamp(int8, {**metadata, "kiln.quantize": {**metadata["kiln.quantize"], "passed": False, "verdict": verdict}})
    reason = f"refused by quantize's gate: {verdict}"
    assert f"onnx_int8 left out: {reason}" in stage(trained, "select").stdout
    selection = json.loads((trained / "reports/selection.json").read_text())
    assert selection["selected"] == "classical" and "onnx_int8" not in selection["candidates"]
    assert selection["excluded"]["onnx_int8"] == reason
    # A transformer trained for seconds on a dozen val texts may have learned nothing: left out too.
    others = {name: why for name, why in selection["excluded"].items() if name != "onnx_int8"}
    assert all(why.startswith("learned nothing: val macro-F1 ") for why in others.values()), others
    assert child_runs(trained, "select")["tags.kiln.excluded.onnx_int8"].tolist() == [reason]

    stage(trained, "evaluate")
    report = json.loads((trained / "reports/evaluation.json").read_text())
    transformers = {n: c["val_macro_f1"] for n, c in selection["candidates"].items() if c["family"] == "transformer"}
    best = max(transformers, key=transformers.__getitem__) if transformers else "onnx_fp32"
    assert report["baseline"]["name"] == best and report["baseline"]["family"] == "transformer"
    assert report["comparisons"]["selected_vs_transformer"]["other"] == best
    assert set(report["comparisons"]) == {"selected_vs_transformer", "selected_vs_teacher", "int8_vs_teacher"}
    assert report["excluded"] == selection["excluded"] and "onnx_int8" in report["variants"]  # measured, not chosen
    written = (trained / "reports/evaluation.md").read_text()
    assert f"Baseline: {best}, the selected model is classical" in written
    assert f"Not a candidate, measured here only: onnx_int8, {reason}." in written
    low, source = floor(shipped("promote"), trained / "reports/evaluation.json")
    assert low == report["variants"][best]["macro_f1_ci95"][0] and f"lower end of {best}'s 95 % interval" in source
