"""The learned-nothing check against the majority-class predictor."""

from types import SimpleNamespace

import pytest

from pipelines.tracking import metrics


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
