import pandas as pd
import pytest

from components.data.sources import read_bbc
from components.text.tokenizer import SPECIAL_TOKENS, TokenizeConfig, coverage, train_tokenizer
from tests.conftest import kiln, set_params, tiny_frame


def test_tokenizer_is_bert_style_and_reproducible():
    texts = read_bbc()["text"].tolist()[::4]
    a = train_tokenizer(texts, TokenizeConfig(vocab_size=2000))
    b = train_tokenizer(list(texts), TokenizeConfig(vocab_size=2000))
    assert a.to_str() == b.to_str()
    assert [a.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    tokens = a.encode("Story about tech").tokens
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert coverage(a, texts)["unk_rate"] == 0.0


@pytest.mark.slow
def test_stage_learns_from_train_only(repo):
    frame = tiny_frame(30)
    # A marker word per row, three times so it clears min_frequency; where each marker
    # lands tells whether the tokenizer saw that row's split.
    frame["text"] = [f"{t} marker{i}x marker{i}x marker{i}x" for i, t in enumerate(frame["text"])]
    frame.to_csv(repo / "data/external/mine.csv", index=False)
    set_params(repo, ingest={"source": "file", "file": {"path": "data/external/mine.csv"}})
    out = kiln("run", "tokenize", cwd=repo)
    assert out.returncode == 0, out.stdout + out.stderr
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(repo / "models/tokenizer.json")).get_vocab()
    splits = {name: pd.read_parquet(repo / f"data/split/{name}.parquet") for name in ("train", "val", "test")}

    def markers(split: str) -> set[str]:
        return {w for t in splits[split]["text"] for w in t.split() if w.startswith("marker")}

    assert markers("train") and markers("train") <= set(vocab)
    assert markers("val") | markers("test")
    assert not (markers("val") | markers("test")) & set(vocab)
