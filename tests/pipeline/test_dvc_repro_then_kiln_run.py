"""Every stage end to end on the bundled corpus: `kiln run` once (the module's fixture),
then what a user reads and runs next, a test for each thing checked, `dvc repro` among
them: it finds nothing to do, and forced, it runs the data stages as DVC runs any
command, a process each, and leaves dvc.lock as `kiln run` did.

The last three tests change the repository (a param, a forced `dvc repro`, experiments):
pytest runs a module's tests in the order written here, and `make test` runs a module on
one worker, so every test before them reads the repository as `kiln run` left it."""

import getpass
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
import yaml

from tests.support.params import set_params
from tests.support.repo import BIN, ROOT, SHARED_PREFECT, copy_repo, kiln, kiln_here, run
from tests.support.tiny import TINY_TRAINING

pytestmark = pytest.mark.slow


STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
FORCED = ["ingest", "validate", "split", "augment", "tokenize"]
TEXT = "Shares in the bank rose after its profits beat forecasts."


def lock_without_docs(repo) -> dict:
    """dvc.lock less the Data Docs folder, whose HTML carries the time it was rendered."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = lock["stages"]["validate"]["outs"]
    lock["stages"]["validate"]["outs"] = [o for o in outs if o["path"] != "reports/validation_docs"]
    return lock


# Where Chromium itself calls home (updates, time, accounts); any other address would be
# the page's.
CHROMIUM_OWN = re.compile(r"^https?://[^/]*(google\.com|googleapis\.com|gvt1\.com|gstatic\.com)/")


def in_a_browser(page, tmp_path) -> tuple[str, list[str]]:
    """The page as headless Chromium renders it, and every address fetched meanwhile."""
    log = tmp_path / "net.json"
    out = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--log-net-log={log}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    events = json.loads(log.read_text())["events"]
    return out.stdout, sorted({e["params"]["url"] for e in events if "url" in e.get("params", {})})


def runs(repo) -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["kiln"])


@dataclass
class Built:
    """The repository after its first `kiln run`, and what that run left."""

    repo: Path
    lock: str  # dvc.lock as written
    expected: dict  # dvc.lock less Data Docs (lock_without_docs)
    runs: int  # MLflow runs logged


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    """A copy of the repository on the bundled corpus, with the model shrunk and its
    training cut short so that it takes seconds, through `kiln run` once."""
    repo = copy_repo(tmp_path_factory.mktemp("pipeline") / "kiln")
    set_params(repo, **TINY_TRAINING)
    short = {"loop": {"max_steps": 20, "val_every_steps": 10}}
    set_params(repo, finetune=short, distill=short, prune=short, classical={"c": [1.0]})
    set_params(repo, explain={"aopc_texts": 20, "max_misclassified": 10})
    first = kiln_here("run", cwd=repo)
    assert first.returncode == 0, first.stdout + first.stderr
    return Built(repo, (repo / "dvc.lock").read_text(), lock_without_docs(repo), len(runs(repo)))


def test_kiln_run_writes_the_data_stages_outputs(built):
    for name in ("raw/dataset.parquet", "validated/dataset.parquet", "split/test.parquet", "augmented/train.parquet"):
        assert (built.repo / "data" / name).exists(), name
    assert json.loads((built.repo / "reports/validation.json").read_text())["duplicates"]["rows"] == 98


def test_one_parent_run_and_a_child_per_stage_with_mlflows_context_and_dvcs_hashes(built):
    found = runs(built.repo)
    parents = found[found["tags.mlflow.parentRunId"].isna()]
    assert len(parents) == 1 and parents["tags.kiln.trigger"].iloc[0] == "kiln run"
    children = found[found["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]]
    assert sorted(children["tags.mlflow.runName"]) == sorted(STAGES)
    # The UI's User, Source and Version columns, on every run.
    assert (found["tags.mlflow.user"] == getpass.getuser()).all()
    assert (found["tags.mlflow.source.name"] == "kiln run").all()
    assert (found["tags.mlflow.source.git.commit"].str.len() == 40).all()
    assert not [name for name in found.columns if name.startswith(("tags.dvc.", "tags.git."))]
    ingest = children[children["tags.mlflow.runName"] == "ingest"]["run_id"].iloc[0]
    hashes = mlflow.artifacts.load_dict(f"runs:/{ingest}/dvc/hashes.json")
    lock = yaml.safe_load(built.lock)["stages"]["ingest"]
    raw = next(o["md5"] for o in lock["outs"] if o["path"] == "data/raw/dataset.parquet")
    assert hashes["outs"]["data/raw/dataset.parquet"] == raw
    assert set(hashes["deps"]) == {d["path"] for d in lock["deps"]}
    # Training stages log the learning-rate schedule as it ran (Lightning's LearningRateMonitor).
    trained = children[children["tags.mlflow.runName"].isin(["finetune", "distill", "prune"])]
    assert trained["metrics.train/lr_step/pg1"].notna().all()


def test_the_parent_run_shows_the_model_the_pipeline_made(built):
    found = runs(built.repo)
    parent = found[found["tags.mlflow.parentRunId"].isna()].iloc[0]
    selection = json.loads((built.repo / "reports/selection.json").read_text())
    evaluation = json.loads((built.repo / "reports/evaluation.json").read_text())
    chosen = evaluation["variants"][selection["selected"]]
    assert parent["tags.kiln.selected"] == selection["selected"]
    assert parent["metrics.selected/test_macro_f1"] == pytest.approx(chosen["macro_f1"])
    assert parent["metrics.selected/test_macro_f1_lo"] == pytest.approx(chosen["macro_f1_ci95"][0])
    val = selection["candidates"][selection["selected"]]["val_macro_f1"]
    assert parent["metrics.selected/val_macro_f1"] == pytest.approx(val)
    assert parent["metrics.selected/size_mb"] > 0 and parent["metrics.promote/promoted"] == 1
    # Every param, so that two pipeline runs compare side by side, and the data it split.
    assert parent["params.augment.alpha"] == "0.1" and "params.finetune.optim.lr" in parent
    split = {o["path"]: o["md5"] for o in yaml.safe_load(built.lock)["stages"]["split"]["outs"]}
    inputs = mlflow.MlflowClient(f"sqlite:///{built.repo / 'mlflow' / 'mlflow.db'}").get_run(parent["run_id"]).inputs
    assert {(d.dataset.name, d.dataset.digest) for d in inputs.dataset_inputs} == {
        (name, split[f"data/split/{name}.parquet"]) for name in ("train", "val", "test")
    }


def test_the_flow_run_in_prefect_is_named_as_the_mlflow_run_and_links_to_it(built):
    found = runs(built.repo)
    parent = found[found["tags.mlflow.parentRunId"].isna()].iloc[0]
    prefect = os.environ[SHARED_PREFECT]
    flow_run = requests.get(f"{prefect}/flow_runs/{parent['tags.kiln.prefect.flow_run_id']}", timeout=30).json()
    assert flow_run["name"] == parent["tags.mlflow.runName"]
    assert flow_run["state"]["message"].startswith(f"{len(STAGES)} of {len(STAGES)} stages ran; ")
    wanted = {"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}}
    links = requests.post(f"{prefect}/artifacts/filter", json=wanted, timeout=30).json()
    assert ("kiln-mlflow-run", "markdown") in [(a["key"], a["type"]) for a in links]  # a link, as Prefect keeps it
    (link,) = [a for a in links if a["key"] == "kiln-mlflow-run"]
    assert parent["run_id"] in link["data"]


def test_the_model_version_shows_its_figures_and_the_splits_it_was_measured_on(built):
    client = mlflow.MlflowClient(f"sqlite:///{built.repo / 'mlflow' / 'mlflow.db'}")
    version = client.get_model_version("kiln-bbc-news", "1")
    evaluation = json.loads((built.repo / "reports/evaluation.json").read_text())
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    figures = {m.key: m for m in model.metrics}
    test = evaluation["variants"][evaluation["selected"]]["macro_f1"]
    assert figures["selected/test_macro_f1"].value == pytest.approx(test)
    split = {o["path"]: o["md5"] for o in yaml.safe_load(built.lock)["stages"]["split"]["outs"]}
    assert figures["selected/test_macro_f1"].dataset_digest == split["data/split/test.parquet"]
    inputs = client.get_run(version.run_id).inputs.dataset_inputs
    assert {(d.dataset.name, d.dataset.digest) for d in inputs} == {
        (name, split[f"data/split/{name}.parquet"]) for name in ("train", "val", "test")
    }
    # Kiln's own tags under kiln.*; promoted, version 1 awaits no gate: no challenger.
    assert version.tags["kiln.git.commit"] and not [t for t in version.tags if t.startswith(("mlflow.", "git."))]
    assert set(version.aliases) == {"champion"}


def test_the_first_version_is_promoted_and_the_audit_trail_records_it(built):
    # The first run registers version 1 and, with no champion, the floors promote it...
    promotion = json.loads((built.repo / "reports/promotion.json").read_text())
    assert promotion["promoted"] and promotion["champion"] == "1"
    # ...and the audit trail records the decision.
    trail = [json.loads(line) for line in (built.repo / ".kiln/audit.jsonl").read_text().splitlines()]
    assert [(e["action"], e["model"], e["version"]) for e in trail] == [("promote", "kiln-bbc-news", "1")]


def test_evaluation_compares_every_variant_with_its_interval(built):
    report = json.loads((built.repo / "reports/evaluation.json").read_text())
    evaluation = report["variants"]
    assert set(evaluation) == {"teacher", "student", "pruned", "onnx_fp32", "onnx_int8", "onnx_teacher", "classical"}
    for v in evaluation.values():  # every compared number carries its interval
        assert v["macro_f1_ci95"][0] <= v["macro_f1"] <= v["macro_f1_ci95"][1]
    selection = json.loads((built.repo / "reports/selection.json").read_text())
    assert report["selected"] == selection["selected"] in selection["candidates"]
    assert set(report["comparisons"]) == {
        f"selected_vs_{report['baseline']['family']}",
        "selected_vs_teacher",
        "int8_vs_teacher",
    }
    explained = report["explain"]
    assert set(explained["families"]) == {"transformer", "classical"} and explained["temperature"] > 0


def test_the_explanations_render_offline_in_chromium(built, tmp_path):
    dom, requested = in_a_browser(built.repo / "reports/explanations.html", tmp_path)
    assert dom.count("<svg") == 2 and "Reliability diagrams" in dom  # before and after temperature scaling
    assert re.search(r'<span class="[pn][1-5]"', dom), "no highlighted word"  # misclassified texts, highlighted
    assert not [url for url in requested if not url.startswith("file:") and not CHROMIUM_OWN.search(url)]


def test_the_validation_page_renders_offline_in_chromium(built, tmp_path):
    dom, requested = in_a_browser(built.repo / "reports/validation.html", tmp_path)
    expectations = json.loads((built.repo / "reports/validation.json").read_text())["expectations"]
    assert len(expectations) > 10 and dom.count("<code>expect_") == len(expectations)
    assert not [url for url in requested if not url.startswith("file:") and not CHROMIUM_OWN.search(url)]


def test_dvc_plots_draw_the_selected_models_confusion_matrix_and_the_variants(built):
    shown = run([str(BIN / "dvc"), "plots", "show", "--json"], built.repo)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    plots = json.loads(shown.stdout)["data"]
    cells = plots["reports/predictions.json"][0]["content"]["data"]["values"]
    test = pd.read_parquet(built.repo / "data/split/test.parquet")
    assert sorted(c["actual"] for c in cells) == sorted(test["label"])  # a cell a test text
    variants = plots["reports/pareto.json"][0]["content"]["data"]["values"]
    evaluation = json.loads((built.repo / "reports/evaluation.json").read_text())
    assert {v["variant"] for v in variants} == set(evaluation["variants"])


def test_lineage_names_the_quantized_file_and_its_validation(built):
    lineage = kiln_here("lineage", "1", cwd=built.repo)
    assert lineage.returncode == 0, lineage.stdout + lineage.stderr
    quantized = next(o["md5"] for o in yaml.safe_load(built.lock)["stages"]["quantize"]["outs"])
    assert quantized in lineage.stdout and "validation   passed" in lineage.stdout
    assert "0 expectations failed" in lineage.stdout


def test_predict_labels_a_text_with_a_label_of_the_corpus(built):
    predicted = kiln_here("predict", TEXT, cwd=built.repo)
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    labels = json.loads((built.repo / "reports/evaluation.json").read_text())["variants"]["teacher"]["per_class"]
    assert json.loads(predicted.stdout.splitlines()[-1])["label"] in labels


def test_explain_scores_each_word_and_says_the_same_from_the_cached_champion(built):
    explained = kiln("explain", "--json", TEXT, cwd=built.repo)
    assert explained.returncode == 0, explained.stdout + explained.stderr
    words = json.loads(explained.stdout)[0]["words"]
    assert [w["word"] for w in words][:3] == ["Shares", "in", "the"] and all("score" in w for w in words)
    # The second call reads the champion cached by the first, and says the same.
    assert (built.repo / ".kiln/cache/champion.json").is_file()
    cached = kiln("explain", "--json", TEXT, cwd=built.repo)
    assert cached.returncode == 0 and cached.stdout == explained.stdout


def test_nothing_changed_so_dvc_repro_reruns_nothing(built):
    again = run([str(BIN / "dvc"), "repro"], built.repo)
    assert again.returncode == 0
    assert again.stdout.count("didn't change, skipping") == len(STAGES)
    assert (built.repo / "dvc.lock").read_text() == built.lock
    assert len(runs(built.repo)) == built.runs


def test_nothing_changed_so_kiln_run_reruns_nothing(built):
    out = kiln_here("run", cwd=built.repo)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("up to date") == len(STAGES)
    assert (built.repo / "dvc.lock").read_text() == built.lock
    assert len(runs(built.repo)) == built.runs


# The tests from here on change the repository: they stay last.


def test_a_param_change_makes_augment_stale_and_kiln_status_says_why(built):
    set_params(built.repo, augment={"alpha": 0.2})
    status = kiln_here("status", cwd=built.repo)
    assert "augment:\n  changed deps: params.yaml (augment modified)" in status.stdout
    assert "finetune:\n  downstream of augment" in status.stdout
    assert "pretrain" not in status.stdout


def test_dvc_repro_force_reruns_the_data_stages_a_process_each_and_leaves_dvc_lock_as_kiln_run_did(built):
    """Forced: the data half and the tokenizer, each stage a `kiln stage` process of DVC's,
    the processes one MLflow parent run (the training stages would only repeat it, at a
    cost in test time; `dvc exp run` below runs one of them the same way)."""
    set_params(built.repo, augment={"alpha": 0.1})  # as `kiln run` ran it
    before = runs(built.repo)
    forced = run([str(BIN / "dvc"), "repro", "--force", "tokenize", "augment"], built.repo)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert forced.stdout.count("Running stage") == len(FORCED), forced.stdout
    assert lock_without_docs(built.repo) == built.expected
    latest = runs(built.repo)
    new = latest[~latest["run_id"].isin(before["run_id"])]
    parent = new[new["tags.mlflow.parentRunId"].isna()]
    assert len(parent) == 1 and parent["tags.kiln.trigger"].iloc[0] == "dvc repro"
    children = new[new["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert sorted(children["tags.mlflow.runName"]) == sorted(FORCED)
    assert (children["status"] == "FINISHED").all()
    assert (new["tags.mlflow.source.name"] == "dvc repro").all()
    assert (new["tags.mlflow.user"] == getpass.getuser()).all()


def experiments(repo) -> dict[str, dict]:
    """Each experiment `dvc exp show` lists: its name, and its params and metrics."""
    shown = run([str(BIN / "dvc"), "exp", "show", "--json"], repo)
    assert shown.returncode == 0, shown.stderr
    return {
        rev["name"]: rev["data"]
        for baseline in json.loads(shown.stdout)
        for experiment in baseline.get("experiments") or []
        for rev in experiment["revs"]
    }


def test_dvc_exp_sweeps_track_into_the_repositorys_store_and_the_run_cache_restores_training(built):
    """Two learning rates for prune queued with `dvc exp run -S` and run by `dvc queue
    start`, each in a workspace of its own under .dvc/tmp/exps/: both are in `dvc exp
    show` with their metrics and are one pipeline run each in the repository's MLflow
    store. Then the workspace takes the first rate, and back: DVC's run-cache restores the
    pruned model both times, trained by neither run. The sweep and the runs stop at prune
    (its target): the stages after it would only repeat what the fixture's run checked."""
    dvc = str(BIN / "dvc")
    who = {"GIT_AUTHOR_NAME": "kiln-test", "GIT_AUTHOR_EMAIL": "test@kiln.invalid"}
    who |= {"GIT_COMMITTER_NAME": "kiln-test", "GIT_COMMITTER_EMAIL": "test@kiln.invalid"}
    subprocess.run(["git", "add", "-A"], cwd=built.repo, check=True)
    subprocess.run(["git", "commit", "-qm", "tiny pipeline"], cwd=built.repo, env={**os.environ, **who}, check=True)
    before = runs(built.repo)
    rates = {"exp-low": 3e-4, "exp-high": 1e-2}
    for name, lr in rates.items():
        sweep = [dvc, "exp", "run", "--queue", "-n", name, "-S", f"prune.optim.lr={lr}", "prune"]
        queued = run(sweep, built.repo, **who)
        assert queued.returncode == 0, queued.stdout + queued.stderr
    try:
        started = run([dvc, "queue", "start"], built.repo, **who)
        assert started.returncode == 0, started.stdout + started.stderr
        # A finished experiment is a git ref named after it (a look of milliseconds); DVC's own
        # status, a process of seconds on a busy machine, is asked every half minute, for
        # an experiment that failed and makes none.
        deadline, asked = time.monotonic() + 800, time.monotonic()
        while time.monotonic() < deadline:
            refs = ["git", "for-each-ref", "--format=%(refname:lstrip=-1)", "refs/exps"]
            made = set(subprocess.run(refs, cwd=built.repo, capture_output=True, text=True).stdout.split())
            if made >= set(rates) or time.monotonic() - asked > 30:
                asked = time.monotonic()
                status = run([dvc, "queue", "status"], built.repo).stdout
                if not re.search(r"\b(Queued|Running)\b", status):
                    break
            time.sleep(1)
    finally:
        run([dvc, "queue", "stop", "--kill"], built.repo)
    assert status.count("Success") == 2, status + run([dvc, "queue", "logs", "exp-low"], built.repo).stdout
    shown = experiments(built.repo)
    for name, lr in rates.items():
        assert shown[name]["params"]["params.yaml"]["data"]["prune"]["optim"]["lr"] == lr
        assert "val/macro_f1" in shown[name]["metrics"]["reports/prune.json"]["data"]
    found = runs(built.repo)
    new = found[~found["run_id"].isin(before["run_id"])]
    parents = new[new["tags.mlflow.parentRunId"].isna()]
    assert sorted(parents["tags.mlflow.runName"]) == sorted(f"dvc exp {name}" for name in rates)
    assert set(parents["tags.kiln.trigger"]) == {"dvc exp run"}
    for parent, lr in zip(parents["run_id"], parents["params.prune.optim.lr"], strict=True):
        stages = new[new["tags.mlflow.parentRunId"] == parent]
        assert "prune" in set(stages["tags.mlflow.runName"]) and float(lr) in rates.values()
    assert not (built.repo / ".dvc/tmp/exps/mlflow").exists()

    shipped_lr = yaml.safe_load((built.repo / "params.yaml").read_text())["prune"]["optim"]["lr"]
    for lr in (rates["exp-low"], shipped_lr):
        set_params(built.repo, prune={"optim": {"lr": lr}})
        restored = kiln_here("run", "prune", cwd=built.repo)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert re.search(r"^prune +restored ", restored.stdout, re.M), restored.stdout
    after = runs(built.repo)
    assert "prune" not in set(after[~after["run_id"].isin(found["run_id"])]["tags.mlflow.runName"])
