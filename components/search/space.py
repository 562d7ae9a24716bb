"""The search space as Optuna suggestions: a family, then that family's knobs."""

from typing import TYPE_CHECKING, Any

from components.search.config import FloatRange, SearchConfig

if TYPE_CHECKING:
    import optuna

# The three objectives, in the order the study lists its directions.
OBJECTIVES = ("val_macro_f1", "latency_ms_p50_b1", "size_mb")
DIRECTIONS = ("maximize", "minimize", "minimize")


def _float(trial: "optuna.Trial", name: str, bounds: FloatRange) -> float:
    if bounds.low == bounds.high:
        return bounds.low
    return trial.suggest_float(name, bounds.low, bounds.high, log=bounds.log)


def suggest(trial: "optuna.Trial", cfg: SearchConfig) -> tuple[str, dict[str, Any]]:
    """(family, its params) for one trial."""
    families = list(cfg.families)
    family = trial.suggest_categorical("family", families) if len(families) > 1 else families[0]
    if family == "transformer":
        t = cfg.space.transformer
        return family, {
            "layers": trial.suggest_categorical("layers", t.layers),
            "hidden": trial.suggest_categorical("hidden", t.hidden),
            "heads": trial.suggest_categorical("heads", t.heads),
            "intermediate": trial.suggest_categorical("intermediate", t.intermediate),
            "prune_ratio": _float(trial, "prune_ratio", t.prune_ratio),
            "temperature": _float(trial, "temperature", t.temperature),
            "alpha": _float(trial, "alpha", t.alpha),
            "quantization": trial.suggest_categorical("quantization", t.quantization),
        }
    c = cfg.space.classical
    return family, {
        "analyzer": trial.suggest_categorical("analyzer", c.analyzers),
        "c": _float(trial, "c", c.c),
        "max_features": trial.suggest_int(
            "max_features", int(c.max_features.low), int(c.max_features.high), log=c.max_features.log
        ),
    }


def pareto(points: dict[int, tuple[float, ...]]) -> set[int]:
    """The keys of `points` (objective values in OBJECTIVES order) no other point
    dominates: at least as good in every objective and better in one."""
    signs = [1 if d == "maximize" else -1 for d in DIRECTIONS]
    scored = {k: [s * v for s, v in zip(signs, values)] for k, values in points.items()}

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return {k for k, a in scored.items() if not any(dominates(b, a) for j, b in scored.items() if j != k)}
