"""Unit tests of pipelines/ helpers: each runs in about a second, with no pipeline run."""

import errno
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from components.errors import KilnError
from components.text.checkpoints import AtomicCheckpointIO
from components.text.training import best_state, resume_point
from pipelines.core import dag, lock
from pipelines.core.env import git_state
from pipelines.core.io import atomic, user_error
from pipelines.core.params import load
from pipelines.core.records import ModelCard, Promotion
from pipelines.run.flow import StageRow, footer
from pipelines.stagekit.contract import StageContext, StageParams
from pipelines.tracking import metrics
from pipelines.tracking.runs import StageRun
from tests.support.data import TEXTS
from tests.support.params import shipped
from tests.support.repo import ROOT


def test_the_stage_that_makes_an_input_is_read_from_the_graph():
    made = {"data/split/train.parquet": "split", "models/onnx": "export", "models/teacher": "finetune"}
    assert dag.producer_of("data/split", made) == "split"  # a folder of outputs
    assert dag.producer_of("models/onnx/tokenizer.json", made) == "export"  # a file inside one
    assert dag.producer_of("models/teacher", made) == "finetune"
    assert dag.producer_of("data/external", made) is None


def context(sections: tuple[str, ...], root: Path = ROOT) -> StageContext:
    params = load(ROOT / "params.yaml")
    return StageContext(
        "evaluate",
        root,
        StageParams(params, "evaluate", sections),
        sections,
        StageRun.offline(),
        producers={"models/onnx": "export"},
    )


def test_a_stage_reads_only_the_params_dvc_yaml_lists_for_it():
    ctx = context(("evaluate", "hardware.seed"))
    assert ctx.params.evaluate.threads == 1 and ctx.params.hardware.seed == 42
    assert ctx.params.paths.reports == "reports"  # interpolated into every stage's deps and outs
    with pytest.raises(KilnError, match="stage 'evaluate' reads params section 'finetune', which dvc.yaml"):
        _ = ctx.params.finetune
    shipped = load(ROOT / "params.yaml").evaluate.model_dump(mode="json")
    assert ctx.section_params() == {"evaluate": shipped, "hardware.seed": 42}


def test_a_missing_input_names_the_stage_that_makes_it(tmp_path):
    ctx = context(("evaluate",), tmp_path)
    with pytest.raises(
        KilnError,
        match=r"^evaluate: tokenizer models/onnx/tokenizer.json is missing; the export "
        r"stage makes it \(kiln run export\)$",
    ):
        ctx.input("models/onnx/tokenizer.json", "tokenizer")


def test_metric_names_come_from_one_table():
    assert metrics.known("onnx_int8/test_macro_f1") and metrics.known("split/train_rows")
    assert metrics.known("challenger/latency_ms_p95_b1") and metrics.known("augment/insert")
    # Names that meant two things, or two names for one thing, are gone.
    assert metrics.unknown(["train/rows", "int8/test_macro_f1", "onnx_int8/macro_f1"]) == [
        "int8/test_macro_f1",
        "onnx_int8/macro_f1",
        "train/rows",
    ]
    assert metrics.headline("finetune", {"val/macro_f1": 0.91234, "test/macro_f1": 0.9}) == (
        "val/macro_f1 0.9123  test/macro_f1 0.9"
    )
    assert metrics.headline("ingest", {"data/rows": 22250.0, "data/classes": 5}) == "data/rows 22250  data/classes 5"


def test_the_readme_shows_the_metric_table():
    assert metrics.markdown() in (ROOT / "README.md").read_text()


def test_the_footer_counts_a_failed_stage_as_work():
    rows = [StageRow("ingest", "up to date", 0.0), StageRow("finetune", "failed", 40.0)]
    assert footer(rows, 50.0) == "stage work 40.0 s, overhead 10.0 s (20%), total 50.0 s"


def test_a_refused_version_says_why_in_one_line():
    refused = Promotion(
        model_name="kiln-x",
        version="3",
        promoted=False,
        champion="1",
        metrics={},
        reasons=["pass size: 1 MB", "FAIL vs_champion: macro-F1 0.90 vs 0.95", "FAIL latency: 60 ms"],
    )
    assert refused.headline() == (
        "version 3 of 'kiln-x' registered, not promoted (champion stays version 1): "
        "vs_champion: macro-F1 0.90 vs 0.95; latency: 60 ms"
    )


def test_a_model_card_carries_the_sequence_length_and_an_older_card_takes_it_from_the_config(tmp_path):
    from transformers import PreTrainedTokenizerFast

    from components.text.classifier import MeanPoolClassifier
    from components.text.model import bert_config
    from components.text.tokenizer import train_tokenizer
    from pipelines.stagekit.training import load_model, save_model

    tokenizer = train_tokenizer(TEXTS, shipped("tokenize", vocab_size=200, min_frequency=1))
    encoder = shipped("encoder", layers=1, hidden=32, heads=2, intermediate=64, max_length=24)
    model = MeanPoolClassifier(bert_config(encoder, tokenizer.get_vocab_size(), 0, num_labels=2))
    described = ModelCard(stage="finetune", tokenizer="sha", params={}, data={}, metrics={})
    ctx = context(("evaluate",), tmp_path)
    save_model(ctx, model, PreTrainedTokenizerFast(tokenizer_object=tokenizer), described, "models/teacher")
    written = tmp_path / "models/teacher/kiln.json"
    assert ModelCard.read(written, "test", "finetune").max_length == 24
    # A card written before the length was: the model's position table says it.
    older = ModelCard.read(written, "test", "finetune").model_dump(exclude={"max_length"})
    written.write_text(json.dumps(older))
    assert load_model(ctx, "models/teacher", MeanPoolClassifier)[2].max_length == 24


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


