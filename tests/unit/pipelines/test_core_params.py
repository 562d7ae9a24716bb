import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from components.errors import KilnError
from pipelines.core.params import load, parse
from tests.support.params import shipped, shipped_params
from tests.support.repo import ROOT


def test_shipped_params_are_valid():
    params = load(ROOT / "params.yaml")
    assert params.ingest.source == "incoming" and params.ingest.incoming.base == "bbc"
    assert params.validate_.max_duplicate_rate == 0.05


def _differences(written, loaded, at=""):
    if isinstance(written, dict) and isinstance(loaded, dict):
        for key in written.keys() | loaded.keys():
            yield from _differences(written.get(key, "<absent>"), loaded.get(key, "<absent>"), f"{at}.{key}")
    elif written != loaded:
        yield f"{at[1:]}: params.yaml {written!r}, loaded {loaded!r}"


def test_loading_params_yaml_gives_exactly_its_values():
    """params.yaml is the documented knob file: the loaded config holds its values, key
    for key, and no key it does not write."""
    written = yaml.safe_load((ROOT / "params.yaml").read_text())
    loaded = load(ROOT / "params.yaml").model_dump(mode="json", by_alias=True)
    assert sorted(_differences(written, loaded)) == []


def _defaults(model: BaseModel, written: dict, at: str = ""):
    """(key, params.yaml's value, the model's default) of every field under `model` that
    has a default and that params.yaml sets."""
    for name, field in type(model).model_fields.items():
        key, value = field.alias or name, getattr(model, name)
        if key not in written:
            continue
        if not field.is_required():
            yield f"{at}{key}", written[key], field.get_default(call_default_factory=True)
        children = value.items() if isinstance(value, dict) else [(None, value)]
        for child, inner in children:
            data = written[key] if child is None else (written[key] or {}).get(child)
            if isinstance(inner, BaseModel) and isinstance(data, dict):
                yield from _defaults(inner, data, f"{at}{key}." + (f"{child}." if child else ""))


def test_no_model_default_disagrees_with_params_yaml():
    """Knobs have no default in the models, so that params.yaml alone says their values.
    The few that keep one are needed where params.yaml is not read (`ingest.pii: mask` is
    short for the pii section's other keys as shipped; a registered version explains its
    texts without params.yaml), and those must say what params.yaml says."""
    written = yaml.safe_load((ROOT / "params.yaml").read_text())
    found = list(_defaults(load(ROOT / "params.yaml"), written))
    disagree = [
        f"{key}: params.yaml {value!r}, model default {default!r}"
        for key, value, default in found
        if to_jsonable_python(default) != to_jsonable_python(value)
    ]
    assert disagree == []
    pii = {f"ingest.pii.{key}" for key in ("policy", "entities", "phone_regions", "patterns", "deny_list", "columns")}
    assert {key for key, _, _ in found} == pii | {"explain.n_steps", "explain.max_delta", "explain.batch_size"}


