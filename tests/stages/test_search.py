"""The search stage: whole searches from the tiny pipeline's teacher, off, in local worker
processes up to select, resumed after kill -9, and on a two-worker Dask cluster. (Its
parts: tests/unit/components/test_search.py; the study's resume bookkeeping:
tests/unit/pipelines/test_search_study.py.)"""

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest

from pipelines.search.study import interrupted
from tests.support.params import set_params
from tests.support.repo import BIN, SHARED_PREFECT, clean_env, kiln
from tests.support.stores import copy_with_store

# Small enough for seconds per trial on two cores. A seed whose first (random) trials
# alternate transformer, classical, transformer, classical: both families in 4 trials.
SEARCH = {
    "enabled": True,
    "n_trials": 4,
    "timeout_s": 600,  # trials do not start within MIN_TRIAL_S (60 s) of it
    "workers": 2,
    "seed": 6,
    "families": ["transformer", "classical"],
    "space": {
        "transformer": {"layers": [1], "hidden": [16, 32], "heads": [1, 2], "intermediate": [32, 64]},
        "classical": {"max_features": {"low": 100, "high": 2000, "log": True}},
    },
    "loop": {"max_epochs": 1, "batch_size": 8},
    "recovery_epochs": 1,
}
STUDY = re.compile(r"kiln-search-[0-9a-f]{12}-(\d+)")


@pytest.fixture(scope="module")
def search_template(trained_template: Path, tmp_path_factory) -> Path:
    """The trained repo (its teacher fine-tuned), with SEARCH in params.yaml."""
    dest = copy_with_store(trained_template, tmp_path_factory.mktemp("search") / "kiln")
    set_params(dest, search=SEARCH)
    return dest


@pytest.fixture
def searching(search_template: Path, tmp_path: Path) -> Path:
    return copy_with_store(search_template, tmp_path / "kiln")


def search(repo: Path, **extra: str) -> subprocess.CompletedProcess:
    out = kiln("stage", "search", cwd=repo, **extra)
    assert out.returncode == 0, f"search:\n{out.stdout}\n{out.stderr}"
    return out


def shared_api() -> dict[str, str]:
    """The session's Prefect server for a `kiln stage`, which would otherwise start its own."""
    return {"PREFECT_API_URL": os.environ[SHARED_PREFECT]}


def search_runs(repo: Path):
    """(the search stage's MLflow runs, oldest first; their trials' child runs)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["kiln"], order_by=["attribute.start_time ASC"])
    found = found[found["tags.kiln.stage"] == "search"].copy()
    if "tags.kiln.search.trial" not in found:  # no trial was logged
        found["tags.kiln.search.trial"] = None
    is_trial = found["tags.kiln.search.trial"].notna()
    return found[~is_trial], found[is_trial]


def storage(repo: Path) -> str:
    return f"sqlite:///{repo / 'mlflow' / 'search.db'}"


def the_study(repo: Path):
    """The one study in the repo's storage (a search that resumed made no second one)."""
    import optuna

    summaries = optuna.get_all_study_summaries(storage(repo), include_best_trial=False)
    assert len(summaries) == 1, [s.study_name for s in summaries]
    return optuna.load_study(study_name=summaries[0].study_name, storage=storage(repo))


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
def test_search_off_writes_an_empty_front(repo):
    """The default: the stage stays in the DAG, so its outputs exist, without any input."""
    out = kiln("stage", "search", cwd=repo)
    assert out.returncode == 0, out.stdout + out.stderr
    front = json.loads((repo / "models/search/front.json").read_text())
    assert front == {"study": None, "storage": None, "members": {}}
    assert json.loads((repo / "reports/search.json").read_text()) == []
    assert json.loads((repo / "reports/search_metrics.json").read_text())["search/trials"] == 0
    assert (repo / "reports/search_front.png").read_bytes()[:4] == b"\x89PNG"
    assert not (repo / "mlflow/search.db").exists()


