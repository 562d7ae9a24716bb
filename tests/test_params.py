import pytest

from components.errors import KilnError
from pipelines.core.params import load, parse
from tests.conftest import ROOT


def test_shipped_params_are_valid():
    params = load(ROOT / "params.yaml")
    assert params.ingest.source == "incoming" and params.ingest.incoming.base == "bbc"
    assert params.validate_.max_duplicate_rate == 0.05


def test_the_config_models_defaults_are_params_yaml():
    """params.yaml is the documented knob file: a section left out of it (or a model built
    in code, as the search trial's recipe is) behaves as params.yaml says."""
    from pipelines.core.params import Params

    def differences(shipped, default, at=""):
        if isinstance(shipped, dict) and isinstance(default, dict):
            for key in shipped.keys() | default.keys():
                yield from differences(shipped.get(key), default.get(key), f"{at}.{key}")
        elif shipped != default:
            yield f"{at[1:]}: params.yaml {shipped!r}, model {default!r}"

    assert not sorted(differences(load(ROOT / "params.yaml").model_dump(), Params().model_dump()))


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_every_shipped_profile_merges_into_valid_params(profile, tmp_path):
    import shutil

    from pipelines.core.profiles import apply

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    load(apply(tmp_path, profile))


def test_unknown_key_is_named():
    with pytest.raises(KilnError, match=r"ingest\.sourse: unknown key"):
        parse({"ingest": {"sourse": "bbc"}}, "params.yaml")


def test_unknown_section_is_named():
    with pytest.raises(KilnError, match=r"valdiate: unknown key"):
        parse({"valdiate": {}}, "params.yaml")


def test_value_out_of_range_is_named():
    with pytest.raises(KilnError, match=r"split\.test"):
        parse({"split": {"test": 1.5}}, "params.yaml")
    with pytest.raises(KilnError, match=r"validate: .*min_chars is larger than max_chars"):
        parse({"validate": {"min_chars": 10, "max_chars": 5}}, "params.yaml")


def test_bad_choice_is_named():
    with pytest.raises(KilnError, match=r"ingest\.source"):
        parse({"ingest": {"source": "s3"}}, "params.yaml")


def test_broken_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("ingest: [unclosed\n")
    with pytest.raises(KilnError, match="not valid YAML"):
        load(path)


def test_student_must_be_smaller_than_teacher():
    with pytest.raises(KilnError, match=r"distill\.student \(3 layers, 128 wide\) must have fewer layers"):
        parse({"distill": {"student": {"layers": 3}}}, "params.yaml")


def test_pruning_ratio_of_one_is_refused():
    with pytest.raises(KilnError, match=r"prune\.head_ratio"):
        parse({"prune": {"head_ratio": 1}}, "params.yaml")


def test_max_steps_below_the_validation_interval_is_refused_when_params_are_read():
    # Early stopping and the best checkpoint on val/macro_f1 need a validation to happen.
    for section in ("finetune", "distill", "prune", "search"):
        with pytest.raises(KilnError, match=rf"{section}\.loop: val_every_steps \(5\) is more than max_steps \(2\)"):
            parse({section: {"loop": {"max_steps": 2, "val_every_steps": 5}}}, "params.yaml")
    # 0 trains nothing (the pretrained profile's pretrain), and pretrain monitors nothing.
    parse({"finetune": {"loop": {"max_steps": 0, "val_every_steps": 5}}}, "params.yaml")
    parse({"pretrain": {"loop": {"max_steps": 2, "val_every_steps": 5}}}, "params.yaml")


def test_a_fit_that_would_end_before_validating_is_refused_before_it_starts():
    from components.text.config import LoopConfig, check_validates

    # Validation at an epoch's end (val_every_steps null): an epoch of 12 steps needs 12.
    short = LoopConfig(max_epochs=2, max_steps=2)
    with pytest.raises(KilnError, match=r"finetune\.loop: training ends at step 2 .*an epoch's end, step 12"):
        check_validates("finetune", short, short, 12)
    for fits in (LoopConfig(max_epochs=2, max_steps=12), LoopConfig(max_epochs=2, max_steps=0)):
        check_validates("finetune", fits, fits, 12)
    # No step limit, but too few epochs for a fixed interval.
    few = LoopConfig(max_epochs=2, val_every_steps=30)
    with pytest.raises(KilnError, match=r"training ends at step 24 .*\(val_every_steps 30\)"):
        check_validates("finetune", few, few, 12)
    # Beyond full_epochs_rows, training.budgeted sets the steps.
    budgeted = few.model_copy(update={"max_steps": 20})
    with pytest.raises(KilnError, match=r"training ends at step 20 \(max_steps -1, 20 by the budget"):
        check_validates("finetune", few, budgeted, 500)
