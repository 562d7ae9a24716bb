"""Does the labelling queue teach the model more than as many random texts? The loop of
`kiln label export` / `kiln label import` simulated on BBC, for a few seeds.

The split is Kiln's own (components/data/split.py with params.yaml's `split`: a hash of
each text, so it is the same for every seed) of the raw BBC corpus, deduplicated as the
split stage does; ingest's PII masking is left out (it could only rewrite a few spans,
such as a URL, and validate drops no BBC text). A seed draws the champion's labelled
share of train (each label keeping its share); the rest of train is the logged traffic.
The champion is the classical family as the `classical` stage trains it: params.yaml's
whole grid (not shrunk: a fit on a few hundred texts takes seconds), each point fitted
on the labelled texts and the best chosen on the val split. From the traffic, minus
every labelled, val and test text (`labelling.candidates`), two arms take `--n` texts each:

- queue: `labelling.choose` on the champion's probabilities (label.clusters clusters);
- random: a uniform draw with the seed.

The simulated team labels them correctly (train's own labels), and each arm retrains
the grid on the champion's texts plus its own. The champion, the queue model and the
random model are scored on the same test texts, so every comparison is paired: each
model's macro-F1 with its 95 % bootstrap interval, and queue minus random and queue
minus champion with components.stats.paired's interval and McNemar p-value (evaluate's
resamples and bootstrap seed). The seeds share the test texts, so their intervals are
not independent: the last line only averages the differences and counts the seeds
whose interval excludes 0. Queue minus random is also measured on the rest of the
traffic (the pool texts neither arm picked, about 1,360): the same texts for both arms,
so still paired, and seven times the test split, though the queue took the hardest texts
out of it. Each seed's details line says how many of the picked texts
the champion got wrong, which is what the queue is meant to find.

    .venv/bin/python benchmarks/active_learning.py
    .venv/bin/python benchmarks/active_learning.py --seeds 0 1 2 3 4 --n 50 --share 0.05

About a minute on 2 cores for the three default seeds (some 20 s a seed: three grids).
"""

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.classical.config import ClassicalConfig
from components.classical.model import Selection, select
from components.data.bbc import read_bbc
from components.data.split import split
from components.monitor import labelling
from components.stats import Comparison, Interval, bootstrap, paired, stratified_sample
from pipelines.core.params import Params, load

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("champion", "queue", "random")


@dataclass
class SeedResult:
    seed: int
    sizes: dict[str, int]  # labelled train texts each arm was fitted on
    f1: dict[str, Interval]
    queue_vs_random: Comparison
    queue_vs_champion: Comparison
    # On the traffic neither arm picked (the same texts for both, ten times the test
    # split): narrower intervals, on texts the queue has left the easier ones of.
    rest_queue_vs_random: Comparison
    rest: int
    grid_points: dict[str, str]
    champion_wrong: dict[str, int]  # of the picked texts of the queue and random arms
    pool: int
    seconds: float


def fit(frame: pd.DataFrame, val: pd.DataFrame, cfg: ClassicalConfig, seed: int) -> Selection:
    return select(
        frame["text"].tolist(), frame["label"].tolist(), val["text"].tolist(), val["label"].tolist(), cfg, seed
    )


def test_ids(model: Selection, texts: list[str], ids: dict[str, int]) -> np.ndarray:
    # A model's class i is its own labels[i]; the shared ids keep the three models comparable
    # even if a label were missing from one model's train texts.
    return np.array([ids[model.labels[i]] for i in model.pipeline.predict(texts)])


def point(model: Selection) -> str:
    best = model.best
    return f"{best.analyzer}{tuple(best.ngram_range)} C={best.c:g} {best.class_weight}"


