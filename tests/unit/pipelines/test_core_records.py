"""Records between stages: a refused version's line, the baseline a selection holds its
model to, and the floor promote reads from the evaluation."""

import json

import pytest

from components.errors import KilnError
from pipelines.core.records import Promotion
from pipelines.core.reports import Baseline, Evaluation, Explained, VariantScores
from pipelines.registry.gating import floor
from tests.support.params import shipped
from tests.support.records import selection


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


def test_a_classical_model_is_held_to_the_best_transformer_not_to_itself(tmp_path):
    classical = selection("classical", classical=0.95, search_3=0.94, onnx_fp32=0.90, onnx_teacher=0.92)
    name, why = classical.baseline()
    assert name == "onnx_teacher" and why.startswith("the selected model is classical")
    transformer = selection("onnx_fp32", classical=0.90, onnx_fp32=0.95, onnx_teacher=0.92)
    assert transformer.baseline()[0] == "classical"

    # promote.min_macro_f1: baseline is the lower end of that candidate's test interval.
    evaluation = tmp_path / "evaluation.json"
    report = _evaluation("classical", Baseline(name=name, family="transformer", why=why))
    report.write(evaluation)
    assert floor(shipped("promote"), evaluation) == (
        0.85,
        f"baseline: lower end of onnx_teacher's 95 % interval; {why}",
    )
    # A report without the baseline's scores is refused where it is read, naming the stage to rerun.
    evaluation.write_text(json.dumps({**report.model_dump(mode="json"), "variants": {}}))
    with pytest.raises(KilnError, match=r"^promote: .* not a valid Evaluation .*; rerun the evaluate stage$"):
        floor(shipped("promote"), evaluation)
    with pytest.raises(KilnError, match="which is missing; run the pipeline, or set a number"):
        floor(shipped("promote"), tmp_path / "none.json")


def _evaluation(selected: str, baseline: Baseline) -> Evaluation:
    """The least evaluation.json the gate reads: the two models' scores and intervals."""
    scores = {
        name: VariantScores(
            accuracy=0.9,
            macro_f1=(low + high) / 2,
            per_class={},
            confusion_matrix=[],
            size_mb=1.0,
            params=10,
            macro_f1_ci95=(low, high),
            accuracy_ci95=(low, high),
            latency_ms_p50_b1=1.0,
            latency_ms_p95_b1=1.0,
        )
        for name, (low, high) in {selected: (0.93, 0.97), baseline.name: (0.85, 0.95)}.items()
    }
    values = dict.fromkeys(("aopc_top", "aopc_random", "ece", "ece_scaled", "val_ece", "val_ece_scaled"), 0.0)
    explained = Explained(
        explained=selected, families={}, fitted_temperature=1.0, temperature=1.0, mean_abs_delta=0.0, **values
    )
    return Evaluation(
        test_texts=200,
        threads=1,
        selected=selected,
        selected_family="classical",
        baseline=baseline,
        excluded={},
        variants=scores,
        comparisons={},
        ratios={},
        explain=explained,
    )


def test_a_classical_model_whose_rivals_all_learned_nothing_is_held_to_the_fp32_student():
    chosen = selection("classical", classical=0.95, search_3=0.94)
    name, why = chosen.baseline()
    assert name == "onnx_fp32" and "no transformer candidate learned anything" in why
    assert chosen.baseline_family == "transformer"
