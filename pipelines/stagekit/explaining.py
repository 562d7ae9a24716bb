"""Explanations the evaluate stage adds: the shipped model's word attributions on the
test texts (at most `explain.max_texts` of them; reports/explanations.html), its
calibration on val and test, and how faithful the attributions of each family are (AOPC
of top-k against random deletion).

Attributions come from the model the shipped file was made from: the PyTorch model an
ONNX file was exported from (Integrated Gradients on its embeddings), or the classical
model's stored weights (each term's weight times its value).
"""

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax

from components.errors import KilnError
from components.explain.attribution import Explanation
from components.explain.calibration import Calibration, calibrate
from components.explain.config import ExplainConfig
from components.explain.faithfulness import Faithfulness, aopc
from components.explain.loading import load_explainer
from components.explain.report import render, summarise
from components.stats import seeded_sample
from pipelines.core.io import atomic
from pipelines.core.records import Front, FrontMember, Selection
from pipelines.core.reports import Explained, FaithfulnessScores
from pipelines.stagekit.contract import StageContext

# The PyTorch model each transformer candidate was exported from, by its params path.
SOURCES = {"onnx_int8": "pruned", "onnx_fp32": "pruned", "onnx_teacher": "teacher"}
# Where each family's faithfulness is measured when the other family ships: the default
# transformer file, whose PyTorch source is the pruned student.
FAMILY_DEFAULT = {"transformer": "onnx_fp32", "classical": "classical"}


def source(ctx: StageContext, candidate: str) -> Path:
    """What explains `candidate`: a model folder, or the classical explainer.json (a
    model of the search's front says which it has)."""
    paths = ctx.params.paths
    if candidate == "classical":
        return ctx.input(f"{paths.classical}/explainer.json", "classical explainer")
    if candidate in SOURCES:
        return ctx.input(f"{getattr(paths, SOURCES[candidate])}/kiln.json", "model").parent
    return ctx.input(front_member(ctx, candidate).source, "explainer")


def front_member(ctx: StageContext, candidate: str) -> FrontMember:
    """A model of the search's Pareto front, by its candidate name."""
    front = Front.read(ctx.input(f"{ctx.params.paths.search}/front.json", "search front"), ctx.name, "search")
    if candidate not in front.members:
        raise KilnError(f"{ctx.name}: candidate {candidate} is not in the search's front; rerun the select stage")
    return front.members[candidate]


def explainer(ctx: StageContext, candidate: str, labels: list[str], cfg: ExplainConfig):
    return load_explainer(source(ctx, candidate), labels, cfg)


def run(
    ctx: StageContext,
    selection: Selection,
    labels: list[str],
    logits: dict[str, Callable],
    val: pd.DataFrame,
    test: pd.DataFrame,
) -> tuple[Explained, Path]:
    """The `explain` section of evaluation.json, and the written report's path."""
    cfg: ExplainConfig = ctx.params.explain
    shipped, family = selection.selected, selection.chosen.family
    texts, truth = test["text"].tolist(), test["label"].tolist()
    attributed = seeded_sample(range(len(texts)), cfg.max_texts, cfg.seed)
    shown, shown_truth = [texts[i] for i in attributed], [truth[i] for i in attributed]
    explained = explainer(ctx, shipped, labels, cfg).explain(shown)
    calibration = calibrate(
        logits[shipped](val["text"].tolist()),
        [labels.index(v) for v in val["label"]],
        logits[shipped](texts),
        [labels.index(v) for v in truth],
        cfg.ece_bins,
    )
    faithfulness = _faithfulness(ctx, selection, labels, logits, explained, shown[: cfg.aopc_texts])
    sample = (
        f"{len(shown)} test texts"
        if len(shown) == len(texts)
        else f"a sample of {len(shown)} of {len(texts)} test texts"
    )
    report = summarise(
        f"Explanations of {shipped} ({family}) on {sample}",
        labels,
        explained,
        shown_truth,
        calibration,
        faithfulness[family],
        cfg.top_words,
        cfg.max_misclassified,
        cfg.confusions,
    )
    path = ctx.path(ctx.params.paths.reports) / "explanations.html"
    with atomic(path) as tmp:
        tmp.write_text(render(report, _provenance(ctx, selection)), encoding="utf-8")
    return _section(selection, explained, calibration, faithfulness), path


def _provenance(ctx: StageContext, selection: Selection) -> list[tuple[str, str]]:
    """What heads the report: the model, the code and data that made it, and when. The
    registry version does not exist yet: register, the next stage, makes it."""
    commit, dirty = ctx.git
    return [
        ("model", f"{selection.selected} ({selection.chosen.family}), {selection.chosen.file}"),
        ("registry version", "the next one `register` makes (reports/register.json, `kiln lineage`)"),
        ("git", commit[:12] + (" with uncommitted changes" if dirty else "")),
        ("written", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
    ]


def _faithfulness(
    ctx: StageContext,
    selection: Selection,
    labels: list[str],
    logits: dict[str, Callable],
    explained: list[Explanation],
    texts: list[str],
) -> dict[str, Faithfulness]:
    """Each family's AOPC on `texts`, the first texts of `explained`: the shipped model's
    attributions for its own family, the family default's for the other."""
    cfg: ExplainConfig = ctx.params.explain
    faithfulness = {}
    for family, default in FAMILY_DEFAULT.items():
        candidate = selection.selected if selection.chosen.family == family else default
        subset = (
            explained[: len(texts)]
            if candidate == selection.selected
            else explainer(ctx, candidate, labels, cfg).explain(texts)
        )
        faithfulness[family] = aopc(
            subset,
            lambda batch, c=candidate: softmax(logits[c](batch), axis=-1),
            labels,
            cfg.aopc_k,
            cfg.random_draws,
            cfg.seed,
        )
    return faithfulness


def _section(
    selection: Selection, explained: list[Explanation], calibration: Calibration, faithfulness: dict[str, Faithfulness]
) -> Explained:
    mine = faithfulness[selection.chosen.family]
    return Explained(
        explained=selection.selected,
        aopc_top=mine.aopc_top,
        aopc_random=mine.aopc_random,
        families={
            family: FaithfulnessScores(
                aopc_top=f.aopc_top,
                aopc_random=f.aopc_random,
                k=f.k,
                top=f.top,
                random=f.random,
                difference_ci95=(f.difference.low, f.difference.high),
                texts=f.texts,
            )
            for family, f in faithfulness.items()
        },
        ece=calibration.test.ece,
        ece_scaled=calibration.test_scaled.ece,
        val_ece=calibration.val_ece,
        val_ece_scaled=calibration.val_ece_scaled,
        fitted_temperature=calibration.fitted_temperature,
        temperature=calibration.temperature,
        mean_abs_delta=float(np.mean([abs(e.delta) for e in explained])),
    )
