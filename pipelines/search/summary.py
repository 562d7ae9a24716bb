"""What a finished search reports: its metrics and the lines of its summary, from the
study's trial records and the front's members kept as select's candidates."""

from pipelines.core.records import FrontMember


def lines(records: list[dict], members: dict[str, FrontMember], outcome: dict) -> list[str]:
    complete, failed = tally(records)
    summary = [
        f"{len(complete) + len(failed)} trials ({len(complete)} complete, {len(failed)} failed) in study "
        f"{outcome['study']}, {sum(r['front'] for r in records)} on the Pareto front, {len(members)} on their "
        f"family's (select's candidates); workers: {', '.join(sorted(workers_of(records)))}"
    ]
    if outcome["requeued"]:
        summary.append(f"resumed: trials {outcome['requeued']} were cut off by the kill and asked again")
    overall = {r["trial"] for r in records if r["front"]}
    for name, m in sorted(members.items(), key=lambda item: -item[1].val_macro_f1):
        where = "front" if m.trial in overall else "family front"
        summary.append(
            f"{where} {name} ({m.family}): val macro-F1 {m.val_macro_f1:.4f}, "
            f"p50 {m.latency_ms_p50_b1:.2f} ms, {m.size_mb:.2f} MB"
        )
    reasons: dict[str, list[int]] = {}
    for r in failed:
        reasons.setdefault(r["error"] or "no reason recorded", []).append(r["trial"])
    for reason, trials in reasons.items():
        which = f"trials {trials}" if len(trials) > 1 else f"trial {trials[0]}"
        summary.append(f"{which} failed: {reason}")
    return summary


def metrics(records: list[dict], members: dict[str, FrontMember], outcome: dict) -> dict[str, float]:
    complete, failed = tally(records)
    metrics = {
        "search/trials": len(complete) + len(failed),
        "search/complete": len(complete),
        "search/failed": len(failed),
        "search/front": sum(r["front"] for r in records),
        "search/candidates": len(members),
        "search/requeued": len(outcome["requeued"]),
    }
    best = max(complete, key=lambda r: r["val_macro_f1"], default=None)
    if best is not None:
        metrics["search/best_val_macro_f1"] = best["val_macro_f1"]
    return metrics


def tally(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(complete trials, failed ones): a trial a kill cut off is asked again, not failed."""
    return [r for r in records if r["state"] == "COMPLETE"], [
        r for r in records if r["state"] == "FAIL" and not r["interrupted"]
    ]


def workers_of(records: list[dict]) -> set[str]:
    return {r["worker"] for r in records if r.get("worker")}
