"""Every stage end to end on the bundled corpus: `dvc repro`, then `kiln run`."""

import json
import re
import subprocess

import mlflow
import pandas as pd
import pytest
import yaml

from tests.support.params import set_params
from tests.support.repo import BIN, ROOT, kiln, run
from tests.support.tiny import TINY_TRAINING

pytestmark = pytest.mark.slow


STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
FORCED = ["ingest", "validate", "split", "augment", "tokenize"]


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


def test_dvc_repro_then_kiln_run(repo, tmp_path):
    # The bundled corpus, with the model shrunk and its training cut short so it takes seconds.
    set_params(repo, **TINY_TRAINING)
    short = {"loop": {"max_steps": 20, "val_every_steps": 10}}
    set_params(repo, finetune=short, distill=short, prune=short, classical={"c": [1.0]})
    set_params(repo, explain={"aopc_texts": 20, "max_misclassified": 10})
    dvc = str(BIN / "dvc")
    first = run([dvc, "repro"], repo)
    assert first.returncode == 0, first.stdout + first.stderr
    lock = (repo / "dvc.lock").read_text()
    expected = lock_without_docs(repo)
    for name in ("raw/dataset.parquet", "validated/dataset.parquet", "split/test.parquet", "augmented/train.parquet"):
        assert (repo / "data" / name).exists(), name
    assert json.loads((repo / "reports/validation.json").read_text())["duplicates"]["rows"] == 98

    # One parent run for the execution, one child per stage, each with DVC hashes.
    found = runs(repo)
    parents = found[found["tags.mlflow.parentRunId"].isna()]
    assert len(parents) == 1 and parents["tags.kiln.trigger"].iloc[0] == "dvc repro"
    children = found[found["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]]
    assert sorted(children["tags.mlflow.runName"]) == sorted(STAGES)
    assert children["tags.dvc.out.data/raw/dataset.parquet"].notna().any()
    assert (children["tags.git.commit"].str.len() == 40).all()

    # The first run registers version 1 and, with no champion, the floors promote it.
    promotion = json.loads((repo / "reports/promotion.json").read_text())
    assert promotion["promoted"] and promotion["champion"] == "1"
    # ...and the audit trail records the decision, under `dvc repro` as under `kiln run`.
    trail = [json.loads(line) for line in (repo / ".kiln/audit.jsonl").read_text().splitlines()]
    assert [(e["action"], e["model"], e["version"]) for e in trail] == [("promote", "kiln-bbc-news", "1")]
    report = json.loads((repo / "reports/evaluation.json").read_text())
    evaluation = report["variants"]
    assert set(evaluation) == {"teacher", "student", "pruned", "onnx_fp32", "onnx_int8", "onnx_teacher", "classical"}
    for v in evaluation.values():  # every compared number carries its interval
        assert v["macro_f1_ci95"][0] <= v["macro_f1"] <= v["macro_f1_ci95"][1]
    selection = json.loads((repo / "reports/selection.json").read_text())
    assert report["selected"] == selection["selected"] in selection["candidates"]
    assert set(report["comparisons"]) == {
        f"selected_vs_{report['baseline']['family']}",
        "selected_vs_teacher",
        "int8_vs_teacher",
    }
    explained = report["explain"]
    assert set(explained["families"]) == {"transformer", "classical"} and explained["temperature"] > 0
    dom, requested = in_a_browser(repo / "reports/explanations.html", tmp_path)
    assert dom.count("<svg") == 2 and "Reliability diagrams" in dom  # before and after temperature scaling
    assert re.search(r'<span class="[pn][1-5]"', dom), "no highlighted word"  # misclassified texts, highlighted
    assert not [url for url in requested if not url.startswith("file:") and not CHROMIUM_OWN.search(url)]
    lineage = kiln("lineage", "1", cwd=repo)
    assert lineage.returncode == 0, lineage.stdout + lineage.stderr
    quantized = next(o["md5"] for o in yaml.safe_load(lock)["stages"]["quantize"]["outs"])
    assert quantized in lineage.stdout and "validation   passed" in lineage.stdout
    assert "0 expectations failed" in lineage.stdout
    predicted = kiln("predict", "Shares in the bank rose after its profits beat forecasts.", cwd=repo)
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    assert json.loads(predicted.stdout.splitlines()[-1])["label"] in evaluation["teacher"]["per_class"]
    explained = kiln("explain", "--json", "Shares in the bank rose after its profits beat forecasts.", cwd=repo)
    assert explained.returncode == 0, explained.stdout + explained.stderr
    words = json.loads(explained.stdout)[0]["words"]
    assert [w["word"] for w in words][:3] == ["Shares", "in", "the"] and all("score" in w for w in words)
    # The second call reads the champion cached by the first, and says the same.
    assert (repo / ".kiln/cache/champion.json").is_file()
    cached = kiln("explain", "--json", "Shares in the bank rose after its profits beat forecasts.", cwd=repo)
    assert cached.returncode == 0 and cached.stdout == explained.stdout

    # Nothing changed: nothing reruns and dvc.lock stays as it was.
    again = run([dvc, "repro"], repo)
    assert again.returncode == 0
    assert again.stdout.count("didn't change, skipping") == len(STAGES)
    assert (repo / "dvc.lock").read_text() == lock
    assert len(runs(repo)) == len(found)

    out = kiln("run", cwd=repo)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("up to date") == len(STAGES)
    assert (repo / "dvc.lock").read_text() == lock
    assert len(runs(repo)) == len(found)

    # A param change makes augment stale, and `kiln status` says why.
    set_params(repo, augment={"alpha": 0.2})
    status = kiln("status", cwd=repo)
    assert "augment:\n  changed deps: params.yaml (augment modified)" in status.stdout
    assert "finetune:\n  downstream of augment" in status.stdout
    assert "pretrain" not in status.stdout

    # `kiln run --force` reruns the stages in one Prefect flow and leaves dvc.lock as
    # `dvc repro` did (the data half and tokenizer: training stages would only repeat it
    # at a cost in test time).
    set_params(repo, augment={"alpha": 0.1})
    forced = kiln("run", "--force", "tokenize", "augment", cwd=repo)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert forced.stdout.count(" ran ") == len(FORCED)
    assert "overhead" in forced.stdout
    assert lock_without_docs(repo) == expected
    latest = runs(repo)
    flows = latest[latest["tags.kiln.trigger"] == "kiln run"]
    parent = flows[flows["tags.mlflow.parentRunId"].isna()]
    assert len(parent) == 1
    assert parent["tags.prefect.flow_run_id"].notna().all()
    assert (flows[flows["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]["status"] == "FINISHED").sum() == len(
        FORCED
    )
