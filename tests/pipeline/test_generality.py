"""The whole pipeline on data unlike BBC's, with only data-describing params set: a
language written without spaces with one label 65 % of the rows, and texts under ten
characters. Each run must end with a model that is promoted, or a clear line saying why it
was not."""

import json
import os
import pty
import random
import re
import subprocess

import pandas as pd
import pytest

from tests.support.data import TOPICS, chinese
from tests.support.params import set_params
from tests.support.repo import BIN, SHARED_PREFECT, clean_env, copy_repo
from tests.support.tiny import TINY_TRAINING

pytestmark = pytest.mark.slow


def short(rows_per_label: int, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    words = {"greet": ["hi", "hey", "yo", "hello"], "thanks": ["thx", "ty", "thanks"], "bye": ["bye", "cya", "later"]}
    rows = []
    for label, own in words.items():
        for i in range(rows_per_label):
            text = f"{rng.choice(own)} {i}{rng.choice('!?.')}"[:9]
            rows.append({"text": text, "intent": label})
    return pd.DataFrame(rows).drop_duplicates("text")


def run(repo, frame: pd.DataFrame, text: str, label: str, labels: list[str], own_prefect=False, **params: dict):
    """The run's selection and its screen; `params` beside the tiny models' (the start).
    The run uses the session's Prefect server unless `own_prefect`, as a user's first run
    starts its own."""
    frame.to_csv(repo / "data/external/mine.csv", index=False)
    # Tiny models; the floors decide and the data chooses the sequence length, as for a user.
    training = {k: v for k, v in TINY_TRAINING.items() if k != "promote"}
    training["encoder"] = {k: v for k, v in training["encoder"].items() if k != "max_length"}
    set_params(repo, **training)
    set_params(repo, encoder={"max_length": "auto"}, **params)
    # The data-describing params, and nothing else.
    set_params(
        repo,
        ingest={
            "source": "file",
            "file": {"path": "data/external/mine.csv", "text_column": text, "label_column": label},
        },
        validate={"labels": labels},
    )
    code, screen = on_a_terminal(repo, {} if own_prefect else {"PREFECT_API_URL": os.environ[SHARED_PREFECT]})
    assert code == 0, screen
    assert re.search(
        r"^version 1 of 'kiln-mine' (promoted to champion|registered, not promoted .*: \w+)", screen, re.MULTILINE
    ), screen
    # What a person sees: a line per stage and the outcome; no library noise.
    assert len(screen.splitlines()) < 60, screen
    for noise in ("Warning", "warn(", "Tip:", "it/s]", "INFO", "Traceback"):
        assert noise not in screen, noise
    # Shipped: the model select chose on val, never worse there than the best candidate by
    # more than the best one's interval.
    selection = json.loads((repo / "reports/selection.json").read_text())
    best = max(selection["candidates"].values(), key=lambda c: c["val_macro_f1"])
    chosen = selection["candidates"][selection["selected"]]
    assert chosen["val_macro_f1"] >= best["val_macro_f1_ci95"][0]
    registered = json.loads((repo / "reports/register.json").read_text())
    assert registered["tags"]["kiln.candidate"] == selection["selected"]
    return selection, screen


def on_a_terminal(repo, env: dict[str, str]) -> tuple[int, str]:
    """`kiln run` on a pseudo-terminal, as a person runs it, with `env` added to its
    environment; the screen as it ends up (lines a progress line rewrote with carriage
    returns count once)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [str(BIN / "kiln"), "run"],
        cwd=repo,
        env=clean_env(TERM="xterm", **env),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    code = proc.wait(timeout=900)
    text = b"".join(chunks).decode("utf-8", errors="replace").replace("\r\n", "\n")
    return code, "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n")).strip()


def test_a_skewed_language_without_spaces(tmp_path):
    repo = copy_repo(tmp_path / "kiln")
    # One label 65 % of the rows, passed by the default class-share bounds; 400 rows, so
    # that val (about 40 texts) can tell a model that learned from always '好评'.
    frame = chinese({"好评": 260, "差评": 80, "中评": 60})
    assert frame["stars"].value_counts(normalize=True)["好评"] >= 0.64
    selection, screen = run(repo, frame, "review", "stars", list(TOPICS), own_prefect=True, pretrain={"init": "auto"})
    # English MiniLM's vocabulary reads a sentence without spaces as a piece per character.
    assert re.search(
        r"^\s*start: from scratch, since all-MiniLM-L6-v2's vocabulary does not fit the train texts: "
        r"[\d.]+ word pieces a word \(at most 1\.5\) and [\d.]+% unknown",
        screen,
        re.MULTILINE,
    ), screen
    # Character n-grams read text without spaces; a transformer trained for seconds does not.
    assert selection["selected"] == "classical"
    augmented = pd.read_parquet(repo / "data/augmented/train.parquet")
    train = pd.read_parquet(repo / "data/split/train.parquet").set_index("id")["text"]
    # Copies are edited character by character (on whitespace-split "words" 87 % of such
    # texts came back unchanged or emptied); a swap of two equal characters may still
    # change nothing. None is only masks.
    assert (augmented["text"] != augmented["origin_id"].map(train)).mean() > 0.9
    assert not augmented["text"].str.fullmatch(r"(\[MASK\]\s*)+").any()
    assert " " not in "".join(augmented[augmented["op"] == "swap"]["text"])
    tokens = json.loads((repo / "reports/tokenize.json").read_text())
    assert tokens["tokenizer/unk_rate"] < 0.01


def test_texts_under_ten_characters(tmp_path):
    repo = copy_repo(tmp_path / "kiln")
    frame = short(40)
    assert frame["text"].str.len().max() < 10
    selection, _ = run(repo, frame, "text", "intent", ["bye", "greet", "thanks"])
    assert selection["selected"] == "classical"
    validation = json.loads((repo / "reports/validation.json").read_text())
    assert validation["rows_valid"] == len(frame)  # no length bound from English news
    encoder = json.loads((repo / "models/encoder/kiln.json").read_text())
    assert encoder["metrics"]["model/max_length"] == 16  # chosen from the data: the floor
