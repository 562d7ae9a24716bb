"""The search's trials as a figure: val macro-F1 against batch-1 latency, the file's size
as the marker's area, the Pareto front in colour."""

from pathlib import Path


def plot_front(trials: list[dict], out: Path, note: str = "") -> None:
    """`trials` as search.json lists them; `note` is shown when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    done = [t for t in trials if t["state"] == "COMPLETE"]
    if not done:
        ax.text(0.5, 0.5, note or "no trial completed", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    kinds = (
        ("trial", {"color": "0.7", "label": "trial"}),
        ("family", {"color": "C0", "label": "its family's front (a candidate)"}),
        ("front", {"color": "C3", "label": "Pareto front"}),
    )
    for kind, style in kinds:
        shown = [t for t in done if _kind(t) == kind]
        if not shown:
            continue
        front = kind != "trial"
        ax.scatter(
            [t["latency_ms_p50_b1"] for t in shown],
            [t["val_macro_f1"] for t in shown],
            # Area in points^2 grows with the file: 1 MB ~ a 10-point marker.
            s=[max(100 * t["size_mb"], 8) for t in shown],
            alpha=0.6,
            edgecolors="black" if front else "none",
            **style,
        )
        for t in shown:
            ax.annotate(
                f"{t['trial']} {t['family'][0]}",
                (t["latency_ms_p50_b1"], t["val_macro_f1"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
    if done:
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency at batch 1 (ms)")
        ax.set_ylabel("val macro-F1")
        ax.set_title("search trials (t: transformer, c: classical; area: size)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, markerscale=0.5)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _kind(trial: dict) -> str:
    return "front" if trial["front"] else "family" if trial.get("family_front") else "trial"
