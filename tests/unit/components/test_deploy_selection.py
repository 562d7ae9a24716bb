"""Choosing the candidate to ship on val: budgets, ties within the interval, a pinned family;
and the baseline the chosen one is compared with and floored by."""

import json

import pytest

from components.deploy.selection import Measured, choose, learned
from components.errors import KilnError
from pipelines.core.records import Candidate, Selection
from pipelines.core.reports import Baseline, Evaluation, Explained, VariantScores
from pipelines.registry.gating import floor
from tests.support.params import shipped

TRUTH = [i % 4 for i in range(200)]


def predictions(wrong: int) -> list[int]:
    """TRUTH with the first `wrong` texts mislabelled."""
    return [(t + 1) % 4 if i < wrong else t for i, t in enumerate(TRUTH)]


def pick(measured, family="any", latency=50.0, size=10.0):
    return choose(TRUTH, measured, family, latency, size, resamples=1000, seed=0)


def test_the_best_on_val_wins_when_clearly_better():
    measured = {
        "onnx_int8": Measured("transformer", predictions(2), 1.0, 1.2),
        "classical": Measured("classical", predictions(40), 0.5, 0.9),
    }
    choice = pick(measured)
    assert choice.selected == "onnx_int8" and "the best on val" in choice.reason
    assert not choice.candidates["classical"].tied_with_best


def test_a_tie_within_the_interval_goes_to_the_smaller_model():
    # 2 and 3 wrong of 200: a difference no val split of this size can resolve.
    measured = {
        "onnx_teacher": Measured("transformer", predictions(2), 9.0, 15.0),
        "onnx_int8": Measured("transformer", predictions(3), 1.0, 1.2),
    }
    choice = pick(measured, size=20.0)
    assert choice.selected == "onnx_int8"
    assert "tied with the best, onnx_teacher" in choice.reason and "smaller (1.20 MB against 15.00 MB)" in choice.reason


def test_budgets_and_a_pinned_family_are_respected():
    measured = {
        "onnx_teacher": Measured("transformer", predictions(0), 60.0, 15.0),
        "onnx_int8": Measured("transformer", predictions(30), 1.0, 1.2),
        "classical": Measured("classical", predictions(10), 0.5, 0.9),
    }
    assert pick(measured).selected == "classical"  # the teacher is over both budgets
    assert not pick(measured).candidates["onnx_teacher"].within_budgets
    pinned = pick(measured, family="transformer")
    assert pinned.selected == "onnx_int8" and "select.family pins the transformer family" in pinned.reason
    with pytest.raises(ValueError, match="no candidate of family classical"):
        choose(TRUTH, {"onnx_int8": measured["onnx_int8"]}, "classical", 50.0, 10.0, 1000, 0)


def _selection(selected: str, **val_macro_f1: float) -> Selection:
    """A selection among candidates named classical or search_* (classical family) and
    onnx_* (transformers), with these val macro-F1s; a refused INT8 left out."""

    def candidate(name: str, f1: float) -> Candidate:
        family = "transformer" if name.startswith("onnx_") else "classical"
        return Candidate(
            family=family,
            file=f"models/{name}.onnx",
            tokenizer=None,
            val_macro_f1=f1,
            val_macro_f1_ci95=(f1 - 0.05, f1 + 0.05),
            val_accuracy=f1,
            latency_ms_p95_b1=1.0,
            size_mb=1.0,
            within_budgets=True,
            tied_with_best=name == selected,
        )

    return Selection(
        family="any",
        selected=selected,
        reason="the best on val",
        val_texts=185,
        budgets={},
        candidates={name: candidate(name, f1) for name, f1 in val_macro_f1.items()},
        excluded={"onnx_int8": "refused by quantize's gate: INT8 labels 9 of 185 val texts differently"},
    )


def test_a_classical_model_is_held_to_the_best_transformer_not_to_itself(tmp_path):
    classical = _selection("classical", classical=0.95, search_3=0.94, onnx_fp32=0.90, onnx_teacher=0.92)
    name, why = classical.baseline()
    assert name == "onnx_teacher" and why.startswith("the selected model is classical")
    transformer = _selection("onnx_fp32", classical=0.90, onnx_fp32=0.95, onnx_teacher=0.92)
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


NAMES = ["a", "b", "c", "d"]


def keep_learned(measured, family="any"):
    return learned(TRUTH, measured, NAMES, "a", family, resamples=1000, seed=0)


def test_a_candidate_that_learned_nothing_is_left_out_with_the_reason():
    measured = {
        "onnx_int8": Measured("transformer", [0] * 200, 1.0, 1.2),  # always 'a', the commonest train label
        "classical": Measured("classical", predictions(40), 0.5, 0.9),
    }
    kept, excluded = keep_learned(measured)
    assert list(kept) == ["classical"]
    assert excluded == {
        "onnx_int8": "learned nothing: val macro-F1 0.100 vs 0.100 for always 'a' (difference +0.000 [+0.000, +0.000])"
    }
    assert pick(kept).selected == "classical"


def test_select_ships_nothing_when_no_candidate_learned_anything():
    measured = {
        "onnx_int8": Measured("transformer", [0] * 200, 1.0, 1.2),
        "classical": Measured("classical", [1] * 200, 0.5, 0.9),
    }
    with pytest.raises(KilnError) as refused:
        keep_learned(measured)
    assert str(refused.value) == (
        "select: no candidate learned anything: none beats always 'a' on val (macro-F1 0.100) beyond the noise of "
        "200 texts (onnx_int8 0.100, classical 0.100); nothing is shipped"
    )
    # A pinned family whose candidates all learned nothing ships nothing either.
    measured["classical"] = Measured("classical", predictions(40), 0.5, 0.9)
    with pytest.raises(KilnError, match=r"no transformer candidate \(select.family pins that family\) learned"):
        keep_learned(measured, family="transformer")


def test_a_classical_model_whose_rivals_all_learned_nothing_is_held_to_the_fp32_student():
    selection = _selection("classical", classical=0.95, search_3=0.94)
    name, why = selection.baseline()
    assert name == "onnx_fp32" and "no transformer candidate learned anything" in why
    assert selection.baseline_family == "transformer"
