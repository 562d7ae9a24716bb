import pytest

from components.errors import KilnError
from pipelines.params import load, parse
from tests.conftest import ROOT


def test_shipped_params_are_valid():
    params = load(ROOT / "params.yaml")
    assert params.ingest.source == "incoming" and params.ingest.incoming.base == "bbc"
    assert params.validate_.max_duplicate_rate == 0.05


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_every_shipped_profile_merges_into_valid_params(profile, tmp_path):
    import shutil

    from pipelines.profiles import apply

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