def test_a_second_process_finds_the_repo_held_and_is_told_by_whom(tmp_path):
    code = textwrap.dedent(f"""
        from pathlib import Path
        from pipelines.core import lock
        try:
            with lock.hold(Path({str(tmp_path)!r}), "kiln run"):
                print("acquired")
        except lock.Busy as err:
            print(err)
    """)
    with lock.hold(tmp_path, "kiln retrain"):
        with lock.hold(tmp_path, "kiln stage ingest"):  # the same process: its stages run inside it
            assert lock.held(tmp_path)
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert f"another run (PID {os.getpid()}, started " in out.stdout and ": kiln retrain) holds this repo" in out.stdout
    again = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert again.stdout.strip() == "acquired"


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


def test_a_full_disk_names_the_checkpoint_and_the_operating_systems_reason(tmp_path):
    """torch's zip writer reports a cut-short write as a position mismatch: the message
    still gives the OS's reason."""
    script = textwrap.dedent(
        f"""
        import resource, signal, torch
        from components.errors import KilnError
        from components.text.checkpoints import AtomicCheckpointIO
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
        try:
            AtomicCheckpointIO().save_checkpoint({{"w": torch.zeros(1000, 1000)}}, "{tmp_path}/last.ckpt")
        except KilnError as err:
            print(err)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == f"cannot write checkpoint {tmp_path}/last.ckpt: File too large", out.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_model_that_learned_nothing_says_so_in_a_line_a_metric_and_a_tag():
    from pipelines.stagekit.contract import StageResult
    from pipelines.stagekit.majority import checked

    class Run:
        tags: dict = {}

        def set_tags(self, tags):
            self.tags = tags

    ctx = SimpleNamespace(run=Run())
    train, val = ["pos"] * 6 + ["neg"] * 3, ["pos"] * 40 + ["neg"] * 20
    result = checked(ctx, StageResult({"val/macro_f1": 0.4}, summary=["other"]), "teacher", train, val, ["pos"] * 60)
    reason = "val macro-F1 0.400 vs 0.400 for always 'pos' (difference +0.000 [+0.000, +0.000])"
    assert result.summary == [f"teacher not learned: {reason}", "other"]
    assert result.metrics["val/learned"] == 0 and result.metrics["val/majority_macro_f1"] == pytest.approx(0.4)
    assert ctx.run.tags == {"kiln.not_learned": reason} and not metrics.unknown(result.metrics)
    ctx.run = Run()
    result = checked(ctx, StageResult({}), "student", train, val, val)
    assert result.metrics["val/learned"] == 1 and result.summary == [] and ctx.run.tags == {}


def test_a_stops_bookkeeping_waits_seconds_at_most_and_any_other_runs_to_the_end():
    """A SIGTERM inside an SQLite write can leave MLflow's store locked for 20 s a write:
    a stop's bookkeeping must not hold the stop up that long."""
    import threading
    import time

    from pipelines.core.lifecycle import bookkeeping

    release = threading.Event()
    start = time.monotonic()
    bookkeeping(KeyboardInterrupt("terminated"), lambda: release.wait(60), seconds=0.5)
    assert time.monotonic() - start < 30  # gave up on the locked store, not 60 s later
    release.set()
    bookkeeping(KeyboardInterrupt("terminated"), lambda: 1 / 0, seconds=5)  # a stop swallows its errors
    done = []
    bookkeeping(None, lambda: done.append(1))
    bookkeeping(ValueError("a failure"), lambda: done.append(2))
    assert done == [1, 2]  # anything else runs to the end, in this thread
    with pytest.raises(ZeroDivisionError):
        bookkeeping(None, lambda: 1 / 0)


def test_a_stop_inside_a_tracking_write_still_ends_its_run(tmp_path, monkeypatch):
    """A SIGTERM that lands inside one of MLflow's SQLite writes left the store locked by
    the connection it cut short (in 4 of 9 tries), so the stop could not end its run;
    the stop's bookkeeping drops that connection first."""
    import random
    import signal
    import threading
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from pipelines.core.lifecycle import bookkeeping

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.create_experiment("stops")

    def terminated(*_):
        raise KeyboardInterrupt("terminated")

    previous = signal.signal(signal.SIGTERM, terminated)
    ended = []
    try:
        for _ in range(6):
            run = client.create_run(experiment).info.run_id
            threading.Timer(0.1 + random.random() * 0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
            failure = None
            try:
                for step in range(10**6):
                    client.log_batch(run, metrics=[Metric("m", 1.0, int(time.time() * 1000), step)])
            except KeyboardInterrupt as err:
                failure = err
            finally:
                bookkeeping(failure, lambda: client.set_terminated(run, "KILLED"))  # noqa: B023 - run now
            ended.append(client.get_run(run).info.status)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert ended == ["KILLED"] * 6
