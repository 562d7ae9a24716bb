"""Which family selection picks on BBC when labels are scarce: at 100 %, 10 % and 5 % of
the train split's labels, each family's val and test macro-F1 with 95 % bootstrap
intervals, and the family chosen on val.

Reads what `make run` left: the split and the pretrained encoder (models/encoder). The
transformer family is its teacher, finetuned here from that encoder on the labelled share
(the student and pruning follow it within about a point on BBC); the classical family is
the grid of params.yaml fitted on the same share. Both are chosen and compared on the
same val and test texts.

    .venv/bin/python benchmarks/selection.py [--fractions 1.0 0.1 0.05]
"""

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from components.classical.model import count_parameters, select
from components.deploy.selection import Measured, choose
from components.stats import bootstrap
from components.text.classifier import MeanPoolClassifier
from components.text.data import ClassificationData, label_map, stratified_fraction
from components.text.model import count_parameters as torch_parameters
from components.text.modules import Classifier
from components.text.training import best_state, build_trainer
from pipelines.core.console import capture, log_path
from pipelines.core.params import Params, load

ROOT = Path(__file__).resolve().parents[1]


def transformer(split: dict[str, pd.DataFrame], labels: dict[str, int], params, epochs: int):
    """(val predictions, test predictions, parameters) of a teacher finetuned from the encoder."""
    from transformers import BertForMaskedLM, PreTrainedTokenizerFast

    folder = ROOT / params.paths.encoder
    encoder = BertForMaskedLM.from_pretrained(folder)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    L.seed_everything(params.hardware.seed, workers=True, verbose=False)
    config = encoder.config.__class__.from_dict(
        {
            **encoder.config.to_dict(),
            "num_labels": len(labels),
            "id2label": {i: label for label, i in labels.items()},
            "label2id": labels,
        }
    )
    model = MeanPoolClassifier(config)
    model.bert.load_state_dict(encoder.bert.state_dict())
    # finetune's loop for `epochs` epochs of 32, with no more for small data and no checkpoints.
    update = {"max_epochs": epochs, "min_steps": 0, "batch_size": 32, "log_every": 50, "checkpoint_every": 10**6}
    loop = params.finetune.loop.model_copy(update=update)
    data = ClassificationData(split, labels, tokenizer, config.max_position_embeddings, 32, params.hardware.seed)
    module = Classifier(model, params.finetune.optim, {}, len(labels))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(
            "finetune",
            params.hardware.model_copy(update={"accelerator": "cpu", "devices": 1}),
            loop,
            Path(tmp),
            [],
            monitor="val/macro_f1",
            patience=params.finetune.patience,
            progress=lambda _: None,
        )
        trainer.fit(module, datamodule=data)
        module.load_state_dict(best_state(trainer))
    model.eval()
    predictions = []
    with torch.inference_mode():
        for name in ("val", "test"):
            out = [
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1)
                for b in data.loader(name)
            ]
            predictions.append(np.concatenate([o.numpy() for o in out]).tolist())
    return predictions[0], predictions[1], torch_parameters(model)


def interval(truth: list[int], predicted: list[int]) -> str:
    f1 = bootstrap(truth, predicted, 1000, 0)["macro_f1"]
    return f"{f1.estimate:.4f} [{f1.low:.4f}, {f1.high:.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1, 0.05])
    args = parser.parse_args()
    params = load(ROOT / "params.yaml")
    # Library warnings and training bars go to the log file; the table to the terminal.
    with capture(log_path(ROOT, "benchmark-selection")) as console:
        compare(params, args.fractions, console.line)


def compare(params: Params, fractions: list[float], show: Callable[[str], None]) -> None:
    full = {name: pd.read_parquet(ROOT / params.paths.split / f"{name}.parquet") for name in ("train", "val", "test")}
    labels = label_map(full["train"]["label"])
    truth = {name: [labels[v] for v in full[name]["label"]] for name in ("val", "test")}
    show(f"{'labels':>7} {'train':>6} {'family':<12} {'val macro-F1 [95 %]':<27} {'test macro-F1 [95 %]':<27}")
    for fraction in fractions:
        train = stratified_fraction(full["train"], fraction, params.hardware.seed)
        # A tenth of the labels needs the longer finetuning of the low-label profile.
        epochs = params.finetune.loop.max_epochs if fraction >= 1 else 10
        split = {**full, "train": train}
        t_val, t_test, t_params = transformer(split, labels, params, epochs)
        chosen = select(
            train["text"].tolist(),
            train["label"].tolist(),
            full["val"]["text"].tolist(),
            full["val"]["label"].tolist(),
            params.classical,
            params.hardware.seed,
        )
        ids = {label: labels[label] for label in chosen.labels}
        c_val = [ids[chosen.labels[i]] for i in chosen.pipeline.predict(full["val"]["text"].tolist())]
        c_test = [ids[chosen.labels[i]] for i in chosen.pipeline.predict(full["test"]["text"].tolist())]
        # Size stands in for the budgets here: parameters as 4-byte floats.
        measured = {
            "transformer": Measured("transformer", t_val, 0.0, 4 * t_params / 1e6),
            "classical": Measured("classical", c_val, 0.0, 4 * count_parameters(chosen.pipeline) / 1e6),
        }
        picked = choose(truth["val"], measured, "any", 1e9, 1e9, 1000, 0)
        for family, (val, test) in (("transformer", (t_val, t_test)), ("classical", (c_val, c_test))):
            mark = "  <- selected" if picked.selected == family else ""
            show(
                f"{fraction:>7.0%} {len(train):>6} {family:<12} {interval(truth['val'], val):<27} "
                f"{interval(truth['test'], test):<27}{mark}"
            )
        show(f"{'':>15}{picked.reason}")


if __name__ == "__main__":
    main()
