"""The labelling queue: which logged texts a team's labelling hour teaches the model most,
and reading their labels back.

A queue holds the texts the champion is least sure of (lowest margin between its two
likeliest labels, or highest entropy), each once, none already in a split, spread over
the labels it predicts and over clusters of the texts (character n-grams, so a language
without spaces clusters as well): a hundred near-copies of one confusing text teach less
than one text from each confusing kind. Uncertainty comes first: the queue is drawn from
the most uncertain texts only, and no (label, cluster) group takes more than its share
until every group has had its chance. Labels come back as Kiln's CSV or Label Studio's
JSON export, and only for the ids an export handed out.
"""

import json
import math
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from components.data.schema import normalise
from components.errors import KilnError

# The queue is drawn from the most uncertain texts, this many times its size: wide
# enough to spread over kinds of text, narrow enough that each pick is one the model is
# unsure of (and a month of traffic costs k-means seconds, not an hour).
POOL_FACTOR = 3


def uncertainty(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(margin, normalised entropy, score) of each row of probabilities; the score, the
    larger of 1 - margin and the entropy, ranks the queue."""
    ordered = np.sort(probabilities, axis=1)[:, ::-1]
    margin = ordered[:, 0] - (ordered[:, 1] if probabilities.shape[1] > 1 else 0.0)
    p = np.clip(probabilities, 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=1) / math.log(max(probabilities.shape[1], 2))
    return margin, entropy, np.maximum(1 - margin, entropy)


def candidates(texts: pd.Series, known: Iterable[str]) -> pd.DataFrame:
    """The distinct texts of `texts` that are not in `known`, with how often each was asked."""
    seen = {normalise(text) for text in known}
    frame = pd.DataFrame({"text": texts.dropna().astype(str)})
    # The split's own sameness (Unicode form, case, spacing): a text the split holds in
    # another form would be labelled for nothing, as the dataset drops it.
    frame["key"] = frame["text"].map(normalise)
    frame = frame[~frame["key"].isin(seen) & (frame["key"] != "")]
    asked = frame.groupby("key", sort=False).size()
    distinct = frame.drop_duplicates("key").reset_index(drop=True)
    return distinct.assign(asked=distinct["key"].map(asked).astype(int))


def choose(
    pool: pd.DataFrame, probabilities: np.ndarray, labels: list[str], n: int, clusters: int, seed: int
) -> pd.DataFrame:
    """At most `n` rows of `pool` (distinct texts, from `candidates`), each with the
    champion's `probabilities` over `labels`: of the POOL_FACTOR * n most uncertain, the
    most uncertain first, while no (predicted label, cluster) group holds more than an
    equal share of the queue; what is left then goes by uncertainty alone."""
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    margin, entropy, score = uncertainty(probabilities)
    frame = pool.assign(
        guess=[labels[i] for i in probabilities.argmax(axis=1)],
        confidence=probabilities.max(axis=1),
        margin=margin,
        entropy=entropy,
        score=score,
    )
    frame = frame.sort_values("score", ascending=False, kind="stable").head(POOL_FACTOR * n)
    k = min(clusters, len(frame))
    if k > 1:
        features = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(
            frame["text"]
        )
        frame["cluster"] = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(features)
    else:
        frame["cluster"] = 0
    groups = list(zip(frame["guess"], frame["cluster"], strict=True))
    share = math.ceil(n / len(set(groups))) if groups else 0
    taken: dict = {}
    picked = []
    for index, group in zip(frame.index, groups, strict=True):
        if len(picked) < n and taken.get(group, 0) < share:
            taken[group] = taken.get(group, 0) + 1
            picked.append(index)
    rest = [index for index in frame.index if index not in set(picked)]
    picked += rest[: n - len(picked)]
    chosen = frame.loc[picked].sort_values("score", ascending=False, kind="stable")
    return chosen.drop(columns=["key", "score"], errors="ignore").reset_index(drop=True)


def label_studio_tasks(queue: pd.DataFrame, model_version: str) -> list[dict]:
    """Label Studio's task import format: the text to label, Kiln's id, and the champion's
    guess as a prediction (shown pre-selected)."""
    return [
        {
            "data": {"text": row.text, "kiln_id": row.id},
            "predictions": [
                {
                    "model_version": model_version,
                    "score": round(float(row.confidence), 4),
                    "result": [
                        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [row.guess]}}
                    ],
                }
            ],
        }
        for row in queue.itertuples()
    ]


def label_studio_config(labels: list[str]) -> str:
    """The labelling interface matching `label_studio_tasks`: one choice of the labels."""
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (
        '<View>\n  <Text name="text" value="$text"/>\n'
        f'  <Choices name="label" toName="text" choice="single" showInline="true">\n{choices}\n  </Choices>\n'
        "</View>\n"
    )


def read_labels(path: Path) -> pd.DataFrame:
    """`id`, `label` (empty where none was given) and `labelled_by` of each row of a
    labelled file: Kiln's queue.csv with its `label` column filled in, or Label Studio's
    JSON or JSON-MIN export of the tasks `label_studio_tasks` made."""
    try:
        if path.suffix.lower() == ".json":
            return _label_studio(json.loads(path.read_text(encoding="utf-8")), path)
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError:
        raise KilnError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as err:
        raise KilnError(f"{path}: cannot be read as a labelled queue ({err})") from None
    name = "id" if "id" in frame.columns else "kiln_id"
    if name not in frame.columns or "label" not in frame.columns:
        raise KilnError(f"{path}: needs an 'id' and a 'label' column, has {', '.join(frame.columns) or 'none'}")
    by = frame["labelled_by"] if "labelled_by" in frame.columns else ""
    return pd.DataFrame({"id": frame[name], "label": frame["label"].str.strip(), "labelled_by": by})


def _label_studio(tasks: object, path: Path) -> pd.DataFrame:
    if not isinstance(tasks, list):
        raise KilnError(f"{path}: expected Label Studio's export, a JSON list of tasks")
    rows = []
    for number, task in enumerate(tasks, 1):
        if not isinstance(task, dict):
            raise KilnError(f"{path}: task {number} is not a JSON object")
        data = task.get("data", task)
        kiln_id = data.get("kiln_id") if isinstance(data, dict) else None
        if kiln_id is None:
            raise KilnError(f"{path}: task {number} has no kiln_id (was it made by `kiln label export`?)")
        label, by = "", ""
        if "annotations" in task:  # JSON: the latest annotation that was not skipped
            done = [a for a in task["annotations"] or [] if not a.get("was_cancelled")]
            if done:
                choices = [r["value"]["choices"] for r in done[-1].get("result", []) if "choices" in r.get("value", {})]
                label = choices[0][0] if choices and choices[0] else ""
                who = done[-1].get("completed_by")
                by = str(who.get("email", who.get("id", ""))) if isinstance(who, dict) else str(who or "")
        else:  # JSON-MIN: the choice under its control's name
            value = task.get("label", "")
            label = value.get("choices", [""])[0] if isinstance(value, dict) else str(value or "")
            by = str(task.get("annotator", ""))
        rows.append({"id": str(kiln_id), "label": label.strip(), "labelled_by": by})
    return pd.DataFrame(rows, columns=["id", "label", "labelled_by"])


def check_labels(labelled: pd.DataFrame, exported: dict[str, str], known: set[str], path: Path) -> pd.DataFrame:
    """The labelled rows (id, label, labelled_by) of `labelled`, checked: every id one of
    `exported` (id to text) and given once, every label one of `known`. Rows left
    unlabelled are dropped; none labelled is an error."""
    unknown = sorted(set(labelled["id"]) - set(exported))
    if unknown:
        raise KilnError(
            f"{path}: {len(unknown)} id(s) this export did not hand out, e.g. {', '.join(unknown[:3])}; "
            f"label the export's own queue.csv or tasks.json"
        )
    repeated = sorted(labelled["id"][labelled["id"].duplicated()].unique())
    if repeated:
        raise KilnError(f"{path}: id(s) given more than once: {', '.join(repeated[:3])}")
    done = labelled[labelled["label"] != ""]
    if done.empty:
        raise KilnError(f"{path}: no row has a label")
    strange = sorted(set(done["label"]) - known)
    if strange:
        raise KilnError(
            f"{path}: unknown label(s) {', '.join(repr(s) for s in strange[:5])}; the model knows "
            f"{', '.join(sorted(known))}"
        )
    return done.reset_index(drop=True)
