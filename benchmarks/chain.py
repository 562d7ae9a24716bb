"""The transformer chain against the classical family, on BBC and on data unlike it: each
candidate's val and test macro-F1 with 95 % intervals, its size, p50 batch-1 latency and
training time, and paired test intervals between the arms that a claim compares.

Datasets (built here, each written as CSV into a scratch copy of this repository):
  bbc      BBC News, every train label.
  bbc10    BBC with 10 % of the train split's labels (stratified, seeded); the other 90 %
           of the train texts go to data/unlabeled/ without their labels. Val and test are
           BBC's own (a text's split is a hash of the text, so they are the same texts).
  skewed   BBC's business, sport and tech articles resampled to 65 / 25 / 10 %.
  docs     Not news: the docstrings of public functions and classes of four installed
           libraries (numpy, pandas, scikit-learn, torch), labelled by library.

Arms (each a `kiln run evaluate` in the dataset's copy with these params; DVC reruns only
the stages a change touches, so later arms reuse the data stages and the classical model):
  default       params.yaml as shipped: `pretrain.init: auto` with its adaptive steps.
  scratch       the teacher's encoder trained from scratch (pretrain.init null).
  unadapted     MiniLM finetuned as it came (pretrain.adapt_steps 0).
  inherited     the student starts from every other teacher layer (distill.inherit).
  no-unlabeled  the student without data/unlabeled/ (distill.unlabeled_max 0).

    .venv/bin/python benchmarks/chain.py --datasets bbc10 --arms default scratch no-unlabeled
    .venv/bin/python benchmarks/chain.py            # every dataset and arm: hours on 2 cores

Test predictions of each arm's teacher and INT8 student are kept, so arms are compared on
the same test texts (`stats.paired`): the pretrained teacher against the scratch one, the
student with the unlabelled transfer set against the one without, INT8 against its teacher.
"""

import argparse
import inspect
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import ROOT, scratch_repo  # noqa: E402 - the sibling benchmark's scratch copies

from components import stats  # noqa: E402
from components.data.bbc import read_bbc  # noqa: E402
from components.data.schema import text_hash  # noqa: E402
from components.data.split import assign  # noqa: E402
from components.runtime.loader import load_classifier  # noqa: E402
from pipelines.core.params import load  # noqa: E402

SEED = 0
ARMS = {
    "default": {},
    "scratch": {"pretrain.init": None},
    "unadapted": {"pretrain.init": "all-MiniLM-L6-v2", "pretrain.adapt_steps": 0},
    "inherited": {"distill.inherit": True},
    "no-unlabeled": {"distill.unlabeled_max": 0},
}
# Which stages' seconds a candidate's training took.
TRAINED_BY = {
    "teacher": ("pretrain", "finetune"),
    "student": ("distill",),
    "pruned": ("prune",),
    "onnx_int8": ("prune", "export", "quantize"),
    "classical": ("classical",),
}
CANDIDATES = ("classical", "teacher", "student", "pruned", "onnx_int8")


def bbc(_seed: int) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    return read_bbc()[["text", "label"]], None, {}


def bbc10(seed: int) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    frame = read_bbc()[["text", "label"]]
    cfg = load(ROOT / "params.yaml").split  # the split stage's, which no arm changes
    where = frame["text"].map(lambda t: assign(text_hash(t), cfg))
    train = frame[where == "train"]
    kept = train.groupby("label", group_keys=False).sample(frac=0.1, random_state=seed)
    labelled = pd.concat([frame[where != "train"], kept]).sort_index()
    return labelled, train.drop(kept.index)[["text"]], {}


def skewed(seed: int) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    frame = read_bbc()[["text", "label"]]
    business = frame[frame["label"] == "business"]
    total = round(len(business) / 0.65)
    parts = [business] + [
        frame[frame["label"] == label].sample(n=round(total * share), random_state=seed)
        for label, share in (("sports", 0.25), ("tech", 0.10))
    ]
    params = {"validate.labels": ["business", "sports", "tech"], "validate.max_class_share": 0.7}
    return pd.concat(parts).sample(frac=1.0, random_state=seed), None, params


def docs(seed: int, per_library: int = 400) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    import numpy
    import pandas
    import sklearn
    import torch

    rows = []
    for library in (numpy, pandas, sklearn, torch):
        found = {}
        for name, module in list(sys.modules.items()):
            if not name.startswith(library.__name__ + ".") or "._" in name or ".tests" in name:
                continue
            for attr, value in list(vars(module).items()):
                doc = inspect.getdoc(value) if not attr.startswith("_") and callable(value) else None
                if doc and len(doc) >= 40 and getattr(value, "__module__", "").startswith(library.__name__):
                    found.setdefault(doc[:2000], None)
        texts = list(found)
        picked = np.random.default_rng(seed).permutation(len(texts))[:per_library]
        rows += [(texts[i], library.__name__) for i in picked]
    frame = pd.DataFrame(rows, columns=["text", "label"]).drop_duplicates("text")
    params = {"validate.labels": ["numpy", "pandas", "sklearn", "torch"], "validate.max_duplicate_rate": 0.5}
    return frame.sample(frac=1.0, random_state=seed), None, params


DATASETS = {"bbc": bbc, "bbc10": bbc10, "skewed": skewed, "docs": docs}


