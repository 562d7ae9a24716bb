"""What a `kiln run` publishes to Prefect: its candidates, its decision, its final message;
and a registered version's tags read alike whether written under kiln.* or before."""

from types import SimpleNamespace

from pipelines.core.records import Promotion
from pipelines.registry.versions import lineage
from pipelines.run import publish
from tests.support.records import selection


def test_each_candidate_is_a_row_with_its_interval_and_the_selected_one_is_marked():
    chosen = selection("onnx_int8", onnx_int8=0.9612, classical=0.95)
    rows = publish.candidates(chosen, None)
    assert [r["candidate"] for r in rows] == ["onnx_int8 (selected)", "classical"]
    assert rows[0]["val macro-F1 [95 % CI]"] == "0.9612 [0.9112, 1.0112]"
    assert rows[0]["test macro-F1 [95 % CI]"] == "-"  # evaluate did not score this selection


def test_the_decision_names_every_check_and_the_final_message_says_what_ran():
    refused = Promotion(
        model_name="kiln-x",
        version="3",
        promoted=False,
        champion="2",
        reasons=["PASS floor: 0.95 >= 0.90", "FAIL vs_champion: -0.03 below tolerance"],
        metrics={},
    )
    text = publish.decision(refused)
    assert text.startswith("# version 3 of 'kiln-x' registered, not promoted (champion stays version 2)")
    assert "- FAIL vs_champion: -0.03 below tolerance" in text and "- PASS floor" in text
    assert publish.outcome(["ran", "up to date", "ran"], None) == "2 of 3 stages ran"
    assert publish.outcome(["up to date"], None) == "pipeline up to date: no stage ran"
    assert publish.outcome(["ran", "restored"], None) == "1 of 2 stages ran, 1 restored from DVC's run-cache"
    assert publish.outcome(["restored", "up to date"], None) == "1 of 2 stages restored from DVC's run-cache"
    assert publish.outcome(["ran"], refused).startswith("1 of 1 stages ran; version 3 of 'kiln-x' registered")


def test_a_versions_tags_read_alike_under_kiln_and_as_an_older_kiln_wrote_them():
    now = {"kiln.git.commit": "abc", "kiln.parent_run_id": "p1", "kiln.gate.export_agreement": "1.0"}
    before = {"git.commit": "abc", "mlflow.parent_run_id": "p1", "gate.export_agreement": "1.0"}
    for tags in (now, before):
        found = lineage(SimpleNamespace(tags=tags))
        assert (found["git.commit"], found["parent_run_id"], found["gate.export_agreement"]) == ("abc", "p1", "1.0")
