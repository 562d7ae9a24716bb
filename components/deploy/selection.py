"""Which candidate to ship, chosen on val, never on test.

Every candidate (each family's servable files) is scored on the val split. Among those
within the latency and size budgets, the best val macro-F1 leads; a candidate whose val
macro-F1 is not significantly below the leader's (the paired 95 % interval of the
difference holds 0) is tied with it, and of the tied ones the smallest file wins, then
the fastest: on val splits of a few hundred texts, a point of macro-F1 is noise, and a
smaller, faster model is not. A candidate that learned nothing (no better on val than the
majority-class predictor, beyond the paired 95 % interval) is no candidate at all.
"""

from dataclasses import dataclass
from typing import Literal

from components.errors import KilnError
from components.stats import Interval, against_majority, bootstrap, paired

Family = Literal["transformer", "classical"]


@dataclass(frozen=True)
class Measured:
    family: Family
    predicted: list[int]  # on val
    latency_ms_p95_b1: float
    size_mb: float


@dataclass(frozen=True)
class Ranked:
    family: Family
    macro_f1: Interval
    accuracy: Interval
    latency_ms_p95_b1: float
    size_mb: float
    within_budgets: bool
    tied_with_best: bool


@dataclass(frozen=True)
class Choice:
    selected: str
    reason: str
    candidates: dict[str, Ranked]


def learned(
    truth: list[int],
    measured: dict[str, Measured],
    labels: list[str],
    majority: str,
    family: Literal["any", "transformer", "classical"],
    resamples: int,
    seed: int,
) -> tuple[dict[str, Measured], dict[str, str]]:
    """The candidates that learned something (`stats.against_majority`: beat always
    `majority`, the commonest train label, on val), and why each other one is left out.
    Raises when none is left, or none of the pinned `family`: nothing is to be shipped."""
    names = [labels[t] for t in truth]
    found = {
        name: against_majority(names, [labels[p] for p in m.predicted], majority, resamples, seed)
        for name, m in measured.items()
    }
    kept = {name: m for name, m in measured.items() if found[name].learned}
    excluded = {name: f"learned nothing: {found[name].reason}" for name in measured if name not in kept}
    if not any(family in ("any", m.family) for m in kept.values()):
        whose = "candidate" if family == "any" else f"{family} candidate (select.family pins that family)"
        scores = ", ".join(
            f"{name} {f.model:.3f}" for name, f in found.items() if family in ("any", measured[name].family)
        )
        raise KilnError(
            f"select: no {whose} learned anything: none beats always '{majority}' on val (macro-F1 "
            f"{next(iter(found.values())).majority:.3f}) beyond the noise of {len(truth)} texts ({scores}); "
            "nothing is shipped"
        )
    return kept, excluded


def choose(
    truth: list[int],
    measured: dict[str, Measured],
    family: Literal["any", "transformer", "classical"],
    max_latency_ms: float,
    max_size_mb: float,
    resamples: int,
    seed: int,
) -> Choice:
    scores = {name: bootstrap(truth, m.predicted, resamples, seed) for name, m in measured.items()}
    pool = [name for name, m in measured.items() if family in ("any", m.family)]
    if not pool:
        raise ValueError(f"no candidate of family {family}")
    fits = {
        name: measured[name].latency_ms_p95_b1 <= max_latency_ms and measured[name].size_mb <= max_size_mb
        for name in measured
    }
    eligible = [name for name in pool if fits[name]] or pool
    best = max(eligible, key=lambda n: (scores[n]["macro_f1"].estimate, -measured[n].size_mb))
    tied = {
        name
        for name in eligible
        if name == best
        or paired(
            truth, measured[best].predicted, measured[name].predicted, resamples, seed
        ).macro_f1_difference.contains(0)
    }
    chosen = min(tied, key=lambda n: (measured[n].size_mb, measured[n].latency_ms_p95_b1, n))
    f1 = scores[chosen]["macro_f1"]
    reason = f"{chosen} ({measured[chosen].family}): val macro-F1 {f1.estimate:.4f} [{f1.low:.4f}, {f1.high:.4f}]; "
    if chosen == best:
        reason += "the best on val"
    else:
        lead = scores[best]["macro_f1"]
        reason += (
            f"tied with the best, {best} ({lead.estimate:.4f}), within the paired 95 % interval, and smaller "
            f"({measured[chosen].size_mb:.2f} MB against {measured[best].size_mb:.2f} MB)"
        )
    if not any(fits[name] for name in pool):
        reason += f"; no {family if family != 'any' else ''} candidate is within the latency and size budgets"
    elif family != "any":
        reason += f"; select.family pins the {family} family"
    ranked = {
        name: Ranked(
            m.family,
            scores[name]["macro_f1"],
            scores[name]["accuracy"],
            m.latency_ms_p95_b1,
            m.size_mb,
            fits[name],
            name in tied,
        )
        for name, m in measured.items()
    }
    return Choice(chosen, reason, ranked)