def test_a_missing_key_or_section_is_named_with_the_file(tmp_path):
    params = shipped_params()
    del params["finetune"]["augmented"], params["retrain"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(KilnError) as missing:
        load(path)
    lines = ["finetune.augmented: missing key", "retrain: missing section"]
    assert str(missing.value) == f"{path}: invalid params:\n" + "\n".join(f"  {line}" for line in lines)


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_every_shipped_profile_merges_into_valid_params(profile, tmp_path):
    import shutil

    from pipelines.core.profiles import apply

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    load(apply(tmp_path, profile))


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_every_profile_as_dvc_exp_sets_gives_the_params_the_profile_gives(profile, tmp_path):
    """`kiln profile NAME --sets` for `dvc exp run -S`: DVC's own override of params.yaml
    reads them back to what merging the profile writes."""
    import shutil

    from dvc.utils.hydra import apply_overrides

    from pipelines.core.profiles import apply, sets

    for folder in ("merged", "set"):
        (tmp_path / folder).mkdir()
        shutil.copy(ROOT / "params.yaml", tmp_path / folder / "params.yaml")
        shutil.copytree(ROOT / "profiles", tmp_path / folder / "profiles")
    apply(tmp_path / "merged", profile)
    apply_overrides(tmp_path / "set" / "params.yaml", sets(ROOT, profile))
    assert load(tmp_path / "set" / "params.yaml") == load(tmp_path / "merged" / "params.yaml")


def test_unknown_key_is_named():
    with pytest.raises(KilnError, match=r"ingest\.sourse: unknown key"):
        parse(shipped_params(ingest={"sourse": "bbc"}), "params.yaml")


def test_unknown_section_is_named():
    with pytest.raises(KilnError, match=r"valdiate: unknown key"):
        parse(shipped_params(valdiate={}), "params.yaml")


def test_value_out_of_range_is_named():
    with pytest.raises(KilnError, match=r"split\.test"):
        parse(shipped_params(split={"test": 1.5}), "params.yaml")
    with pytest.raises(KilnError, match=r"validate: .*min_chars is larger than max_chars"):
        parse(shipped_params(validate={"min_chars": 10, "max_chars": 5}), "params.yaml")


def test_bad_choice_is_named():
    with pytest.raises(KilnError, match=r"ingest\.source"):
        parse(shipped_params(ingest={"source": "s3"}), "params.yaml")


def test_broken_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("ingest: [unclosed\n")
    with pytest.raises(KilnError, match="not valid YAML"):
        load(path)


def test_student_must_be_smaller_than_teacher():
    with pytest.raises(KilnError, match=r"distill\.student \(3 layers, 128 wide\) must have fewer layers"):
        parse(shipped_params(distill={"student": {"layers": 3}}), "params.yaml")


def test_pruning_ratio_of_one_is_refused():
    with pytest.raises(KilnError, match=r"prune\.head_ratio"):
        parse(shipped_params(prune={"head_ratio": 1}), "params.yaml")


def test_max_steps_below_the_validation_interval_is_refused_when_params_are_read():
    # Early stopping and the best checkpoint on val/macro_f1 need a validation to happen.
    for section in ("finetune", "distill", "prune", "search"):
        with pytest.raises(KilnError, match=rf"{section}\.loop: val_every_steps \(5\) is more than max_steps \(2\)"):
            parse(shipped_params(**{section: {"loop": {"max_steps": 2, "val_every_steps": 5}}}), "params.yaml")
    # 0 trains nothing (the pretrained profile's pretrain), and pretrain monitors nothing.
    parse(shipped_params(finetune={"loop": {"max_steps": 0, "val_every_steps": 5}}), "params.yaml")
    parse(shipped_params(pretrain={"loop": {"max_steps": 2, "val_every_steps": 5}}), "params.yaml")


def test_a_fit_that_would_end_before_validating_is_refused_before_it_starts():
    from components.text.config import check_validates

    def loop(**values):
        return shipped("pretrain.loop", **{"max_steps": -1, "val_every_steps": None, **values})

    # Validation at an epoch's end (val_every_steps null): an epoch of 12 steps needs 12.
    short = loop(max_epochs=2, max_steps=2)
    with pytest.raises(KilnError, match=r"finetune\.loop: training ends at step 2 .*an epoch's end, step 12"):
        check_validates("finetune", short, short, 12)
    for fits in (loop(max_epochs=2, max_steps=12), loop(max_epochs=2, max_steps=0)):
        check_validates("finetune", fits, fits, 12)
    # No step limit, but too few epochs for a fixed interval.
    few = loop(max_epochs=2, val_every_steps=30)
    with pytest.raises(KilnError, match=r"training ends at step 24 .*\(val_every_steps 30\)"):
        check_validates("finetune", few, few, 12)
    # Beyond full_epochs_rows, training.budgeted sets the steps.
    budgeted = few.model_copy(update={"max_steps": 20})
    with pytest.raises(KilnError, match=r"training ends at step 20 \(max_steps -1, 20 by the budget"):
        check_validates("finetune", few, budgeted, 500)
