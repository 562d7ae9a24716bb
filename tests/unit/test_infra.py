"""infra/: the compose file and the Prefect deployment agree with what Kiln reads."""

import re

import yaml

from pipelines.core.env import VARIABLES
from pipelines.core.params import load
from pipelines.retrain.flow import DEPLOYMENT
from tests.support.repo import ROOT

INFRA = ROOT / "infra"
# Variables an image reads for itself, by the service that runs it.
IMAGE_OWN = {"postgres": "POSTGRES_", "minio": "MINIO_ROOT_", "buckets": "MINIO_ROOT_"}


def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_compose_has_the_servers_kiln_uses():
    assert set(compose()["services"]) == {"postgres", "minio", "buckets", "mlflow", "prefect", "worker"}


def test_every_variable_in_compose_is_one_kiln_reads_and_is_documented():
    readme = (INFRA / "README.md").read_text()
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}):
            if name in IMAGE_OWN and variable.startswith(IMAGE_OWN[name]):
                continue
            assert variable in VARIABLES, f"{name}: {variable} is not a variable Kiln reads (pipelines/core/env.py)"
            assert f"`{variable}`" in readme, f"infra/README.md does not explain {variable}"


def test_kiln_services_point_at_services_of_the_compose_file():
    services = compose()["services"]
    for name in ("worker", "mlflow"):
        for variable, value in services[name]["environment"].items():
            for host in re.findall(r"://(?:[^@/]*@)?([a-z0-9-]+):\d+", str(value)):
                assert host in services, f"{name}: {variable} names host '{host}', not a service"


def test_prefect_yaml_deploys_what_kiln_serve_serves():
    params = load(ROOT / "params.yaml").retrain
    [deployment, monitor] = yaml.safe_load((INFRA / "prefect.yaml").read_text())["deployments"]
    assert monitor["name"] == "monitor" and monitor["entrypoint"] == "pipelines/monitor/flow.py:monitor"
    assert monitor["schedules"] == [{"cron": load(ROOT / "params.yaml").monitor.cron, "timezone": params.timezone}]
    assert monitor["work_pool"] == deployment["work_pool"]
    assert deployment["name"] == DEPLOYMENT
    assert deployment["entrypoint"] == "pipelines/retrain/flow.py:retrain"
    assert deployment["schedules"] == [{"cron": params.cron, "timezone": params.timezone}]
    assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert (
        deployment["work_pool"]["name"]
        == yaml.safe_load((INFRA / "docker-compose.yml").read_text())["services"]["worker"]["command"]
        .split("--pool ")[1]
        .split()[0]
    )
