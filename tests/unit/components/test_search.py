"""The search's parts: its Pareto front, the space it samples, a trial's student, and the
params it accepts."""

import pytest

from components.errors import KilnError
from tests.support.params import shipped, shipped_params
from tests.support.repo import ROOT


def _config(**values):
    return shipped("search", enabled=True, **values)


def test_pareto_keeps_the_points_no_other_dominates():
    """Objectives are (val macro-F1 up, latency down, size down): a point is dropped only
    when another is at least as good in all three and better in one."""
    from components.search.space import DIRECTIONS, OBJECTIVES, pareto

    assert OBJECTIVES == ("val_macro_f1", "latency_ms_p50_b1", "size_mb")
    assert DIRECTIONS == ("maximize", "minimize", "minimize")
    points = {
        0: (0.90, 1.0, 5.0),  # the most accurate
        1: (0.80, 0.5, 5.0),  # faster than 0, less accurate: both stay
        2: (0.80, 0.6, 5.0),  # 1 is as accurate, as small and faster
        3: (0.90, 1.0, 6.0),  # 0 is as accurate, as fast and smaller
        4: (0.70, 2.0, 1.0),  # the smallest: stays however slow
        5: (0.70, 2.0, 1.0),  # a tie with 4: neither dominates the other
        6: (0.60, 3.0, 2.0),  # 4 beats it everywhere
    }
    assert pareto(points) == {0, 1, 4, 5}
    # Minimizing really means smaller wins: reversed, the slow point dominates the fast one.
    assert pareto({0: (0.5, 1.0, 1.0), 1: (0.5, 2.0, 1.0)}) == {0}
    assert pareto({0: (0.5, 1.0, 1.0), 1: (0.5, 1.0, 2.0)}) == {0}
    assert pareto({0: (0.4, 1.0, 1.0), 1: (0.5, 1.0, 1.0)}) == {1}
    assert pareto({7: (0.5, 1.0, 1.0)}) == {7}
    assert pareto({}) == set()


def test_suggest_returns_the_family_and_its_knobs():
    from optuna.trial import FixedTrial

    from components.search.space import suggest

    cfg = _config()
    student = {
        "layers": 2,
        "hidden": 96,
        "heads": 4,
        "intermediate": 256,
        "prune_ratio": 0.25,
        "temperature": 2.0,
        "alpha": 0.5,
        "quantization": "static",
    }
    assert suggest(FixedTrial({"family": "transformer", **student}), cfg) == ("transformer", student)
    point = {"analyzer": "char", "c": 3.0, "max_features": 5000}
    assert suggest(FixedTrial({"family": "classical", **point}), cfg) == ("classical", point)

    # One family is not sampled (no `family` param), and a range with low == high is a
    # constant, not a suggestion: FixedTrial would raise on a name it was not given.
    only = _config(
        families=["classical"],
        space={
            "classical": {
                "c": {"low": 2.0, "high": 2.0, "log": False},
                "max_features": {"low": 100, "high": 900, "log": False},
            }
        },
    )
    assert suggest(FixedTrial({"analyzer": "word", "max_features": 300}), only) == (
        "classical",
        {"analyzer": "word", "c": 2.0, "max_features": 300},
    )


@pytest.mark.parametrize(
    "hidden, heads, expected",
    [(96, 4, 4), (64, 3, 2), (96, 5, 4), (30, 4, 3), (16, 1, 1), (9, 4, 3), (17, 4, 1)],
)
def test_student_config_takes_the_largest_head_count_that_divides_the_width(hidden, heads, expected):
    from components.search.spec import TrialSpec, student_config

    # student_config reads only the sampled params: the rest of a spec is a worker's business.
    spec = TrialSpec.model_construct(params={"layers": 1, "hidden": hidden, "heads": heads, "intermediate": 32})
    size = student_config(spec)
    assert size.heads == expected and size.hidden == hidden and size.layers == 1 and size.intermediate == 32


@pytest.mark.parametrize(
    "search, message",
    [
        ({"workers": 0}, r"search: workers must be auto or at least 1, got 0"),
        ({"workers": "many"}, r"search\.workers"),
        ({"n_trials": 0}, r"search\.n_trials: Input should be greater than or equal to 1"),
        ({"n_trial": 4}, r"search\.n_trial: unknown key"),
        ({"space": {"transformer": {"dropout": [0.1]}}}, r"search\.space\.transformer\.dropout: unknown key"),
        (
            {"space": {"transformer": {"prune_ratio": {"low": 0.5, "high": 1.2}}}},
            r"search\.space\.transformer: prune_ratio must lie in \[0, 1\)",
        ),
        (
            {"space": {"transformer": {"alpha": {"low": 0.8, "high": 0.2}}}},
            r"search\.space\.transformer\.alpha: low \(0\.8\) is above high \(0\.2\)",
        ),
        (
            {"space": {"classical": {"c": {"low": 0, "high": 1, "log": True}}}},
            r"search\.space\.classical\.c: a log range must start above 0",
        ),
        ({"families": ["classical", "classical"]}, r"search: families lists a family twice"),
        ({"families": ["svm"]}, r"search\.families\.0"),
    ],
)
def test_bad_search_params_are_named(search, message):
    from pipelines.core.params import parse

    with pytest.raises(KilnError, match=message):
        parse(shipped_params(search=search), "params.yaml")


def test_the_shipped_search_params_are_off_and_valid():
    """Off by default (the stage then costs nothing); the profile turns it on."""
    import yaml

    from pipelines.core.params import parse

    params = parse(yaml.safe_load((ROOT / "params.yaml").read_text()), "params.yaml")
    assert params.search.enabled is False and params.search.scheduler is None
    profile = yaml.safe_load((ROOT / "profiles/search.yaml").read_text())
    assert profile["search"]["enabled"] is True