def one_seed(
    splits: dict[str, pd.DataFrame], params: Params, seed: int, n: int, share: float, ids: dict[str, int]
) -> SeedResult:
    start = time.perf_counter()
    train, val, test = splits["train"], splits["val"], splits["test"]
    cfg, fit_seed = params.classical, params.hardware.seed
    keep = stratified_sample(train["label"].tolist(), round(share * len(train)), seed)
    labelled = train.iloc[keep]
    traffic = train.drop(index=train.index[keep])
    champion = fit(labelled, val, cfg, fit_seed)

    known = [*labelled["text"], *val["text"], *test["text"]]
    pool = labelling.candidates(traffic["text"], known)
    classes = [champion.labels[c] for c in champion.pipeline.classes_]
    probabilities = champion.pipeline.predict_proba(pool["text"].tolist())
    queued = labelling.choose(pool, probabilities, classes, n, params.label.clusters, seed)["text"]
    # Another stream than stratified_sample's, which also starts from the bare seed.
    drawn = np.random.default_rng([seed, 1]).choice(len(pool), min(n, len(pool)), replace=False)
    randomly = pool["text"].iloc[np.sort(drawn)]

    truth_of = dict(zip(train["text"], train["label"]))
    guess_of = dict(zip(pool["text"], (classes[i] for i in probabilities.argmax(axis=1))))
    picked = {"queue": queued, "random": randomly}
    models = {"champion": champion}
    frames = {"champion": labelled}
    for arm, texts in picked.items():
        added = pd.DataFrame({"text": texts.tolist(), "label": [truth_of[t] for t in texts]})
        frames[arm] = pd.concat([labelled[["text", "label"]], added], ignore_index=True)
        models[arm] = fit(frames[arm], val, cfg, fit_seed)

    texts, truth = test["text"].tolist(), np.array([ids[label] for label in test["label"]])
    predicted = {arm: test_ids(models[arm], texts, ids) for arm in ARMS}
    resamples, boot_seed = params.evaluate.resamples, params.evaluate.bootstrap_seed
    taken = set(queued) | set(randomly)
    rest = [t for t in pool["text"] if t not in taken]
    rest_truth = np.array([ids[truth_of[t]] for t in rest])
    rest_pair = [test_ids(models[arm], rest, ids) for arm in ("queue", "random")]
    return SeedResult(
        seed=seed,
        sizes={arm: len(frames[arm]) for arm in ARMS},
        f1={arm: bootstrap(truth, predicted[arm], resamples, boot_seed)["macro_f1"] for arm in ARMS},
        queue_vs_random=paired(truth, predicted["queue"], predicted["random"], resamples, boot_seed),
        queue_vs_champion=paired(truth, predicted["queue"], predicted["champion"], resamples, boot_seed),
        rest_queue_vs_random=paired(rest_truth, *rest_pair, resamples, boot_seed),
        rest=len(rest),
        grid_points={arm: point(models[arm]) for arm in ARMS},
        champion_wrong={arm: sum(guess_of[t] != truth_of[t] for t in texts) for arm, texts in picked.items()},
        pool=len(pool),
        seconds=time.perf_counter() - start,
    )


def score(interval: Interval) -> str:
    return f"{interval.estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def difference(interval: Interval) -> str:
    return f"{interval.estimate:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]"


def verdict(name: str, intervals: list[Interval]) -> str:
    """What the seeds' intervals support, and no more."""
    above = sum(i.low > 0 for i in intervals)
    below = sum(i.high < 0 for i in intervals)
    mean = np.mean([i.estimate for i in intervals])
    seeds = len(intervals)
    if above == seeds:
        return f"{name}: higher at every seed (mean {mean:+.3f}), each interval above 0: a win."
    if below == seeds:
        return f"{name}: lower at every seed (mean {mean:+.3f}), each interval below 0: a loss."
    if above == below == 0:
        return (
            f"{name}: mean {mean:+.3f}, but every seed's interval contains 0: no difference the "
            f"{seeds} seeds can tell from none, so not a win."
        )
    return (
        f"{name}: mean {mean:+.3f}; the interval is above 0 at {above} and below 0 at {below} of {seeds} "
        f"seeds and contains 0 at the rest: not a consistent win."
    )


