"""A classical grid fitted in a process of its own (tests/ops/test_faults.py starts one)."""

import numpy as np


def fit_a_grid() -> None:
    """Select on generated English-like texts of three labels, as the unit tests' grid does,
    its fits on joblib's worker processes (these feature sets are small enough to be fitted
    in this process otherwise)."""
    from components.classical import grid
    from components.classical.model import select

    grid.PARALLEL_NNZ = 0
    from tests.support.params import shipped

    def texts(n: int, seed: int) -> tuple[list[str], list[str]]:
        rng = np.random.default_rng(seed)
        shared = ["the", "The", "of", "and", "A", "is", "in", "to", "said", "!"]
        out, labels = [], []
        for k in range(3):
            own = [f"word{k}x{i}," for i in range(15)]
            for _ in range(n):
                size = int(rng.integers(4, 13))
                out.append(" ".join(str(rng.choice(own if rng.random() < 2 / 3 else shared)) for _ in range(size)))
                labels.append(f"class_{k}")
        return out, labels

    grid = {"word_ngrams": [(1, 1), (1, 2)], "char_ngrams": [(1, 2), (1, 3)], "c": [1.0, 10.0], "max_features": 2000}
    cfg = shipped("classical", **grid)
    select(*texts(40, 0), *texts(15, 1), cfg, seed=0)
