"""Whether attributions point at what the model uses: deleting a text's most attributed
words must lower the explained label's probability more than deleting as many random
words (Samek et al., 2017, "Evaluating the visualization of what a deep neural network
has learned"; DeYoung et al., 2020, ERASER's comprehensiveness).

For k = 1..K the drop is p(label | text) - p(label | text without k words), where the
k words are the top k by score or k drawn at random (the same draws, nested, for every
k); AOPC is the drop averaged over k and over texts. Words are deleted as units
(components.data.augment.units) and the rest rejoined with `join`; the reference
probability is the rejoined text's, so rejoining (which evens out whitespace) is never
counted as a drop. A text keeps at least one word. Words past the model's token limit
are left out of every version, the reference included: deleting them would change
nothing, which would flatter the attributions against a random draw, and deleting a read
word would otherwise pull an unread one into the model's window.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from components.data.augment import join
from components.explain.attribution import Explanation
from components.stats import Interval


@dataclass(frozen=True)
class Faithfulness:
    k: list[int]  # 1..K
    top: list[float]  # mean drop after deleting the top k words, for each k
    random: list[float]  # mean drop after deleting k random words, for each k (mean over draws)
    aopc_top: float
    aopc_random: float
    difference: Interval  # aopc_top - aopc_random, percentile bootstrap over texts (paired)
    texts: int


def aopc(
    explanations: Sequence[Explanation],
    proba: Callable[[list[str]], np.ndarray],
    labels: list[str],
    k: int = 5,
    draws: int = 3,
    seed: int = 0,
    resamples: int = 1000,
) -> Faithfulness:
    """`proba(texts)` is [texts, labels] probabilities, `labels` its columns; it is called
    once, on every perturbed text (len(explanations) * k * (1 + draws) of them, plus the
    references), so it should batch."""
    if not explanations:
        raise ValueError("no explanations to check")
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for e in explanations:
        read = [w for w in e.words if w.read]
        parts = [w.text for w in read]
        depth = max(0, min(k, len(parts) - 1))
        # Rows: the top-first order, then each random draw; deleting a row's first j
        # words for j = 1..k (repeating the deepest deletion when the text is short).
        top_first = sorted(range(len(read)), key=lambda i: -read[i].score)
        orders = [top_first] + [list(rng.permutation(len(read))) for _ in range(draws)]
        texts.append(join(parts))
        for order in orders:
            for j in range(1, k + 1):
                gone = set(order[: min(j, depth)])
                texts.append(join([p for i, p in enumerate(parts) if i not in gone]))
    p = np.asarray(proba(texts), float)
    stride = 1 + (1 + draws) * k
    targets = np.repeat([labels.index(e.label) for e in explanations], stride)
    chosen = p[np.arange(len(texts)), targets].reshape(len(explanations), stride)
    # drops[text, order, j]: order 0 is the top-first one.
    drops = chosen[:, :1, None] - chosen[:, 1:].reshape(len(explanations), 1 + draws, k)
    top, random = drops[:, 0], drops[:, 1:].mean(1)
    per_text = top.mean(1) - random.mean(1)
    resampled = per_text[rng.integers(0, len(per_text), size=(resamples, len(per_text)))].mean(1)
    low, high = np.quantile(resampled, [0.025, 0.975])
    return Faithfulness(
        list(range(1, k + 1)),
        top.mean(0).tolist(),
        random.mean(0).tolist(),
        float(top.mean()),
        float(random.mean()),
        Interval(float(per_text.mean()), float(low), float(high)),
        len(explanations),
    )