@pytest.mark.slow
def test_a_local_search_logs_every_trial_and_writes_each_familys_front(searching):
    """`kiln run search` from the fine-tuned teacher: four trials in two local worker
    processes, the search flow a subflow of the run's (whose stage task holds what a
    worker cannot unpickle)."""
    out = kiln("run", "search", cwd=searching)
    assert out.returncode == 0, out.stdout + out.stderr
    records = json.loads((searching / "reports/search.json").read_text())
    assert [r["trial"] for r in records] == [0, 1, 2, 3]
    assert all(r["state"] == "COMPLETE" and r["error"] is None and not r["interrupted"] for r in records), records
    assert {r["family"] for r in records} == {"transformer", "classical"}  # SEARCH's seed
    for r in records:
        assert all(number(r[k]) for k in ("val_macro_f1", "latency_ms_p50_b1", "size_mb", "seconds")), r
        assert re.fullmatch(r".+:\d+", r["worker"]), r  # host:pid of a local worker
        assert r["params"]["family"] == r["family"]
    assert len({r["worker"] for r in records}) == 2, records

    front = json.loads((searching / "models/search/front.json").read_text())
    attempt = STUDY.fullmatch(front["study"])
    assert attempt and attempt.group(1) == "1", front["study"]
    assert front["storage"] == storage(searching)
    # Candidates are each family's front, so the (weak) tiny students are among them.
    assert set(front["members"]) == {f"search_{r['trial']}" for r in records if r["family_front"]}
    assert {m["family"] for m in front["members"].values()} == {"transformer", "classical"}
    assert {r["trial"] for r in records if r["front"]} <= {r["trial"] for r in records if r["family_front"]}
    by_trial = {r["trial"]: r for r in records}
    for name, member in front["members"].items():
        assert name == f"search_{member['trial']}"
        assert (searching / member["file"]).is_file() and member["file"].endswith("/model.onnx")
        assert (searching / member["source"]).exists()
        if member["family"] == "transformer":
            assert (searching / member["tokenizer"]).is_file()
            assert (searching / member["source"] / "kiln.json").is_file()
            assert "quantize" in member["evidence"]
        else:
            assert member["tokenizer"] is None and member["source"].endswith("explainer.json")
        for key in ("val_macro_f1", "latency_ms_p50_b1", "size_mb"):
            assert number(member[key]) and member[key] == by_trial[member["trial"]][key], (name, key)
    # The trials' working folders are gone once the front is copied out.
    assert not (searching / "checkpoints/search" / front["study"]).exists()

    metrics = json.loads((searching / "reports/search_metrics.json").read_text())
    assert metrics["search/trials"] == metrics["search/complete"] == 4
    assert metrics["search/candidates"] == len(front["members"]) and metrics["search/requeued"] == 0
    assert (searching / "reports/search_front.png").read_bytes()[:4] == b"\x89PNG"
    assert f"4 trials (4 complete, 0 failed) in study {front['study']}" in out.stdout

    stages, trials = search_runs(searching)
    assert len(stages) == 1
    assert (trials["tags.mlflow.parentRunId"] == stages.iloc[0]["run_id"]).all()
    assert sorted(trials["tags.kiln.search.trial"].astype(int)) == [0, 1, 2, 3]
    for _, run in trials.iterrows():
        r = by_trial[int(run["tags.kiln.search.trial"])]
        assert run["tags.kiln.search.worker"] == r["worker"]
        assert run["tags.kiln.search.family"] == r["family"] == run["params.family"]
        assert run["tags.kiln.search.study"] == front["study"]
        assert run["status"] == "FINISHED" and run["metrics.val/macro_f1"] == pytest.approx(r["val_macro_f1"])
    # A search that ended is never resumed: a rerun would start attempt 2.
    assert the_study(searching).user_attrs.get("ended") is True


def _states_now(db: Path) -> tuple[list[str], str]:
    """(the states of the trials in `db` so far, by number; why there are none yet). One
    read-only query: Optuna's own storage makes several, each of which may wait out a
    busy timeout while the workers write, and the window the kill must land in (a few
    trials' seconds) was once over while one look at the study waited."""
    if not db.is_file():
        return [], "no storage yet"
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            return [state for (state,) in con.execute("SELECT state FROM trials ORDER BY number")], ""
    except sqlite3.Error as err:  # tables not made yet, or a write in progress
        return [], f"{type(err).__name__}: {err}"


