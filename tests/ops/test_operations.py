"""Kiln in operation on real servers: PostgreSQL behind `kiln up`'s Prefect and MLflow
servers, an S3 server holding MLflow's artifacts and the DVC remote, the `retrain`
deployment served by `kiln serve` and triggered through Prefect's `run_deployment`, the
results read back from the databases and the bucket themselves."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
import requests
import yaml
from sqlalchemy.engine import make_url

from tests.support import postgres, s3
from tests.support.data import drifted_batch, good_batch
from tests.support.params import shipped
from tests.support.repo import BIN, ROOT, clean_env, copy_repo, kiln, kiln_here
from tests.support.tiny import incoming_repo

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TRIGGER = ROOT / "tests/support/trigger.py"


@pytest.fixture(scope="module")
def database():
    with postgres.server() as url:
        yield url


@pytest.fixture
def bucket(monkeypatch):
    """An S3 endpoint with bucket `kiln`; its credentials in the environment, as on a
    machine set up for MinIO (infra/README.md)."""
    for key, value in {**s3.CREDENTIALS, **s3.REGION}.items():
        monkeypatch.setenv(key, value)
    with s3.server() as endpoint:
        yield endpoint


def second_clone(repo: Path, clone: Path, bucket: str) -> None:
    """What a teammate's machine does with the repository after a retrain: clone it, pull
    the data from the S3 remote, find every stage up to date, and rebuild the split to the
    bytes dvc.lock names."""
    git = ["git", "-c", "user.name=kiln-test", "-c", "user.email=test@kiln.invalid"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "retrained"], cwd=repo, check=True)
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    dvc = str(BIN / "dvc")
    pulled = subprocess.run([dvc, "pull"], cwd=clone, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert (clone / "data/processed/2026-11-22.csv").is_file() and (clone / "models/model.int8.onnx").is_file()
    status = subprocess.run([dvc, "status"], cwd=clone, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert "Data and pipelines are up to date." in status.stdout, status.stdout + status.stderr
    rebuilt = subprocess.run(
        [dvc, "repro", "--force", "--single-item", "split"],
        cwd=clone,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert subprocess.run(["git", "diff", "--exit-code", "dvc.lock"], cwd=clone).returncode == 0


def query(url: str, sql: str, database: str | None = None) -> list[tuple]:
    parts = make_url(url)
    with (
        psycopg2.connect(
            host=parts.host,
            port=parts.port,
            user=parts.username,
            password=parts.password,
            dbname=database or parts.database,
        ) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)
        return cursor.fetchall()


def trigger(repo: Path, count: int, env: dict) -> list[dict]:
    out = subprocess.run(
        [sys.executable, str(TRIGGER), str(count), "600"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=700,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_for_deployment(env: dict, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "being served" in log.read_text():
            return
        time.sleep(1)
    pytest.fail("kiln serve did not start serving:\n" + log.read_text()[-3000:])


def published(repo: Path, prefect: str, mlflow: str, auth: tuple[str, str]) -> None:
    """The retrain's pipeline run as a team's tools read it, through the servers' REST APIs.
    MLflow: every run carries its user, source and commit; the parent run the headline
    figures; the registered version's logged model the test figures, measured on the split
    whose DVC hash they name, and its run the three splits as datasets. Prefect: the flow
    run named as its MLflow run, a table of the candidates, the decision in markdown, links
    to the MLflow run and the version, and a `kiln.model.promoted` event with the version as
    its resource."""

    def mlflow_api(method: str, path: str, **body):
        call = requests.get if method == "GET" else requests.post
        options = {"params": body} if method == "GET" else {"json": body}
        answer = call(f"{mlflow}/api/2.0/mlflow/{path}", auth=auth, timeout=30, **options)
        assert answer.status_code == 200, (path, answer.text)
        return answer.json()

    name = yaml.safe_load((repo / "params.yaml").read_text())["tracking"]["experiment"]
    experiment = mlflow_api("GET", "experiments/get-by-name", experiment_name=name)["experiment"]["experiment_id"]
    found = mlflow_api("POST", "runs/search", experiment_ids=[experiment], max_results=500)["runs"]
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in found]
    assert all(t["mlflow.user"] and t["mlflow.source.name"] and len(t["mlflow.source.git.commit"]) == 40 for t in tags)
    parents = [run for run, t in zip(found, tags, strict=True) if "mlflow.parentRunId" not in t]
    pipeline = next(run for run in parents if "selected/test_macro_f1" in {m["key"] for m in run["data"]["metrics"]})
    headline = {m["key"]: m["value"] for m in pipeline["data"]["metrics"]}
    assert headline["promote/promoted"] == 1 and headline["selected/val_macro_f1"] > 0

    version = mlflow_api("GET", "model-versions/get", name="kiln-mine", version="1")["model_version"]
    model = mlflow_api("GET", f"logged-models/{version['source'].removeprefix('models:/')}")["model"]
    figures = {m["key"]: m for m in model["data"]["metrics"]}
    split = {o["path"]: o["md5"] for o in yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["split"]["outs"]}
    assert figures["selected/test_macro_f1"]["dataset_digest"] == split["data/split/test.parquet"]
    inputs = mlflow_api("GET", "runs/get", run_id=version["run_id"])["run"]["inputs"]["dataset_inputs"]
    assert {(d["dataset"]["name"], d["dataset"]["digest"]) for d in inputs} == {
        (part, split[f"data/split/{part}.parquet"]) for part in ("train", "val", "test")
    }

    wanted = {"artifacts": {"key": {"like_": "kiln-"}}}
    found = requests.post(f"{prefect}/artifacts/filter", json=wanted, auth=auth, timeout=30).json()
    # Prefect keeps a link artifact as the markdown of its link.
    assert {a["key"]: a["type"] for a in found} == {
        "kiln-candidates": "table",
        "kiln-promotion": "markdown",
        "kiln-mlflow-run": "markdown",
        "kiln-model-version": "markdown",
    }, found
    data = {a["key"]: a["data"] for a in found}
    assert "(selected)" in data["kiln-candidates"] and "promoted to champion" in data["kiln-promotion"]
    assert data["kiln-model-version"] == f"[kiln-mine version 1]({mlflow}/#/models/kiln-mine/versions/1)"
    assert pipeline["info"]["run_id"] in data["kiln-mlflow-run"]
    flow_run = requests.get(f"{prefect}/flow_runs/{found[0]['flow_run_id']}", auth=auth, timeout=30).json()
    assert flow_run["name"] == pipeline["info"]["run_name"]
    # The event persister writes in batches: a few seconds after the run.
    deadline, events = time.monotonic() + 60, []
    while not events and time.monotonic() < deadline:
        wanted = {"filter": {"event": {"prefix": ["kiln.model."]}}}
        events = requests.post(f"{prefect}/events/filter", json=wanted, auth=auth, timeout=30).json()["events"]
        time.sleep(1)
    assert [(e["event"], e["resource"]["prefect.resource.id"]) for e in events] == [
        ("kiln.model.promoted", "kiln.model.kiln-mine.1")
    ]


def roles(repo: Path, database: str, mlflow_port: int, prefect_port: int, password: str) -> None:
    """kiln up's servers refuse anonymous requests; a reader reads but cannot move the
    champion; a promoter can."""
    mlflow, prefect = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}/api"
    assert requests.get(f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=5", timeout=30).status_code == 401
    assert requests.post(f"{prefect}/flows/filter", json={}, timeout=30).status_code == 401
    for name, role, secret in (("rita", "reader", "rita-reads-a-lot"), ("pete", "promoter", "pete-promotes-it")):
        added = subprocess.run(
            [str(BIN / "kiln"), "users", "add", name, "--role", role, "--password-stdin"],
            cwd=repo,
            env=clean_env(),
            input=secret + "\n",
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert added.returncode == 0, added.stdout + added.stderr
    listed = kiln_here("users", "list", cwd=repo)
    assert [line.split() for line in listed.stdout.splitlines()] == [
        ["admin", "admin"],
        ["pete", "promoter"],
        ["rita", "reader"],
    ]
    # A second version to promote: the champion's files, registered again by the admin.
    subprocess.run(
        [
            str(BIN / "python"),
            "-c",
            "import mlflow; mlflow.register_model('models:/kiln-mine/1', 'kiln-mine')",
        ],
        env=clean_env(MLFLOW_TRACKING_URI=mlflow, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password),
        check=True,
        capture_output=True,
        timeout=300,
    )
    reader = {"MLFLOW_TRACKING_USERNAME": "rita", "MLFLOW_TRACKING_PASSWORD": "rita-reads-a-lot"}
    as_reader = ("rita", "rita-reads-a-lot")
    experiments = requests.get(
        f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=100", auth=as_reader, timeout=30
    )
    ids = [e["experiment_id"] for e in experiments.json()["experiments"]]
    runs = requests.post(
        f"{mlflow}/api/2.0/mlflow/runs/search", json={"experiment_ids": ids}, auth=as_reader, timeout=30
    )
    assert runs.status_code == 200 and runs.json()["runs"]
    assert kiln_here("history", cwd=repo, **reader).returncode == 0
    refused = kiln_here("promote", "--version", "2", "--force", "--reason", "try", cwd=repo, **reader)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "user 'rita' may not move the champion of 'kiln-mine'" in refused.stderr
    champion = "SELECT version FROM registered_model_aliases WHERE name = 'kiln-mine' AND alias = 'champion'"
    assert query(database, champion) == [(1,)]
    promoter = {"MLFLOW_TRACKING_USERNAME": "pete", "MLFLOW_TRACKING_PASSWORD": "pete-promotes-it"}
    forced = kiln_here("promote", "--version", "2", "--force", "--reason", "hotfix", cwd=repo, **promoter)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert query(database, champion) == [(2,)]


def test_scheduled_retrain_on_postgres_and_s3(database, bucket, tmp_path, webhook):
    url, notifications = webhook
    repo = incoming_repo(copy_repo(tmp_path / "kiln"), retrain={"notify": {"apprise_url": url}})
    remote = f"s3://{s3.BUCKET}/dvc"
    for setting in (["add", "-d", "store", remote], ["modify", "store", "endpointurl", bucket]):
        subprocess.run([str(BIN / "dvc"), "remote", *setting], cwd=repo, check=True, env=clean_env())
    env = clean_env(KILN_DB_URL=database)
    prefect_port, mlflow_port = postgres.free_port(), postgres.free_port()
    up = kiln(
        "up",
        "--prefect-port",
        str(prefect_port),
        "--mlflow-port",
        str(mlflow_port),
        cwd=repo,
        KILN_DB_URL=database,
        KILN_ARTIFACTS_URL=f"s3://{s3.BUCKET}/mlflow",
        MLFLOW_S3_ENDPOINT_URL=bucket,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    servers = json.loads((repo / ".kiln/servers.json").read_text())
    assert servers["backend"] == "postgresql" and servers["artifacts"] == f"s3://{s3.BUCKET}/mlflow"
    assert servers["servers"]["mlflow"]["url"] == f"http://127.0.0.1:{mlflow_port}"
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        # The child keeps its own copy of the descriptor after this block closes ours.
        serve = subprocess.Popen(
            [str(BIN / "kiln"), "serve"],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # As a script's `kiln serve &` starts it: with SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    admin = json.loads((repo / ".kiln/auth.json").read_text())
    assert (repo / ".kiln/auth.json").stat().st_mode & 0o777 == 0o600
    assert admin["password"] not in up.stdout + up.stderr
    # trigger.py is a bare Prefect client: it signs in the way a worker would.
    api = dict(
        env,
        PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api",
        PREFECT_API_AUTH_STRING=f"admin:{admin['password']}",
    )
    try:
        wait_for_deployment(api, log)
        good_batch().to_csv(repo / "data/incoming/2026-11-22.csv", index=False)

        # Two triggers together: the deployment's concurrency limit cancels the second.
        runs = trigger(repo, 2, api)
        states = sorted(r["state"] for r in runs)
        assert states == ["CANCELLED", "COMPLETED"], runs + [log.read_text()[-4000:]]
        completed = next(r for r in runs if r["state"] == "COMPLETED")
        assert "1 batch(es) learned; version 1 of 'kiln-mine' promoted to champion" in completed["message"]
        assert (repo / "data/processed/2026-11-22.csv").is_file()
        assert (repo / "data/processed/2026-11-22.csv.dvc").is_file()
        status = kiln_here("status", cwd=repo, PREFECT_API_URL=api["PREFECT_API_URL"])
        assert "Every stage is up to date." in status.stdout, status.stdout + status.stderr
        assert s3.keys(bucket, "dvc/files/md5/"), "the run pushed to the DVC remote"

        # What the databases hold: the flow runs in Prefect's, the registry in MLflow's.
        flow_runs = query(
            database,
            "SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id WHERE f.name = 'kiln-retrain'",
            make_url(database).database + "_prefect",
        )
        assert sorted(s for _, s in flow_runs) == ["CANCELLED", "COMPLETED"]
        aliases = dict(query(database, "SELECT alias, version FROM registered_model_aliases WHERE name = 'kiln-mine'"))
        assert aliases == {"champion": 1}  # promoted, version 1 awaits no gate: no challenger
        prefect_db = make_url(database).database + "_prefect"
        published(repo, api["PREFECT_API_URL"], f"http://127.0.0.1:{mlflow_port}", ("admin", admin["password"]))
        runs_table = query(database, "SELECT name, status FROM runs WHERE name LIKE 'retrain %'")
        assert [status for _, status in runs_table] == ["FINISHED"]
        # The run's summary: a Prefect markdown artifact and a file of its MLflow run.
        summaries = query(
            database,
            "SELECT type, data FROM artifact WHERE key = 'retrain-summary'",
            make_url(database).database + "_prefect",
        )
        assert [kind for kind, _ in summaries] == ["markdown"]
        summary = summaries[0][1]
        assert "version 1 of 'kiln-mine' promoted to champion" in summary and "2026-11-22.csv" in summary
        # MLflow's artifacts are in the bucket, through the server: the summary, the
        # registered model's ONNX file, and nothing on the local disk.
        stored = s3.keys(bucket, "mlflow/")
        assert len([key for key in stored if key.endswith("retrain/summary.md")]) == 1, stored
        assert [key for key in stored if key.endswith(".onnx")], stored
        assert not (repo / "mlflow/artifacts").exists()
        artifacts = kiln_here("lineage", "1", cwd=repo)
        assert artifacts.returncode == 0, artifacts.stderr
        second_clone(repo, tmp_path / "clone", bucket)

        # A drifted batch: quarantined, a notification, and the champion stays.
        drifted_batch().to_csv(repo / "data/incoming/2026-11-23.csv", index=False)
        runs = trigger(repo, 1, api)
        assert runs[0]["state"] == "FAILED" and "quarantined" in runs[0]["message"]
        assert list((repo / "data/quarantine").glob("*-2026-11-23.csv/report.json"))
        assert (
            dict(query(database, "SELECT alias, version FROM registered_model_aliases WHERE name = 'kiln-mine'"))[
                "champion"
            ]
            == 1
        )
        # The failure hook runs after the run is final: its notification may come just after.
        deadline = time.monotonic() + 60
        while not any("quarantined" in n["title"] for n in notifications) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert any("quarantined" in n["title"] and "drift" in n["message"] for n in notifications)

        # The audit trail holds each of these, chained, and a copy in MLflow's database.
        trail = [json.loads(line) for line in (repo / ".kiln/audit.jsonl").read_text().splitlines()]
        assert [(e["action"], e["version"]) for e in trail] == [
            ("batch-learned", None),
            ("promote", "1"),
            ("batch-quarantined", None),
        ]
        assert trail[0]["detail"]["file"] == "data/processed/2026-11-22.csv" and trail[0]["data"].startswith("sha256:")
        assert trail[1]["data"] and all(e["who"] for e in trail)
        copies = query(database, "SELECT value FROM tags WHERE key = 'audit.hash'")
        assert sorted(v for (v,) in copies) == sorted(e["hash"] for e in trail)
        listed = kiln_here("audit", "--action", "promote", cwd=repo)
        assert "kiln-mine v1" in listed.stdout and "batch-learned" not in listed.stdout

        roles(repo, database, mlflow_port, prefect_port, admin["password"])
        # The admin password lives in .kiln/auth.json alone: no log, param, tag or artifact has it.
        leaks = [
            p
            for p in repo.rglob("*")
            if p.is_file() and p.name != "auth.json" and admin["password"].encode() in p.read_bytes()
        ]
        assert leaks == []
        secret = f"'%{admin['password']}%'"
        for table in ("params", "tags"):
            assert query(database, f"SELECT count(*) FROM {table} WHERE value LIKE {secret}") == [(0,)], table
        prefect_db = make_url(database).database + "_prefect"
        assert query(database, f"SELECT count(*) FROM log WHERE message LIKE {secret}", prefect_db) == [(0,)]
        trail = [json.loads(line) for line in (repo / ".kiln/audit.jsonl").read_text().splitlines()]
        assert [(e["action"], e["who"], e["version"]) for e in trail[3:]] == [
            ("user-add", "admin", None),
            ("user-add", "admin", None),
            ("denied", "rita", "2"),
            ("force", "pete", "2"),
        ]
        # A reader writes nothing to the server, their refused attempt included: it stays in the log.
        copies = query(database, "SELECT value FROM tags WHERE key = 'audit.hash'")
        copied = sorted(e["hash"] for e in trail if e["who"] != "rita")
        assert sorted(v for (v,) in copies) == copied, "every entry but the reader's has its copy"
        intact = kiln_here("audit", "--verify", cwd=repo)
        assert intact.returncode == 0 and "audit log intact: 7 entries" in intact.stdout, intact.stdout + intact.stderr
        # An edited entry breaks its hash; a deleted last entry only the server's copy shows.
        text = (repo / ".kiln/audit.jsonl").read_text()
        (repo / ".kiln/audit.jsonl").write_text(text.replace('"why": "try"', '"why": "asked nicely"'))
        edited = kiln_here("audit", "--verify", cwd=repo)
        assert edited.returncode == 1 and "entry 6: its content does not match its hash" in edited.stderr
        (repo / ".kiln/audit.jsonl").write_text("".join(json.dumps(e) + "\n" for e in trail[:-1]))
        cut = kiln_here("audit", "--verify", cwd=repo)
        assert cut.returncode == 1 and "entry 7: recorded in the tracking server but missing" in cut.stderr
    finally:
        serve.terminate()
        try:
            # Pausing the schedule is a few API calls; on a machine busy with other tests
            # (the suite's second worker and a training run beside it) it took over 60 s.
            ended = serve.wait(timeout=180)
        finally:
            # A runner that did not stop in time must not leave kiln up's servers behind
            # for the tests that run after this one.
            if serve.poll() is None:
                serve.kill()
            down = kiln("down", cwd=repo)
    # SIGTERM stops it as Ctrl-C does, its schedule paused on the way out.
    assert ended == 130 and "All deployments have been paused" in log.read_text(), log.read_text()[-3000:]
    assert down.returncode == 0 and "stopped: prefect, mlflow" in down.stdout
    assert not (repo / ".kiln/servers.json").exists()


def test_the_search_study_lives_on_postgres_beside_mlflow(database, monkeypatch, tmp_path):
    """With KILN_DB_URL (as under `kiln up`), the search's Optuna study goes to the same
    server, in a database of its own (MLflow and Optuna each keep an alembic_version
    table), made if missing; a study is resumed until its search ends, then the next
    attempt starts."""
    import optuna

    from pipelines.search.study import Study, storage_url

    monkeypatch.setenv("KILN_DB_URL", database)
    url = storage_url(tmp_path, "auto")
    name = make_url(database).database + "_search"
    assert make_url(url).database == name
    first = Study("kiln-search-test", url, shipped("search"))
    assert first.name == "kiln-search-test-1"
    first.study.tell(first.study.ask(), [0.9, 1.5, 2.0])
    again = Study("kiln-search-test", url, shipped("search"))
    assert again.name == "kiln-search-test-1" and again.finished() == 1
    again.end()
    assert Study("kiln-search-test", url, shipped("search")).name == "kiln-search-test-2"
    assert optuna.load_study(study_name="kiln-search-test-1", storage=url).trials[0].values == [0.9, 1.5, 2.0]
    assert query(database, "SELECT count(*) FROM studies", name) == [(2,)]