def set_params(repo: Path, changes: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in changes.items():
        *sections, last = key.split(".")
        section = params
        for name in sections:
            section = section[name]
        section[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_arm(repo: Path, kiln: str) -> tuple[float, dict[str, float], str]:
    start = time.perf_counter()
    out = subprocess.run([kiln, "run", "evaluate"], cwd=repo, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"kiln run failed in {repo}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    stages = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+)\s+ran\s+([\d.]+) s", out.stdout, re.M)}
    return seconds, stages, out.stdout


def predictions(repo: Path) -> dict[str, list[int]]:
    """Test predictions of the teacher's and the INT8 student's ONNX files, and the truth."""
    test = pd.read_parquet(repo / "data/split/test.parquet")
    onnx = repo / "models/onnx"
    found = {}
    for name, model, tokenizer in (
        ("teacher", onnx / "teacher.onnx", onnx / "teacher.tokenizer.json"),
        ("onnx_int8", repo / "models/model.int8.onnx", onnx / "tokenizer.json"),
    ):
        runtime = load_classifier(model, tokenizer)
        found[name] = runtime.logits(test["text"].tolist()).argmax(-1).tolist()
        found["truth"] = [runtime.labels.index(label) for label in test["label"]]
    return found


def interval(values: list[float] | None) -> str:
    return f"[{values[0]:.4f}, {values[1]:.4f}]" if values else ""


def rows_of(dataset: str, arm: str, repo: Path, stages: dict[str, float]) -> list[str]:
    reports = repo / "reports"
    evaluation = json.loads((reports / "evaluation.json").read_text())
    chosen = json.loads((reports / "select.json").read_text())
    stage_val = {"teacher": "finetune", "student": "distill", "pruned": "prune"}
    rows = []
    for name in CANDIDATES:
        v = evaluation["variants"].get(name)
        if v is None:
            continue
        onnx = {"teacher": "onnx_teacher"}.get(name, name)
        if f"{onnx}/val_macro_f1" in chosen:
            ends = [chosen[f"{onnx}/val_macro_f1_lo"], chosen[f"{onnx}/val_macro_f1_hi"]]
            val = f"{chosen[f'{onnx}/val_macro_f1']:.4f} {interval(ends)}"
        else:
            val = f"{json.loads((reports / f'{stage_val[name]}.json').read_text())['val/macro_f1']:.4f}"
        served = evaluation["variants"].get(onnx, v)
        seconds = sum(stages.get(s, 0.0) for s in TRAINED_BY[name])
        rows.append(
            f"| {dataset} | {arm} | {name} | {val} | {v['macro_f1']:.4f} {interval(v['macro_f1_ci95'])} "
            f"| {served['size_mb']:.2f} | {served['latency_ms_p50_b1']:.2f} | {seconds:.0f} |"
        )
    return rows


# (what, arm, its model, the other arm, its model): each a difference of the first minus the second.
CLAIMS = [
    ("INT8 student - its teacher", "default", "onnx_int8", "default", "teacher"),
    ("teacher: default start - from scratch", "default", "teacher", "scratch", "teacher"),
    ("teacher: adapted - as MiniLM came", "default", "teacher", "unadapted", "teacher"),
    ("INT8 student: with - without unlabelled texts", "default", "onnx_int8", "no-unlabeled", "onnx_int8"),
    ("INT8 student: random start - inherited", "default", "onnx_int8", "inherited", "onnx_int8"),
]


def compared(found: dict[str, dict]) -> list[tuple[str, str]]:
    """Each claim whose two arms ran, as (what, difference on test with its paired 95 % interval)."""
    out = []
    for what, arm, model, other_arm, other in CLAIMS:
        if arm in found and other_arm in found:
            a, b = found[arm], found[other_arm]
            d = stats.paired(a["truth"], a[model], b[other]).macro_f1_difference
            out.append((what, f"{d.estimate:+.4f} [{d.low:+.4f}, {d.high:+.4f}]"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--keep", action="store_true", help="keep the scratch repositories")
    args = parser.parse_args()
    kiln = str(Path(sys.executable).parent / "kiln")
    table, claims = [], []
    for dataset in args.datasets:
        labelled, unlabeled, params = DATASETS[dataset](SEED)
        print(f"{dataset}: {len(labelled)} labelled texts, {0 if unlabeled is None else len(unlabeled)} unlabelled")
        repo = scratch_repo(Path(tempfile.mkdtemp(prefix=f"kiln-chain-{dataset}-")), labelled, {})
        if unlabeled is not None:
            unlabeled.to_csv(repo / "data/unlabeled/rest.csv", index=False)
        shipped = (repo / "params.yaml").read_text()  # with the dataset's ingest settings
        found = {}
        for arm in args.arms:
            (repo / "params.yaml").write_text(shipped)
            set_params(repo, {**params, **ARMS[arm]})
            seconds, stages, out = run_arm(repo, kiln)
            start = re.search(r"start: [^\n]*", out)
            print(f"  {arm}: {seconds:.0f} s; {start.group(0) if start else ''}", flush=True)
            table += rows_of(dataset, arm, repo, stages)
            found[arm] = predictions(repo)
        claims += [f"| {dataset} | {what} | {difference} |" for what, difference in compared(found)]
        if not args.keep:
            shutil.rmtree(repo, ignore_errors=True)
    print("\n| dataset | arm | candidate | val macro-F1 [95 %] | test macro-F1 [95 %] | MB | p50 b1 ms | train s |")
    print("| --- | --- | --- | --- | --- | ---: | ---: | ---: |")
    print("\n".join(table))
    print("\n| dataset | paired on test | difference [95 %] |")
    print("| --- | --- | --- |")
    print("\n".join(claims))


if __name__ == "__main__":
    main()