def _group(pgid: int) -> list[str]:
    """The live processes (zombies aside) of process group `pgid`, as "pid command"."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):  # it ended while being read
            continue
        if int(group) == pgid and state != "Z":
            alive.append(f"{stat.parent.name} {command[:160]}")
    return alive


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.is_file() else ""


@pytest.mark.slow
def test_a_killed_search_resumes_its_study_without_rerunning_finished_trials(searching, tmp_path):
    """kill -9 of the stage (its pid alone, as a user would) once 2 trials completed while
    others ran: nothing it started outlives it, and the rerun resumes that study: finished
    trials stay as they were (not rerun, not relogged), trials cut off are failed as
    interrupted and asked again with the params they had."""
    from optuna.trial import TrialState

    # Students only, each trained a few epochs and six of them: the kill must land while 2
    # are done and another runs, and with 4 one-epoch trials on a loaded machine that
    # window (the last trial's seconds) was once over between two looks at the study.
    n_trials = 6
    set_params(searching, search={"families": ["transformer"], "n_trials": n_trials, "loop": {"max_epochs": 3}})
    log = tmp_path / "killed.log"
    with open(log, "w") as output:
        # No Prefect API named: the stage starts the temporary server its workers report
        # to, as a user's `kiln stage search` does.
        proc = subprocess.Popen(
            [str(BIN / "kiln"), "stage", "search"],
            cwd=searching,
            env=clean_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: what it leaves behind is found, and ended
        )
    try:
        deadline = time.time() + 300
        while True:
            states, why = _states_now(searching / "mlflow" / "search.db")
            if states.count("COMPLETE") >= 2 and "RUNNING" in states:
                break
            ended = f"search ended (rc {proc.returncode}) before the kill: {states} {why}\n{_tail(log)}"
            assert proc.poll() is None, ended
            assert time.time() < deadline, f"not 2 complete trials and 1 running in 300 s: {states} {why}"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # Its workers and servers end with it (the kernel tells them, at once); a process
        # still there after 15 s was left behind for good.
        deadline = time.time() + 15
        while (left_behind := _group(proc.pid)) and time.time() < deadline:
            time.sleep(0.2)
    finally:
        if _group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Nothing runs any more: what the storage holds now is what the kill left.
    before = {t.number: t for t in the_study(searching).get_trials(deepcopy=False)}
    name = the_study(searching).study_name
    done = {n: t.datetime_complete for n, t in before.items() if t.state == TrialState.COMPLETE}
    cut = sorted(n for n, t in before.items() if t.state == TrialState.RUNNING)
    assert len(done) >= 2 and cut, before

    out = search(searching, **shared_api())
    study = the_study(searching)
    assert study.study_name == name and study.user_attrs.get("ended") is True
    after = {t.number: t for t in study.get_trials(deepcopy=False)}
    for n, completed in done.items():
        assert after[n].state == TrialState.COMPLETE and after[n].datetime_complete == completed, n
    marks = study.user_attrs
    finished = [t for t in after.values() if t.state.is_finished() and not interrupted(marks, t)]
    assert len(finished) == n_trials, after
    for n in cut:
        assert after[n].state == TrialState.FAIL and interrupted(marks, after[n]), n
        retries = [t for t in after.values() if t.user_attrs.get("retry_of") == n]
        # The params it had been given (all of them, unless the kill came between its
        # suggestions: the retry samples the rest).
        assert len(retries) == 1 and before[n].params.items() <= retries[0].params.items(), (n, retries)
        assert retries[0].state == TrialState.COMPLETE, retries[0]

    records = json.loads((searching / "reports/search.json").read_text())
    assert sorted(r["trial"] for r in records if r["interrupted"]) == cut
    assert {r["retry_of"] for r in records if r["retry_of"] is not None} == set(cut)
    assert json.loads((searching / "reports/search_metrics.json").read_text())["search/requeued"] == len(cut)
    assert f"resumed: trials {cut} were cut off by the kill" in out.stdout

    stages, trials = search_runs(searching)
    assert len(stages) == 2  # the killed stage's run, and the rerun's
    rerun = trials[trials["tags.mlflow.parentRunId"] == stages.iloc[-1]["run_id"]]
    logged = set(rerun["tags.kiln.search.trial"].astype(int))
    assert not logged & set(done), (logged, done)
    assert logged == {t.number for t in finished} - set(done)
    # Checked last, so that the resume is checked whatever the kill left behind.
    assert not left_behind, f"kill -9 of the stage left these running: {left_behind}"


@pytest.mark.slow
def test_a_search_on_a_dask_cluster_spreads_trials_over_its_workers(searching, monkeypatch):
    """search.scheduler names a two-worker LocalCluster; each worker's first trial takes
    seconds (its imports), so both get one. Workers and the stage share the session's
    Prefect API: the workers inherit the test's environment when the cluster starts."""
    monkeypatch.setenv("DASK_LOGGING__DISTRIBUTED", "warning")
    from distributed import LocalCluster

    api = shared_api()
    with monkeypatch.context() as started:
        started.setenv("PREFECT_API_URL", api["PREFECT_API_URL"])
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0")
    try:
        set_params(searching, search={"families": ["classical"], "scheduler": cluster.scheduler_address})
        out = search(searching, **api)
    finally:
        cluster.close()
    records = json.loads((searching / "reports/search.json").read_text())
    assert len(records) == 4 and all(r["state"] == "COMPLETE" for r in records), records
    workers = {r["worker"] for r in records}
    assert len(workers) == 2 and all(w.startswith("dask:") for w in workers), workers
    _, trials = search_runs(searching)
    assert set(trials["tags.kiln.search.worker"]) == workers
    assert "workers: dask:" in out.stdout