def report(results: list[SeedResult], test_texts: int) -> None:
    head = f"champion ({results[0].sizes['champion']})", "queue", "random"
    print(f"| seed | {head[0]} | {head[1]} | {head[2]} | queue - random | McNemar p | queue - champion | McNemar p |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        qr, qc = r.queue_vs_random, r.queue_vs_champion
        print(
            f"| {r.seed} | {score(r.f1['champion'])} | {score(r.f1['queue'])} | {score(r.f1['random'])} "
            f"| {difference(qr.macro_f1_difference)} | {qr.mcnemar_p:.3f} "
            f"| {difference(qc.macro_f1_difference)} | {qc.mcnemar_p:.3f} |"
        )
    mean = {arm: np.mean([r.f1[arm].estimate for r in results]) for arm in ARMS}
    qr = [r.queue_vs_random.macro_f1_difference for r in results]
    qc = [r.queue_vs_champion.macro_f1_difference for r in results]

    def excluding(intervals: list[Interval]) -> str:
        out = sum(not i.contains(0.0) for i in intervals)
        return f"{np.mean([i.estimate for i in intervals]):+.3f} ({out}/{len(intervals)} exclude 0)"

    print(
        f"| mean | {mean['champion']:.3f} | {mean['queue']:.3f} | {mean['random']:.3f} "
        f"| {excluding(qr)} | | {excluding(qc)} | |"
    )
    print()
    print(f"Test macro-F1 on the same {test_texts} test texts, 95 % bootstrap intervals; differences paired.")
    for r in results:
        print(
            f"seed {r.seed}: pool {r.pool} texts; train texts champion {r.sizes['champion']}, queue "
            f"{r.sizes['queue']}, random {r.sizes['random']}; the champion was wrong on "
            f"{r.champion_wrong['queue']} queued and {r.champion_wrong['random']} random picks; grid points: "
            + ", ".join(f"{arm} {r.grid_points[arm]}" for arm in ARMS)
            + f"; {r.seconds:.1f} s"
        )
    print()
    rest = [r.rest_queue_vs_random.macro_f1_difference for r in results]
    print("queue - random on the rest of the traffic (the texts neither arm picked, the same for both):")
    for r in results:
        print(
            f"seed {r.seed}: {difference(r.rest_queue_vs_random.macro_f1_difference)} on {r.rest} texts, "
            f"McNemar p {r.rest_queue_vs_random.mcnemar_p:.3f}"
        )
    print()
    print(verdict("queue vs random", qr))
    print(verdict("queue vs champion", qc))
    print(verdict("queue vs random on the rest of the traffic", rest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=100, help="texts each arm adds (default 100)")
    parser.add_argument("--share", type=float, default=0.1, help="the champion's share of train labels")
    args = parser.parse_args()
    if not 0 < args.share < 1:
        parser.error("--share must be between 0 and 1")

    start = time.perf_counter()
    params = load(ROOT / "params.yaml")
    parts = split(read_bbc(), params.split).frames()
    ids = {label: i for i, label in enumerate(sorted(set(parts["train"]["label"])))}
    cfg = params.classical
    grid = len(cfg.c) * len(cfg.class_weight) * len(cfg.sublinear_tf)
    grid *= sum(len(cfg.ngrams(analyzer)) for analyzer in cfg.analyzers)
    print(
        f"BBC split (salt {params.split.salt!r}): train {len(parts['train'])}, val {len(parts['val'])}, "
        f"test {len(parts['test'])}; champion on {args.share:.0%} of train, +{args.n} texts per arm; "
        f"classical grid of params.yaml ({grid} points, not shrunk), chosen on val; "
        f"queue with {params.label.clusters} clusters; seeds {args.seeds}"
    )
    print()
    results = [one_seed(parts, params, seed, args.n, args.share, ids) for seed in args.seeds]
    report(results, len(parts["test"]))
    print(f"\nwall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
