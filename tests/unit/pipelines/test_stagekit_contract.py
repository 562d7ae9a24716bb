"""The stage contract: the params a stage may read, and how it says an input is missing."""

import pytest

from components.errors import KilnError
from pipelines.core.params import load
from tests.support.repo import ROOT
from tests.support.stages import evaluate_context


def test_a_stage_reads_only_the_params_dvc_yaml_lists_for_it():
    ctx = evaluate_context(("evaluate", "hardware.seed"))
    assert ctx.params.evaluate.threads == 1 and ctx.params.hardware.seed == 42
    assert ctx.params.paths.reports == "reports"  # interpolated into every stage's deps and outs
    with pytest.raises(KilnError, match="stage 'evaluate' reads params section 'finetune', which dvc.yaml"):
        _ = ctx.params.finetune
    shipped = load(ROOT / "params.yaml").evaluate.model_dump(mode="json")
    assert ctx.section_params() == {"evaluate": shipped, "hardware.seed": 42}


def test_a_missing_input_names_the_stage_that_makes_it(tmp_path):
    ctx = evaluate_context(("evaluate",), tmp_path)
    with pytest.raises(
        KilnError,
        match=r"^evaluate: tokenizer models/onnx/tokenizer.json is missing; the export "
        r"stage makes it \(kiln run export\)$",
    ):
        ctx.input("models/onnx/tokenizer.json", "tokenizer")
