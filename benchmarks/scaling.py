"""Seconds and peak memory of each stage at 1x, 10x and 100x BBC's rows, on this machine.

Each dataset is built from BBC's own texts: a synthetic text joins sentences drawn from
articles of one label, as many as a real article of that label has, so every text is new
(validation would drop duplicates), labels keep their vocabulary and lengths stay BBC's.
It is written as a CSV into a scratch copy of the repository whose `ingest` reads it; then
the stages run one by one with `kiln stage`, each a process of its own, while the
resident memory of its process tree is sampled. Stages run in DAG order, so a stage
listed needs those before it listed too.

    .venv/bin/python benchmarks/scaling.py                       # data stages, 1x and 10x
    .venv/bin/python benchmarks/scaling.py --scales 1 10 100
    .venv/bin/python benchmarks/scaling.py --stages ingest validate split augment tokenize pretrain
    .venv/bin/python benchmarks/scaling.py --stages all          # all but register and promote, and a total
    .venv/bin/python benchmarks/scaling.py --scales 100 --stages all --set finetune.loop.max_steps=20

`--set` changes params.yaml in the scratch copies (a dotted key, a YAML value): e.g. a few
training steps, to time evaluation at a scale whose training would take hours. Each stage's
line ends with its headline figures (val and test macro-F1 of a trained model).
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import yaml

from components.data.bbc import read_bbc

ROOT = Path(__file__).resolve().parents[1]
DATA_STAGES = ["ingest", "validate", "split", "augment", "tokenize"]
# Stages that read the lineage in dvc.lock, which only a run through DVC writes (here each
# stage runs alone); they register and promote a model, in seconds at any number of rows.
LINEAGE = ["register", "promote"]
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def synthetic(scale: int, seed: int = 0) -> pd.DataFrame:
    """`scale` times BBC's rows, every text made of one label's sentences."""
    bbc = read_bbc()
    rng = np.random.default_rng(seed)
    rows = []
    for label, group in bbc.groupby("label"):
        pool = [s for text in group["text"] for s in SENTENCE.split(text) if s.strip()]
        lengths = [len(SENTENCE.split(text)) for text in group["text"]]
        for _ in range(len(group) * scale):
            picks = rng.integers(0, len(pool), size=int(rng.choice(lengths)))
            rows.append((" ".join(pool[i] for i in picks), label))
    frame = pd.DataFrame(rows, columns=["text", "label"])
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def scratch_repo(folder: Path, data: pd.DataFrame, overrides: dict[str, object]) -> Path:
    """The project's files (no outputs) in a git repository of their own, reading `data`,
    with `overrides` (dotted keys) set in its params.yaml."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    outputs = ("data/raw/", "data/validated/", "data/split/", "data/augmented/", "models/", "reports/", "mlflow/")
    for name in listed:
        if (ROOT / name).is_file() and not (name.startswith(outputs) and not name.endswith(".gitignore")):
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    (folder / "dvc.lock").unlink(missing_ok=True)
    data.to_csv(folder / "data/external/scale.csv", index=False)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["ingest"]["source"] = "file"
    params["ingest"]["file"]["path"] = "data/external/scale.csv"
    for key, value in overrides.items():
        *sections, last = key.split(".")
        section = params
        for name in sections:
            section = section[name]
        if last not in section:
            raise SystemExit(f"--set {key}: params.yaml has no such key")
        section[last] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@kiln.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    subprocess.run([*git, "add", "-A"], cwd=folder, check=True)
    subprocess.run([*git, "commit", "-qm", "scaling benchmark"], cwd=folder, check=True)
    return folder


def measured(command: list[str], cwd: Path) -> tuple[float, float, int, str]:
    """(seconds, peak resident MB of the process and its children, exit code, output tail)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return seconds, peak / 2**20, proc.returncode, out[-2000:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--stages", nargs="+", default=DATA_STAGES, help="stage names, or all (dvc.yaml's order)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch repositories")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="params.yaml changes, e.g. a.b=3")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    if args.stages == ["all"]:
        args.stages = [
            name for name in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"] if name not in LINEAGE
        ]
    kiln = str(Path(sys.executable).parent / "kiln")
    rows = []
    for scale in args.scales:
        built = time.perf_counter()
        data = synthetic(scale)
        print(
            f"{scale}x: {len(data)} texts, median {int(data['text'].str.len().median())} characters, "
            f"built in {time.perf_counter() - built:.1f} s",
            flush=True,
        )
        folder = Path(tempfile.mkdtemp(prefix=f"kiln-scale-{scale}x-"))
        repo = scratch_repo(folder, data, overrides)
        for stage in args.stages:
            seconds, peak, code, tail = measured([kiln, "stage", stage], repo)
            rows.append((scale, len(data), stage, seconds, peak))
            done = re.search(rf"^{stage}: done in [\d.]+ s(.*)$", tail, re.MULTILINE)
            headline = done.group(1).strip() if done else ""
            print(f"{scale:>4}x {stage:<10} {seconds:8.1f} s {peak:8.0f} MB  {headline}".rstrip(), flush=True)
            if code != 0:
                print(f"{stage} failed at {scale}x:\n{tail}", file=sys.stderr)
                break
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print("\n| scale | texts | stage | seconds | peak MB | seconds / 1x |")
    print("| ---: | ---: | --- | ---: | ---: | ---: |")
    smallest = min(args.scales)
    totals = {}
    for scale, texts, _stage, seconds, peak in rows:
        totals.setdefault((scale, texts), []).append((seconds, peak))
    for (scale, texts), found in totals.items():
        if len(found) == len(args.stages):  # every stage ran: the whole of them as one row
            rows.append((scale, texts, "total", sum(s for s, _ in found), max(p for _, p in found)))
    base = {stage: seconds for scale, _, stage, seconds, _ in rows if scale == smallest}
    for scale, texts, stage, seconds, peak in rows:
        ratio = seconds / base[stage] if base.get(stage) else float("nan")
        print(f"| {scale}x | {texts} | {stage} | {seconds:.1f} | {peak:.0f} | {ratio:.1f} |")


if __name__ == "__main__":
    main()
